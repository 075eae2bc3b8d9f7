from __future__ import annotations

import numpy as np
import pytest

from soundsentry.audio.mel import MelFrontEnd, MelSpec
from soundsentry.exceptions import ConfigurationError
from soundsentry.training.alarms import (
    F0_RANGE_HZ,
    PATTERNS,
    room_impulse_response,
    synthesize_alarm,
    varied_pattern,
)

RATE = 16_000


def _dry(label: str, **kwargs: float) -> object:
    return synthesize_alarm(
        label,
        duration_s=kwargs.pop("duration_s", 12.0),
        rng=np.random.default_rng(1),
        timing_jitter=0.0,
        rt60_s=0.0,
        **kwargs,
    )


def test_smoke_alarm_follows_the_t3_pattern() -> None:
    signal = _dry("smoke_alarm", fundamental_hz=3100.0, level_dbfs=-12.0)
    seconds = [(a / RATE, b / RATE) for a, b in signal.tones]
    # Three 0.5 s tones 0.5 s apart, then 1.5 s of silence: a 4 s cycle.
    assert seconds[:4] == [(0.0, 0.5), (1.0, 1.5), (2.0, 2.5), (4.0, 4.5)]
    assert [(a / RATE, b / RATE) for a, b in signal.cycles] == [(0.0, 2.5), (4.0, 6.5), (8.0, 10.5)]
    audio = signal.audio
    assert np.max(np.abs(audio[signal.tones[0][0] : signal.tones[0][1]])) == pytest.approx(
        10 ** (-12 / 20), rel=1e-3
    )
    assert not np.any(audio[int(0.5 * RATE) + 1 : int(1.0 * RATE)])  # silent between tones


def test_co_alarm_follows_the_t4_pattern() -> None:
    signal = _dry("co_alarm", duration_s=12.0, start_s=1.0)
    starts = [a / RATE for a, _ in signal.tones]
    assert starts[:5] == pytest.approx([1.0, 1.2, 1.4, 1.6, 6.7])
    assert all((b - a) / RATE == pytest.approx(0.1) for a, b in signal.tones)
    assert len(signal.cycles) == 2
    assert not np.any(signal.audio[: RATE - 1])  # nothing before start_s
    assert PATTERNS["co_alarm"].cycle_s == pytest.approx(5.7)


def test_fundamental_is_in_the_piezo_range_and_dominates_the_spectrum() -> None:
    for seed in range(8):
        signal = synthesize_alarm(
            "smoke_alarm", duration_s=3.0, rng=np.random.default_rng(seed), rt60_s=0.0
        )
        assert F0_RANGE_HZ[0] <= signal.fundamental_hz <= F0_RANGE_HZ[1]
        a, b = signal.tones[0]
        spectrum = np.abs(np.fft.rfft(signal.audio[a:b]))
        peak_hz = np.argmax(spectrum) * RATE / (b - a)
        assert abs(peak_hz - signal.fundamental_hz) < 5.0


def test_timing_jitter_varies_tones_within_bounds() -> None:
    signal = synthesize_alarm(
        "smoke_alarm", duration_s=30.0, rng=np.random.default_rng(3), timing_jitter=0.05
    )
    lengths = np.array([(b - a) / RATE for a, b in signal.tones])
    assert lengths.min() >= 0.5 * 0.95 - 1e-3
    assert lengths.max() <= 0.5 * 1.05 + 1e-3
    assert lengths.std() > 0.005


def test_reverberation_fills_the_gaps_and_decays() -> None:
    signal = synthesize_alarm(
        "smoke_alarm",
        duration_s=4.0,
        rng=np.random.default_rng(5),
        timing_jitter=0.0,
        rt60_s=0.6,
        level_dbfs=-6.0,
    )
    gap_early = signal.audio[int(0.52 * RATE) : int(0.6 * RATE)]
    gap_late = signal.audio[int(0.9 * RATE) : int(1.0 * RATE)]
    assert np.sqrt(np.mean(gap_early**2)) > 1e-4
    assert np.sqrt(np.mean(gap_late**2)) < np.sqrt(np.mean(gap_early**2)) / 10


