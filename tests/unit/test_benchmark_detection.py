"""benchmarks/detection.py: where the false alarms come from, the random microphones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from soundsentry.evaluation.sed_metrics import EvalEvent
from soundsentry.training.dataset import Example

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from detection import (
    DEVICE_HIGH_HZ,
    DEVICE_LOW_HZ,
    Device,
    _through_device,
    device_response,
    false_alarm_sources,
    main,
)


def test_false_alarms_are_traced_to_the_clips_of_their_files() -> None:
    sources = {
        "background-0000.flac": ["us8k/street_music.flac"],
        "background-0001.flac": ["blanket/city.flac", "us8k/street_music.flac"],
        "background-0002.flac": ["blanket/storm.flac"],
        "mix-siren-+0dB-00.flac": ["blanket/city.flac", "us8k/siren.flac"],
    }
    empty = {name for name in sources if name.startswith("background-")}
    system = [
        EvalEvent("background-0000.flac", "car_horn", 1.0, 1.5),
        EvalEvent("background-0000.flac", "car_horn", 5.0, 5.5),
        EvalEvent("background-0001.flac", "car_horn", 2.0, 2.5),
        EvalEvent("background-0002.flac", "car_horn", 2.0, 2.5),
        EvalEvent("background-0002.flac", "dog_bark", 2.0, 2.5),
        EvalEvent("mix-siren-+0dB-00.flac", "car_horn", 3.0, 3.5),  # not a target-free file
    ]
    where = false_alarm_sources(system, empty, sources, "car_horn")
    assert where == {
        "false_alarms": 4,
        "files": 3,
        "clips": 3,
        "top_clip": "us8k/street_music.flac",
        "top_clip_share": 0.75,
    }
    assert false_alarm_sources(system, empty, sources, "siren") == {
        "false_alarms": 0,
        "files": 0,
        "clips": 0,
        "top_clip": None,
        "top_clip_share": None,
    }


def test_a_device_passes_its_band_and_loses_its_edges() -> None:
    device = Device(low_hz=200.0, high_hz=5000.0, tilt_db_per_octave=2.0)
    gain = device.gain(np.array([0.0, 200.0, 1000.0, 5000.0, 50.0, 7900.0, 100.0]))
    assert gain[0] == 0.0  # no DC
    assert gain[2] == pytest.approx(1.0, abs=0.01)  # the middle, untilted
    tilt_low, tilt_high = 10 ** (2.0 * np.log2(0.2) / 20), 10 ** (2.0 * np.log2(5.0) / 20)
    assert gain[1] == pytest.approx(tilt_low / np.sqrt(2), rel=0.01)  # -3 dB at a corner
    assert gain[3] == pytest.approx(tilt_high / np.sqrt(2), rel=0.01)
    # Outside the band: 12 dB an octave of second-order roll-off, and the tilt held flat.
    assert gain[4] / gain[6] == pytest.approx(0.25, rel=0.05)
    assert gain[5] < tilt_high * (5000 / 7900) ** 2


def test_a_device_response_is_the_device_gain_at_every_frequency() -> None:
    rate, seconds = 16_000, 2
    t = np.arange(rate * seconds) / rate
    hertz = (50.0, 300.0, 1000.0, 3000.0, 7000.0)  # whole cycles in 2 s: exact FFT bins
    tones = {hz: np.sin(2 * np.pi * hz * t) for hz in hertz}
    audio = (0.1 * sum(tones.values())).astype(np.float32)
    for seed in range(5):
        device = Device.draw(np.random.default_rng(seed))
        assert DEVICE_LOW_HZ[0] <= device.low_hz <= DEVICE_LOW_HZ[1]
        assert DEVICE_HIGH_HZ[0] <= device.high_hz <= DEVICE_HIGH_HZ[1]
        heard = device_response(audio, sample_rate_hz=rate, device=device)
        assert heard.dtype == np.float32
        for hz, tone in tones.items():
            amplitude = float(np.dot(heard, tone)) / float(np.dot(tone, tone)) / 0.1
            assert amplitude == pytest.approx(float(device.gain(np.array([hz]))[0]), abs=1e-3)
    assert Device.draw(np.random.default_rng(3)) == Device.draw(np.random.default_rng(3))
    with pytest.raises(ValueError, match="sample_rate_hz"):
        device_response(audio, sample_rate_hz=0, device=device)


def test_a_mixture_through_a_device_keeps_its_parts_adding_up() -> None:
    rng = np.random.default_rng(0)
    background = (0.6 * rng.standard_normal(16_000)).clip(-1, 1).astype(np.float32)
    target = (0.6 * np.sin(np.arange(16_000) * 0.3)).astype(np.float32)
    example = Example(
        audio=background + target,
        sample_rate_hz=16_000,
        labels=frozenset({"siren"}),
        events=[],
        sources=[],
        background_audio=background,
        target_audio=target,
    )
    heard = _through_device(example, Device(150.0, 4000.0, -2.0))
    assert heard.background_audio is not None
    assert heard.target_audio is not None
    assert np.abs(heard.audio).max() <= 1.0 + 1e-6  # scaled down together to fit
    assert np.allclose(heard.audio, heard.background_audio + heard.target_audio, atol=1e-5)
    assert heard.labels == example.labels


def test_devices_figures_are_never_recorded_as_the_cards_own(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        main(["--record", "--devices"])
    assert "not with --devices" in capsys.readouterr().err
