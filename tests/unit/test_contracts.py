from __future__ import annotations

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from soundsentry.contracts import (
    AudioChunk,
    Event,
    EventKind,
    FeatureWindow,
    LabelScore,
    SampleFormat,
    WindowScores,
    decode,
    encode,
    sensor_key,
)
from soundsentry.exceptions import BadMessageError, ContractError
from soundsentry.runtime.faust_topics import ProtobufCodec
from soundsentry.runtime.topics import ALL_TOPICS, AUDIO, EVENTS


def _chunk() -> AudioChunk:
    return AudioChunk(
        sensor_id="site-1/mic-2",
        stream_id="boot-7f3a",
        sequence=41,
        start_sample=41 * 1600,
        sample_rate_hz=16_000,
        channels=1,
        sample_format=SampleFormat.SAMPLE_FORMAT_S16LE,
        captured_at=Timestamp(seconds=1_790_000_000, nanos=250_000_000),
        pcm=b"\x01\x00\xff\x7f" * 800,
    )


def test_every_message_survives_a_round_trip_through_its_wire_bytes() -> None:
    messages = [
        _chunk(),
        FeatureWindow(
            window_id="w1",
            sensor_id="s",
            profile="alarm-2k-4k",
            start_sample=8000,
            num_samples=16000,
            num_bands=2,
            num_frames=3,
            log_mel_db=b"\x00" * 24,
            rms_dbfs=-31.5,
        ),
        WindowScores(
            score_id="x",
            window_id="w1",
            sensor_id="s",
            model="default",
            scores=[LabelScore(label="smoke_alarm", score=0.75, frame_scores=[0.5, 1.0])],
        ),
        Event(
            event_id="e1",
            kind=EventKind.EVENT_KIND_ENDED,
            sensor_id="s",
            label="glass_break",
            onset_sample=16000,
            offset_sample=24000,
            peak_score=0.5,
        ),
    ]
    for message in messages:
        assert decode(type(message), encode(message)) == message


def test_each_topic_codec_round_trips_its_own_message_type() -> None:
    chunk = _chunk()
    codec = ProtobufCodec(message_type=AUDIO.message_type)
    assert codec.loads(codec.dumps(chunk)) == chunk
    assert {spec.message_type for spec in ALL_TOPICS} == {
        AudioChunk,
        FeatureWindow,
        WindowScores,
        Event,
    }


def test_codec_refuses_to_encode_a_message_of_another_topic() -> None:
    codec = ProtobufCodec(message_type=EVENTS.message_type)
    with pytest.raises(TypeError, match=r"expected soundsentry\.v1\.Event, got AudioChunk"):
        codec.dumps(_chunk())


def test_codec_needs_a_message_type() -> None:
    with pytest.raises(TypeError, match="message_type"):
        ProtobufCodec()


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (None, "empty_value"),
        (b"", "empty_value"),
        (b"\xff\xff\xff\xff\xff", "undecodable"),
        (b"\x0a\x10short", "undecodable"),  # a length prefix that runs past the end
    ],
)
def test_bad_bytes_raise_a_contract_error_that_names_the_problem(
    data: bytes | None, reason: str
) -> None:
    with pytest.raises(ContractError) as caught:
        decode(AudioChunk, data)
    assert caught.value.reason == reason
    assert "soundsentry.v1.AudioChunk" in str(caught.value)
    assert isinstance(caught.value, BadMessageError)


def test_codec_decoding_errors_are_contract_errors() -> None:
    with pytest.raises(ContractError, match=r"not a valid soundsentry\.v1\.AudioChunk"):
        ProtobufCodec(message_type=AudioChunk).loads(b"\xff\xff\xff")


def test_sensor_key_is_the_utf8_id_and_rejects_empty_or_huge_ids() -> None:
    assert sensor_key("hall/mic-ä") == "hall/mic-ä".encode()
    for bad in ["", "x" * 257]:
        with pytest.raises(ContractError) as caught:
            sensor_key(bad)
        assert caught.value.reason == "bad_sensor_id"


def _window(**fields: object) -> FeatureWindow:
    fields.setdefault("sensor_id", "site-1/mic-2")
    return FeatureWindow(stream_id="boot-1", **fields)  # type: ignore[arg-type]


def _scores(**fields: object) -> WindowScores:
    fields.setdefault("sensor_id", "site-1/mic-2")
    return WindowScores(stream_id="boot-1", **fields)  # type: ignore[arg-type]


def _event(**fields: object) -> Event:
    fields.setdefault("sensor_id", "site-1/mic-2")
    return Event(event_id="e1", **fields)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (FeatureWindow(stream_id="b", num_bands=1), "bad_sensor_id"),
        (_window(start_time=Timestamp(seconds=10**12)), "bad_time"),
        (WindowScores(stream_id="b", model="m"), "bad_sensor_id"),
        (_scores(start_time=Timestamp(seconds=10**12)), "bad_time"),
        (_scores(sensor_id="x" * 300), "bad_sensor_id"),
        (_event(onset_time=Timestamp(seconds=10**12)), "bad_time"),
        (_event(offset_time=Timestamp(seconds=1, nanos=-5)), "bad_time"),
    ],
)
def test_records_a_stage_could_not_use_are_refused_as_they_are_decoded(
    message: Message, reason: str
) -> None:
    # A record that would crash a later step (a time beyond int64 nanoseconds, a key-less
    # record) is a ContractError at decode time, which every stage parks.
    with pytest.raises(ContractError) as caught:
        decode(type(message), encode(message))
    assert caught.value.reason == reason


_TIMESTAMPS = st.builds(
    Timestamp,
    seconds=st.integers(-(2**40), 2**40),
    nanos=st.integers(-(10**9), 2 * 10**9),
)


@given(
    sensor_id=st.text(max_size=300),
    start=_TIMESTAMPS,
    onset=_TIMESTAMPS,
    score=st.floats(allow_nan=True, allow_infinity=True, width=32),
)
def test_decoded_scores_and_events_are_usable_or_refused(
    sensor_id: str, start: Timestamp, onset: Timestamp, score: float
) -> None:
    scores = WindowScores(
        sensor_id=sensor_id, start_time=start, scores=[LabelScore(label="x", score=score)]
    )
    event = Event(sensor_id=sensor_id, onset_time=onset, event_id="e")
    for message in (scores, event):
        try:
            decoded = decode(type(message), encode(message))
        except ContractError as error:
            reasons = {error.reason}
        else:
            reasons = set()
        if reasons:
            assert reasons <= {"bad_sensor_id", "bad_time"}
            continue
        key = sensor_key(decoded.sensor_id)
        assert 1 <= len(key) <= 256
        times = (
            [decoded.start_time]
            if isinstance(decoded, WindowScores)
            else [
                decoded.onset_time,
                decoded.offset_time,
            ]
        )
        for time in times:
            time.ToDatetime()  # would raise for a time no ISO text or datetime can hold
            assert 0 <= time.ToNanoseconds() < 2**63
