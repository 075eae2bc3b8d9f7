"""soundsentry.evaluation.operating: recall against false alarms per hour as a threshold moves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from soundsentry.evaluation.operating import ScoreTrack, operating_points, plot_operating_points
from soundsentry.evaluation.sed_metrics import EvalEvent, EvaluationInputError
from soundsentry.events.tracker import EventRule

RATE, WINDOW, HOP = 16_000, 16_000, 8_000


def track(file_id: str, scores: list[float], label: str = "siren") -> ScoreTrack:
    return ScoreTrack(
        file_id=file_id,
        rule=EventRule(label, on_threshold=0.5, off_threshold=0.25),
        start_samples=np.arange(len(scores), dtype=np.int64) * HOP,
        scores=np.array(scores, dtype=np.float64),
        sample_rate_hz=RATE,
        window_samples=WINDOW,
        hop_samples=HOP,
    )


def test_recall_and_false_alarms_per_hour_at_each_threshold() -> None:
    # One siren scored 0.8 (found up to 0.8); a background file with one spike of 0.4 and one of
    # 0.6 (two false alarms at 0.3, one at 0.5, none at 0.7). Together 36 windows: 0.005 h.
    tracks = [
        track("event", [0.0, 0.8, 0.8, *[0.0] * 15]),
        track("background", [0.0, 0.4, 0.0, 0.0, 0.0, 0.6, *[0.0] * 12]),
    ]
    reference = [EvalEvent("event", "siren", 0.5, 2.0)]
    curves = operating_points(tracks, reference, hours=0.005, thresholds=(0.3, 0.5, 0.7, 0.9))
    points = curves["siren"]
    assert [p.on_threshold for p in points] == [0.3, 0.5, 0.7, 0.9]
    assert [p.recall for p in points] == [1.0, 1.0, 1.0, 0.0]
    assert [p.false_alarms for p in points] == [2, 1, 0, 0]
    assert points[0].false_alarms_per_hour == pytest.approx(400.0)
    assert points[2].precision == 1.0


def test_each_label_gets_its_own_curve() -> None:
    tracks = [track("a", [0.0, 0.9, 0.0], "siren"), track("a", [0.0, 0.9, 0.0], "dog_bark")]
    curves = operating_points(tracks, [], hours=1.0, thresholds=(0.5,))
    assert sorted(curves) == ["dog_bark", "siren"]
    assert curves["dog_bark"][0].false_alarms == 1


@pytest.mark.parametrize("hours", [0.0, -1.0, float("nan")])
def test_hours_must_be_positive(hours: float) -> None:
    with pytest.raises(EvaluationInputError, match="hours"):
        operating_points([track("a", [0.0])], [], hours=hours)


def test_the_curves_are_drawn_to_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    tracks = [track("event", [0.0, 0.8, 0.8, 0.0]), track("background", [0.0, 0.6, 0.0, 0.0])]
    curves = operating_points(tracks, [EvalEvent("event", "siren", 0.5, 2.0)], hours=0.01)
    path = plot_operating_points(curves, tmp_path / "curve.png", chosen={"siren": 0.5})
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
