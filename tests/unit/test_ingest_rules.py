from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from soundsentry.audio.pcm import ChunkLimits
from soundsentry.contracts import AudioChunk, SampleFormat
from soundsentry.exceptions import ConfigurationError
from soundsentry.ingest.rules import AudioRateLimiter, Code, SequenceTracker, TokenTable, admit


def _chunk(sensor: str = "site-1/mic-1", sequence: int = 0, **overrides: object) -> AudioChunk:
    fields: dict[str, object] = {
        "sensor_id": sensor,
        "stream_id": "boot-1",
        "sequence": sequence,
        "start_sample": sequence * 1600,
        "sample_rate_hz": 16_000,
        "channels": 1,
        "sample_format": SampleFormat.SAMPLE_FORMAT_S16LE,
        "pcm": b"\x01\x00" * 1600,
    }
    fields.update(overrides)
    return AudioChunk(**fields)  # type: ignore[arg-type]


TOKENS = TokenTable(
    {
        "site-1/*": "gateway-secret",
        "site-1/mic-9": "sha256:" + hashlib.sha256(b"mic9-secret").hexdigest(),
    }
)


def test_a_gateway_token_covers_its_pattern_and_an_exact_entry_wins() -> None:
    assert TOKENS.check("site-1/mic-1", "gateway-secret").ok
    assert TOKENS.check("site-1/mic-9", "mic9-secret").ok
    wrong = TOKENS.check("site-1/mic-9", "gateway-secret")
    assert (wrong.code, wrong.reason) == (Code.UNAUTHENTICATED, "bad_token")


def test_an_unknown_sensor_looks_like_a_bad_token_and_a_missing_token_is_named() -> None:
    # Different answers would let a caller enumerate the registered sensor ids.
    unknown = TOKENS.check("site-2/mic-1", "gateway-secret")
    wrong = TOKENS.check("site-1/mic-9", "gateway-secret")
    assert unknown == wrong
    assert (unknown.code, unknown.reason) == (Code.UNAUTHENTICATED, "bad_token")
    assert "site-2/mic-1" not in unknown.message
    missing = TOKENS.check("site-1/mic-1", None)
    assert (missing.code, missing.reason) == (Code.UNAUTHENTICATED, "missing_token")
    assert "Bearer" in missing.message


def test_token_file_is_read_and_bad_files_are_named(tmp_path: Path) -> None:
    good = tmp_path / "tokens.json"
    good.write_text(json.dumps({"mic-*": "t"}))
    assert len(TokenTable.from_file(good)) == 1
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigurationError, match="expected a JSON object"):
        TokenTable.from_file(bad)
    with pytest.raises(ConfigurationError, match="cannot read the token file"):
        TokenTable.from_file(tmp_path / "missing.json")
    with pytest.raises(ConfigurationError, match="64 hex"):
        TokenTable({"mic": "sha256:abcd"})


def test_repeats_are_refused_gaps_are_noticed_and_failures_forgotten() -> None:
    tracker = SequenceTracker()
    assert tracker.check(_chunk(sequence=0)).ok
    assert tracker.accepted(_chunk(sequence=0)) is False
    repeat = tracker.check(_chunk(sequence=0))
    assert (repeat.code, repeat.reason) == (Code.ALREADY_EXISTS, "stale_sequence")
    assert "next expected: 1" in repeat.message
    assert tracker.accepted(_chunk(sequence=5)) is True  # 1..4 were lost
    late = tracker.check(_chunk(sequence=3))
    assert late.reason == "stale_sequence"
    tracker.forget(_chunk(sequence=5))
    assert tracker.check(_chunk(sequence=5)).ok  # resend after a failed publish
    assert tracker.check(_chunk(sequence=0, stream_id="boot-2")).ok  # a new stream