def test_room_response_has_unit_energy_and_a_direct_path() -> None:
    response = room_impulse_response(rt60_s=0.5, sample_rate_hz=RATE, rng=np.random.default_rng(0))
    assert np.sum(response.astype(np.float64) ** 2) == pytest.approx(1.0, rel=1e-5)
    assert np.argmax(np.abs(response)) == 0


def test_the_same_seed_gives_the_same_signal() -> None:
    a = synthesize_alarm("co_alarm", duration_s=6.0, rng=np.random.default_rng(11))
    b = synthesize_alarm("co_alarm", duration_s=6.0, rng=np.random.default_rng(11))
    c = synthesize_alarm("co_alarm", duration_s=6.0, rng=np.random.default_rng(12))
    np.testing.assert_array_equal(a.audio, b.audio)
    assert a.tones == b.tones
    assert not np.array_equal(a.audio, c.audio)


def test_the_alarm_band_lights_up_in_the_log_mel_frames() -> None:
    signal = _dry("smoke_alarm", duration_s=4.0, fundamental_hz=3200.0, level_dbfs=-20.0)
    spec = MelSpec()
    log_mel = MelFrontEnd(spec).log_mel(signal.audio)
    band = spec.band_slice(2800.0, 3600.0)
    frame_times = (np.arange(log_mel.shape[1]) * spec.hop_length + spec.n_fft / 2) / RATE
    energy = log_mel[band].max(axis=0)
    during = energy[(frame_times > 0.1) & (frame_times < 0.4)]
    between = energy[(frame_times > 0.6) & (frame_times < 0.9)]
    assert during.min() > between.max() + 40.0


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"label": "doorbell"}, "unknown alarm"),
        ({"label": "co_alarm", "start_s": 20.0}, "start_s"),
        ({"label": "co_alarm", "fundamental_hz": 9000.0}, "Nyquist"),
        ({"label": "co_alarm", "timing_jitter": 0.7}, "timing_jitter"),
    ],
)
def test_impossible_alarms_are_refused(kwargs: dict[str, object], words: str) -> None:
    label = str(kwargs.pop("label"))
    with pytest.raises(ConfigurationError, match=words):
        synthesize_alarm(label, duration_s=10.0, rng=np.random.default_rng(0), **kwargs)  # type: ignore[arg-type]


def test_real_alarms_piezo_range_is_covered() -> None:
    # Recorded smoke alarms sound from about 2.5 kHz (T3 standard devices start at 2.8 kHz).
    assert F0_RANGE_HZ == (2500.0, 3600.0)


def test_varied_patterns_keep_the_tone_lengths_that_tell_smoke_from_co() -> None:
    rng = np.random.default_rng(0)
    smoke = [varied_pattern("smoke_alarm", rng) for _ in range(200)]
    co = [varied_pattern("co_alarm", rng) for _ in range(200)]
    assert min(p.tone_s for p in smoke) >= 0.25 > max(p.tone_s for p in co)
    assert {p.tones for p in smoke} == {1, 2, 3, 4}
    assert {p.tones for p in co} == {3, 4, 5}
    assert all(p.label == "smoke_alarm" for p in smoke)
    assert len({round(p.pause_s, 3) for p in smoke}) > 100  # drawn, not a few fixed values


def test_a_burst_stops_after_max_cycles() -> None:
    pattern = varied_pattern("smoke_alarm", np.random.default_rng(3))
    signal = synthesize_alarm(
        "smoke_alarm",
        duration_s=20.0,
        rng=np.random.default_rng(1),
        rt60_s=0.0,
        pattern=pattern,
        max_cycles=1,
    )
    assert len(signal.cycles) == 1
    assert len(signal.tones) == pattern.tones
    end = signal.cycles[0][1]
    assert not np.any(signal.audio[end + 1 :])  # silent after the burst


def test_a_pattern_of_another_alarm_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="pattern"):
        synthesize_alarm(
            "smoke_alarm",
            duration_s=3.0,
            rng=np.random.default_rng(0),
            pattern=PATTERNS["co_alarm"],
        )
    with pytest.raises(ConfigurationError, match="max_cycles"):
        synthesize_alarm("co_alarm", duration_s=3.0, rng=np.random.default_rng(0), max_cycles=0)
