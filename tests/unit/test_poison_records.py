"""Whatever a record holds, each stage's handling of it either uses it or refuses it with a
BadMessageError (which the services park and count), never any other exception: arbitrary
bytes, and arbitrary field values (huge, negative, empty, NaN, Unicode) in valid protobuf."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soundsentry.alerting.engine import AlertEngine
from soundsentry.audio.pcm import validate_chunk
from soundsentry.contracts import (
    AudioChunk,
    Event,
    FeatureWindow,
    LabelScore,
    WindowScores,
    decode,
    encode,
)
from soundsentry.exceptions import BadMessageError
from soundsentry.features.featurizer import FeatureProfile, Featurizer, window_from_proto
from soundsentry.models.model_set import ModelCard
from tests.model_fixtures import patterned_scores

RELAXED = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
U64 = st.integers(0, 2**64 - 1)
U32 = st.integers(0, 2**32 - 1)
I64 = st.integers(-(2**63), 2**63 - 1)
TEXT = st.text(max_size=40)
TIMESTAMP = st.fixed_dictionaries(
    {"seconds": st.integers(-62135596800, 253402300799), "nanos": st.integers(0, 999_999_999)}
)


def _timestamp(message: object, field: str, value: dict[str, int]) -> None:
    stamp = getattr(message, field)
    stamp.seconds, stamp.nanos = value["seconds"], value["nanos"]


@st.composite
def chunks(draw: st.DrawFn) -> AudioChunk:
    chunk = AudioChunk(
        sensor_id=draw(TEXT),
        stream_id=draw(TEXT),
        sequence=draw(U64),
        start_sample=draw(U64),
        sample_rate_hz=draw(st.one_of(U32, st.sampled_from([8000, 16000, 44100, 48000]))),
        channels=draw(st.one_of(U32, st.integers(0, 3))),
        sample_format=draw(st.integers(0, 3)),
        pcm=draw(st.binary(max_size=4000)),
    )
    if draw(st.booleans()):
        _timestamp(chunk, "captured_at", draw(TIMESTAMP))
    return chunk


@RELAXED
@given(batch=st.lists(chunks(), min_size=1, max_size=4))
def test_the_featurizer_uses_or_rejects_any_chunk(batch: list[AudioChunk]) -> None:
    featurizer = Featurizer([FeatureProfile("full-16k")])
    result = featurizer.process(batch)  # nothing raised: bad chunks are in result.rejected
    rejected = {index for index, _ in result.rejected}
    for index, chunk in enumerate(batch):
        if index not in rejected:
            validate_chunk(chunk)  # what it took passes the rules ingest applies too
    for window in result.windows:
        window_from_proto(decode(FeatureWindow, encode(_proto(window))))


def _proto(window: object) -> FeatureWindow:
    from soundsentry.features.featurizer import window_to_proto  # noqa: PLC0415

    return window_to_proto(window)  # type: ignore[arg-type]


@RELAXED
@given(data=st.binary(max_size=300))
def test_any_bytes_decode_or_are_refused_on_every_topic(data: bytes) -> None:
    for message_type in (AudioChunk, FeatureWindow, WindowScores, Event):
        with contextlib.suppress(BadMessageError):
            decode(message_type, data)


@RELAXED
@given(
    sensor_id=TEXT,
    bands=U32,
    frames=U32,
    payload=st.binary(max_size=512),
    start=TIMESTAMP,
)
def test_a_window_of_any_fields_is_read_or_refused(
    sensor_id: str, bands: int, frames: int, payload: bytes, start: dict[str, int]
) -> None:
    window = FeatureWindow(
        sensor_id=sensor_id, num_bands=bands, num_frames=frames, log_mel_db=payload
    )
    _timestamp(window, "start_time", start)
    try:
        read = window_from_proto(decode(FeatureWindow, encode(window)))
    except BadMessageError:
        return
    assert read.log_mel_db.shape == (bands, frames)


@pytest.fixture(scope="module")
def scored(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModelCard, list[WindowScores]]:
    return patterned_scores(Path(tmp_path_factory.mktemp("models")))


@st.composite
def score_messages(draw: st.DrawFn) -> WindowScores:
    message = WindowScores(
        sensor_id=draw(TEXT),
        stream_id=draw(TEXT),
        start_sample=draw(U64),
        sample_rate_hz=draw(U32),
        scores=[
            LabelScore(label=label, score=score, frame_scores=frames)
            for label, score, frames in draw(
                st.lists(
                    st.tuples(
                        st.sampled_from(["siren", "dog_bark", "nope", ""]),
                        st.floats(width=32),
                        st.lists(st.floats(width=32), max_size=60),
                    ),
                    max_size=4,
                )
            )
        ],
    )
    _timestamp(message, "start_time", draw(TIMESTAMP))
    return message


@RELAXED
@given(poison=score_messages())
def test_the_alerter_uses_or_refuses_scores_of_any_fields(
    scored: tuple[ModelCard, list[WindowScores]], poison: WindowScores
) -> None:
    card, messages = scored
    engine = AlertEngine({card.name: card})
    store: dict[str, object] = {}
    # A real stream first, so the arbitrary message meets trackers with state.
    for message in messages[:6]:
        engine.process(message, store.get)  # type: ignore[arg-type]
    poison.model = card.name
    poison.sensor_id = poison.sensor_id or messages[0].sensor_id
    with contextlib.suppress(BadMessageError):
        engine.process(decode(WindowScores, encode(poison)), store.get)  # type: ignore[arg-type]
    # The sensor is still served: the stream's next windows are taken.
    engine.process(messages[6], store.get)  # type: ignore[arg-type]