def test_tracker_is_bounded() -> None:
    tracker = SequenceTracker(capacity=3)
    for n in range(5):
        tracker.accepted(_chunk(sensor=f"m{n}"))
    assert tracker.check(_chunk(sensor="m0")).ok  # forgotten: oldest
    assert not tracker.check(_chunk(sensor="m4")).ok


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"pcm": b"\x00" * 3}, "odd_byte_count"),
        ({"sample_rate_hz": 3}, "bad_sample_rate"),
        ({"pcm": b"\x00" * 1_000_000}, "oversized_chunk"),
        (
            {
                "sample_format": SampleFormat.SAMPLE_FORMAT_F32LE,
                "pcm": np.array([0.0, np.nan], "<f4").tobytes(),
            },
            "non_finite_samples",
        ),
        ({"sample_format": 0}, "bad_sample_format"),
    ],
)
def test_admit_rejects_bad_audio_before_anything_else(
    overrides: dict[str, object], reason: str
) -> None:
    verdict = admit(
        _chunk(**overrides),
        token="gateway-secret",
        tokens=TOKENS,
        tracker=SequenceTracker(),
        limits=ChunkLimits(),
    )
    assert (verdict.code, verdict.reason) == (Code.INVALID_ARGUMENT, reason)
    assert verdict.message


def test_admit_authenticates_before_it_looks_at_the_audio() -> None:
    bad_audio = _chunk(pcm=b"\x00" * 3)
    kwargs = {"tracker": SequenceTracker(), "limits": ChunkLimits()}
    assert admit(bad_audio, token=None, tokens=TOKENS, **kwargs).reason == "missing_token"  # type: ignore[arg-type]
    assert admit(bad_audio, token="nope", tokens=TOKENS, **kwargs).reason == "bad_token"  # type: ignore[arg-type]
    assert admit(bad_audio, token="gateway-secret", tokens=TOKENS, **kwargs).reason == (  # type: ignore[arg-type]
        "odd_byte_count"
    )


def test_admit_checks_the_token_then_the_sequence() -> None:
    tracker = SequenceTracker()
    kwargs = {"tokens": TOKENS, "tracker": tracker, "limits": ChunkLimits()}
    assert admit(_chunk(), token="nope", **kwargs).reason == "bad_token"  # type: ignore[arg-type]
    assert admit(_chunk(), token="gateway-secret", **kwargs).ok  # type: ignore[arg-type]
    tracker.accepted(_chunk())
    assert admit(_chunk(), token="gateway-secret", **kwargs).reason == "stale_sequence"  # type: ignore[arg-type]
    # Anonymous deployments skip authentication only.
    assert admit(
        _chunk(sequence=1), token=None, tokens=None, tracker=tracker, limits=ChunkLimits()
    ).ok


def test_a_stream_far_behind_its_position_starts_over_instead_of_being_stale() -> None:
    tracker = SequenceTracker()
    tracker.accepted(_chunk(sequence=10**18, start_sample=0))  # a broken counter
    repeat = _chunk(sequence=10**18 - 5, start_sample=0)
    assert tracker.check(repeat).reason == "stale_sequence"
    assert tracker.check(_chunk(sequence=7)).ok  # the sensor's own count again
    tracker.accepted(_chunk(sequence=7))
    assert tracker.check(_chunk(sequence=8)).ok
    assert tracker.check(_chunk(sequence=6)).reason == "stale_sequence"


def test_audio_beyond_the_rate_is_delayed_per_sensor_after_a_burst() -> None:
    now = [0.0]
    rate = AudioRateLimiter(factor=2.0, burst_s=10.0, clock=lambda: now[0])
    assert rate.delay("a", 10.0) == 0.0  # the burst
    assert rate.delay("a", 4.0) == pytest.approx(2.0)  # 4 s of audio at 2x real time
    assert rate.delay("b", 5.0) == 0.0  # every sensor has its own budget
    now[0] = 10.0  # 20 s of audio earned back, capped at the burst
    assert rate.delay("a", 10.0) == 0.0
    with pytest.raises(ConfigurationError):
        AudioRateLimiter(factor=0.0, burst_s=1.0, clock=lambda: 0.0)
