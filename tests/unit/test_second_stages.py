"""The second-stage backends for real: Rekognition Custom Labels through moto's server (a real
HTTP endpoint speaking the AWS API) and through endpoints that fail or hang, and a larger ONNX
model."""

from __future__ import annotations

import base64
import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from soundsentry.audio.spectrogram_png import encode_png_gray, spectrogram_image
from soundsentry.escalation.escalator import (
    EscalationMetrics,
    Escalator,
    OnnxSecondStage,
    RekognitionSecondStage,
    SecondStageError,
)
from soundsentry.escalation.policy import (
    CircuitBreaker,
    EscalationPolicy,
    RateBudget,
    UncertaintyBand,
)
from soundsentry.exceptions import ConfigurationError
from soundsentry.features.featurizer import FeatureProfile, Featurizer, Window
from soundsentry.models.model_set import WindowScore, load_model
from tests.audio_fixtures import chunks, recording
from tests.aws_fixtures import PROJECT_VERSION_ARN, REGION, FailingEndpoint
from tests.model_fixtures import expected_scores, write_model

LABELS = ("smoke_alarm", "siren")
PROFILE = FeatureProfile("full-16k")
# moto's DetectCustomLabels answers every image with one label: "MyLogo", 77.77 % confidence.
MOTO_LABEL, MOTO_CONFIDENCE = "MyLogo", 77.7729721069336


@pytest.fixture(scope="module")
def windows() -> list[Window]:
    samples, rate = recording("siren")
    return Featurizer([PROFILE]).process(list(chunks(samples, rate, [1600]))).windows


@pytest.fixture
def failing() -> Iterator[FailingEndpoint]:
    endpoint = FailingEndpoint()
    yield endpoint
    endpoint.close()


def first_stage(window: Window, scores: list[float]) -> WindowScore:
    return WindowScore(
        window=window,
        model="first",
        model_version="1",
        scores=np.asarray(scores, dtype=np.float32),
        frame_scores=None,
    )


def rekognition(endpoint: str, **kwargs: Any) -> RekognitionSecondStage:
    return RekognitionSecondStage(
        project_version_arn=PROJECT_VERSION_ARN,
        endpoint_url=endpoint,
        region=REGION,
        **kwargs,
    )


async def test_rekognition_sends_the_training_rendering_and_maps_the_answer(
    moto_endpoint: str, windows: list[Window]
) -> None:
    backend = rekognition(moto_endpoint, min_confidence=40.0, label_map={MOTO_LABEL: "smoke_alarm"})
    sent: list[dict[str, Any]] = []
    backend._client.meta.events.register(
        "before-call.rekognition.DetectCustomLabels",
        lambda params, **_: sent.append(json.loads(params["body"])),
    )
    scores = await backend.classify(windows[0], LABELS)
    # The map names the labels this model knows: siren is not one of them.
    assert scores == {"smoke_alarm": pytest.approx(MOTO_CONFIDENCE / 100)}
    (request,) = sent
    assert request["ProjectVersionArn"] == PROJECT_VERSION_ARN
    assert request["MinConfidence"] == 40.0
    image = base64.b64decode(request["Image"]["Bytes"])
    assert image == encode_png_gray(spectrogram_image(windows[0].log_mel_db))
    assert image.startswith(b"\x89PNG\r\n\x1a\n")


async def test_rekognition_labels_it_knows_but_did_not_return_score_zero(
    moto_endpoint: str, windows: list[Window]
) -> None:
    # Without a map, our labels are its labels; moto's "MyLogo" is none of them.
    scores = await rekognition(moto_endpoint).classify(windows[0], LABELS)
    assert scores == {"smoke_alarm": 0.0, "siren": 0.0}


async def test_escalation_to_rekognition_revises_the_uncertain_label(
    moto_endpoint: str, windows: list[Window]
) -> None:
    offline = windows[0]
    first = first_stage(offline, [0.5, 0.9])
    registry = CollectorRegistry()
    escalator = Escalator(
        rekognition(moto_endpoint, label_map={MOTO_LABEL: "smoke_alarm"}),
        policy=EscalationPolicy({"smoke_alarm": UncertaintyBand(0.3, 0.7)}),
        budget=RateBudget(60, 60),
        breaker=CircuitBreaker(3, 30.0),
        merge="replace",
        metrics=EscalationMetrics.create(registry),
    )
    task = escalator.offer(first, LABELS)
    assert task is not None
    revision = await task
    assert revision is not None
    assert revision.escalated_to == "rekognition"
    np.testing.assert_allclose(revision.result.scores, [MOTO_CONFIDENCE / 100, 0.9], rtol=1e-6)
    calls = {"backend": "rekognition", "outcome": "ok"}
    assert registry.get_sample_value("soundsentry_escalation_calls_total", calls) == 1


