"""benchmarks/detection.py: where the false alarms come from, the random microphones."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from soundsentry.evaluation.sed_metrics import EvalEvent

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from detection import device_response, false_alarm_sources


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


def test_a_device_response_filters_and_stays_within_full_scale() -> None:
    rate = 16_000
    t = np.arange(rate * 2) / rate
    tones = {hz: np.sin(2 * np.pi * hz * t) for hz in (50.0, 1000.0, 7900.0)}
    audio = (0.3 * sum(tones.values())).astype(np.float32)
    heard = device_response(audio, rate, np.random.default_rng(1))
    assert heard.shape == audio.shape
    assert heard.dtype == np.float32
    assert np.abs(heard).max() <= 1.0

    def level(signal: np.ndarray, hz: float) -> float:
        return float(abs(np.dot(signal, tones[hz])))

    # The band edges go down against the middle, whatever the draw (tilt at most 4 dB/octave).
    for seed in range(20):
        heard = device_response(audio, rate, np.random.default_rng(seed))
        middle = level(heard, 1000.0) / level(audio, 1000.0)
        assert level(heard, 50.0) / level(audio, 50.0) < 0.5 * middle
        assert level(heard, 7900.0) / level(audio, 7900.0) < middle * 10 ** (4 * 3 / 20)
    same = device_response(audio, rate, np.random.default_rng(3))
    assert np.array_equal(same, device_response(audio, rate, np.random.default_rng(3)))
    loud = np.clip(audio * 3, -1, 1).astype(np.float32)
    assert np.abs(device_response(loud, rate, np.random.default_rng(0))).max() <= 1.0
