import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SampleFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SAMPLE_FORMAT_UNSPECIFIED: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_S16LE: _ClassVar[SampleFormat]
    SAMPLE_FORMAT_F32LE: _ClassVar[SampleFormat]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_STARTED: _ClassVar[EventKind]
    EVENT_KIND_ENDED: _ClassVar[EventKind]
SAMPLE_FORMAT_UNSPECIFIED: SampleFormat
SAMPLE_FORMAT_S16LE: SampleFormat
SAMPLE_FORMAT_F32LE: SampleFormat
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_STARTED: EventKind
EVENT_KIND_ENDED: EventKind

class AudioChunk(_message.Message):
    __slots__ = ("sensor_id", "stream_id", "sequence", "start_sample", "sample_rate_hz", "channels", "sample_format", "captured_at", "pcm")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_FORMAT_FIELD_NUMBER: _ClassVar[int]
    CAPTURED_AT_FIELD_NUMBER: _ClassVar[int]
    PCM_FIELD_NUMBER: _ClassVar[int]
    sensor_id: str
    stream_id: str
    sequence: int
    start_sample: int
    sample_rate_hz: int
    channels: int
    sample_format: SampleFormat
    captured_at: _timestamp_pb2.Timestamp
    pcm: bytes
    def __init__(self, sensor_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., sequence: _Optional[int] = ..., start_sample: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ..., sample_format: _Optional[_Union[SampleFormat, str]] = ..., captured_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pcm: _Optional[bytes] = ...) -> None: ...

class FeatureWindow(_message.Message):
    __slots__ = ("window_id", "sensor_id", "stream_id", "profile", "start_sample", "num_samples", "sample_rate_hz", "num_bands", "num_frames", "log_mel_db", "rms_dbfs", "start_time")
    WINDOW_ID_FIELD_NUMBER: _ClassVar[int]
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    NUM_BANDS_FIELD_NUMBER: _ClassVar[int]
    NUM_FRAMES_FIELD_NUMBER: _ClassVar[int]
    LOG_MEL_DB_FIELD_NUMBER: _ClassVar[int]
    RMS_DBFS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    window_id: str
    sensor_id: str
    stream_id: str
    profile: str
    start_sample: int
    num_samples: int
    sample_rate_hz: int
    num_bands: int
    num_frames: int
    log_mel_db: bytes
    rms_dbfs: float
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, window_id: _Optional[str] = ..., sensor_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., profile: _Optional[str] = ..., start_sample: _Optional[int] = ..., num_samples: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., num_bands: _Optional[int] = ..., num_frames: _Optional[int] = ..., log_mel_db: _Optional[bytes] = ..., rms_dbfs: _Optional[float] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LabelScore(_message.Message):
    __slots__ = ("label", "score", "frame_scores")
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    FRAME_SCORES_FIELD_NUMBER: _ClassVar[int]
    label: str
    score: float
    frame_scores: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, label: _Optional[str] = ..., score: _Optional[float] = ..., frame_scores: _Optional[_Iterable[float]] = ...) -> None: ...

class WindowScores(_message.Message):
    __slots__ = ("score_id", "window_id", "sensor_id", "stream_id", "model", "model_version", "profile", "start_sample", "num_samples", "sample_rate_hz", "start_time", "rms_dbfs", "gated", "scores", "escalated_to")
    SCORE_ID_FIELD_NUMBER: _ClassVar[int]
    WINDOW_ID_FIELD_NUMBER: _ClassVar[int]
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    START_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    RMS_DBFS_FIELD_NUMBER: _ClassVar[int]
    GATED_FIELD_NUMBER: _ClassVar[int]
    SCORES_FIELD_NUMBER: _ClassVar[int]
    ESCALATED_TO_FIELD_NUMBER: _ClassVar[int]
    score_id: str
    window_id: str
    sensor_id: str
    stream_id: str
    model: str
    model_version: str
    profile: str
    start_sample: int
    num_samples: int
    sample_rate_hz: int
    start_time: _timestamp_pb2.Timestamp
    rms_dbfs: float
    gated: bool
    scores: _containers.RepeatedCompositeFieldContainer[LabelScore]
    escalated_to: str
    def __init__(self, score_id: _Optional[str] = ..., window_id: _Optional[str] = ..., sensor_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ..., profile: _Optional[str] = ..., start_sample: _Optional[int] = ..., num_samples: _Optional[int] = ..., sample_rate_hz: _Optional[int] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., rms_dbfs: _Optional[float] = ..., gated: _Optional[bool] = ..., scores: _Optional[_Iterable[_Union[LabelScore, _Mapping]]] = ..., escalated_to: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("event_id", "kind", "sensor_id", "stream_id", "label", "sample_rate_hz", "onset_sample", "offset_sample", "onset_time", "offset_time", "peak_score", "model", "model_version")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    ONSET_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    OFFSET_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    ONSET_TIME_FIELD_NUMBER: _ClassVar[int]
    OFFSET_TIME_FIELD_NUMBER: _ClassVar[int]
    PEAK_SCORE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    kind: EventKind
    sensor_id: str
    stream_id: str
    label: str
    sample_rate_hz: int
    onset_sample: int
    offset_sample: int
    onset_time: _timestamp_pb2.Timestamp
    offset_time: _timestamp_pb2.Timestamp
    peak_score: float
    model: str
    model_version: str
    def __init__(self, event_id: _Optional[str] = ..., kind: _Optional[_Union[EventKind, str]] = ..., sensor_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., label: _Optional[str] = ..., sample_rate_hz: _Optional[int] = ..., onset_sample: _Optional[int] = ..., offset_sample: _Optional[int] = ..., onset_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., offset_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., peak_score: _Optional[float] = ..., model: _Optional[str] = ..., model_version: _Optional[str] = ...) -> None: ...

class ChunkAck(_message.Message):
    __slots__ = ("sensor_id", "stream_id", "sequence", "code", "reason", "message")
    SENSOR_ID_FIELD_NUMBER: _ClassVar[int]
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    sensor_id: str
    stream_id: str
    sequence: int
    code: int
    reason: str
    message: str
    def __init__(self, sensor_id: _Optional[str] = ..., stream_id: _Optional[str] = ..., sequence: _Optional[int] = ..., code: _Optional[int] = ..., reason: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...