async def test_rekognition_server_errors_are_retried_then_open_the_breaker(
    aws_credentials: None, failing: FailingEndpoint, windows: list[Window]
) -> None:
    backend = rekognition(failing.url)
    with pytest.raises(SecondStageError, match="InternalServerError") as raised:
        await backend.classify(windows[0], LABELS)
    assert raised.value.retryable
    assert failing.requests == 1  # botocore's own retries are off: the escalator retries

    breaker = CircuitBreaker(1, 60.0)
    escalator = Escalator(
        backend,
        policy=EscalationPolicy({"smoke_alarm": UncertaintyBand(0.3, 0.7)}),
        budget=RateBudget(60, 60),
        breaker=breaker,
        retries=2,
        backoff_base_s=0.01,
        backoff_cap_s=0.02,
        rng=random.Random(0),
    )
    task = escalator.offer(first_stage(windows[0], [0.5, 0.0]), LABELS)
    assert task is not None
    assert await task is None
    assert failing.requests == 1 + 3
    assert breaker.state == "open"
    assert escalator.offer(first_stage(windows[1], [0.5, 0.0]), LABELS) is None
    assert failing.requests == 4


async def test_rekognition_request_errors_are_not_retryable(
    aws_credentials: None, windows: list[Window]
) -> None:
    endpoint = FailingEndpoint(400, error="InvalidImageFormatException")
    try:
        with pytest.raises(SecondStageError, match="InvalidImageFormatException") as raised:
            await rekognition(endpoint.url).classify(windows[0], LABELS)
    finally:
        endpoint.close()
    assert not raised.value.retryable


async def test_a_hung_rekognition_call_times_out(
    aws_credentials: None, windows: list[Window]
) -> None:
    endpoint = FailingEndpoint(delay_s=2.0)
    registry = CollectorRegistry()
    escalator = Escalator(
        rekognition(endpoint.url, timeout_s=0.2),
        policy=EscalationPolicy({"smoke_alarm": UncertaintyBand(0.3, 0.7)}),
        budget=RateBudget(60, 60),
        breaker=CircuitBreaker(3, 30.0),
        timeout_s=0.2,
        retries=0,
        metrics=EscalationMetrics.create(registry),
    )
    try:
        task = escalator.offer(first_stage(windows[0], [0.5, 0.0]), LABELS)
        assert task is not None
        assert await task is None
    finally:
        endpoint.close()
    timeouts = {"backend": "rekognition", "outcome": "timeout"}
    assert registry.get_sample_value("soundsentry_escalation_calls_total", timeouts) == 1


@pytest.mark.parametrize(
    "arn",
    [
        "",
        "arn:aws:s3:::bucket",
        "arn:aws:rekognition:eu-west-1:123456789012:project/alarms/1764460800",
    ],
)
def test_rekognition_refuses_what_is_not_a_project_version_arn(arn: str) -> None:
    with pytest.raises(ConfigurationError, match="project version"):
        RekognitionSecondStage(project_version_arn=arn, client=object())


def test_rekognition_refuses_an_impossible_min_confidence() -> None:
    with pytest.raises(ConfigurationError, match="min_confidence"):
        RekognitionSecondStage(
            project_version_arn=PROJECT_VERSION_ARN, min_confidence=101, client=object()
        )


async def test_onnx_second_stage_scores_windows_of_its_profile(
    tmp_path: Path, windows: list[Window]
) -> None:
    weights, bias = write_model(tmp_path, "big", PROFILE, ["siren", "smoke_alarm"], seed=3)
    backend = OnnxSecondStage(load_model(tmp_path / "big.json"))
    assert backend.name == "onnx:big@0.0.1"
    window = windows[2]
    assert backend.supports(window)
    scores = await backend.classify(window, ["smoke_alarm"])
    expected = expected_scores(window.log_mel_db[None], weights, bias)[0]
    assert scores == {"smoke_alarm": pytest.approx(expected[1], abs=1e-5)}
    other = FeatureProfile("alarm-band", band_fmin_hz=2000.0, band_fmax_hz=4000.0)
    (banded, *_) = Featurizer([other]).process(list(chunks(*recording("siren"), [1600]))).windows
    assert not backend.supports(banded)
