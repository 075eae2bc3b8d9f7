"""benchmarks/detection.py: where the false alarms come from."""

from __future__ import annotations

import sys
from pathlib import Path

from soundsentry.evaluation.sed_metrics import EvalEvent

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from detection import false_alarm_sources


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
