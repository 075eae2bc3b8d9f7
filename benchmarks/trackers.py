"""What a sensor the alerter has not seen costs: its event trackers, built from a parsed card.

Two figures, best of five runs over ``--sensors`` new sensors: every label's rule and tracker
built directly (``models.trackers``), and the whole first score message of a new sensor through
:class:`~soundsentry.alerting.engine.AlertEngine`. ``--untuned`` drops the card's
``event_rules``, so every label takes the threshold rule.

    .venv/bin/python benchmarks/trackers.py [--model models] [--sensors 2000] [--untuned]

Last line: one JSON object with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from pathlib import Path

from soundsentry.alerting.engine import AlertEngine
from soundsentry.contracts import WindowScores
from soundsentry.models.model_set import ModelCard, read_cards
from soundsentry.models.trackers import event_rule_for, new_event_tracker

ROOT = Path(__file__).resolve().parents[1]
RUNS = 5


def first_message(card: ModelCard, sensor: str) -> WindowScores:
    message = WindowScores(
        sensor_id=sensor,
        stream_id="t",
        model=card.name,
        model_version=card.version,
        start_sample=0,
        num_samples=16_000,
        sample_rate_hz=16_000,
        window_id=sensor,
    )
    for label in card.labels:
        message.scores.add(label=label, score=0.0)
    return message


def best_ms(per_sensor: Callable[[int], None], sensors: int) -> float:
    runs = []
    for _ in range(RUNS):
        start = time.perf_counter()
        for i in range(sensors):
            per_sensor(i)
        runs.append((time.perf_counter() - start) / sensors * 1e3)
    return min(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--model", type=Path, default=ROOT / "models", help="model directory")
    parser.add_argument("--sensors", type=int, default=2000)
    parser.add_argument("--untuned", action="store_true", help="drop the card's event rules")
    args = parser.parse_args(argv)

    cards = read_cards(args.model)
    card = next(iter(cards.values()))
    if args.untuned:
        document = json.loads((args.model / f"{card.name}.json").read_text())
        document["event_rules"] = {}
        card = ModelCard.model_validate(document)
        cards = {card.name: card}

    def trackers(i: int) -> None:
        for label in card.labels:
            new_event_tracker(card, event_rule_for(card, label), sensor_id=f"s{i}", stream_id="t")

    engine = AlertEngine(cards)
    messages = [first_message(card, f"s{i}") for i in range(args.sensors * RUNS)]
    sent = iter(messages)

    def through_engine(_: int) -> None:
        engine.process(next(sent), lambda _scores: None)

    summary = {
        "benchmark": "trackers",
        "model": f"{card.name} {card.version}",
        "labels": len(card.labels),
        "event_rules": "threshold" if args.untuned else "tuned",
        "trackers_ms_per_new_sensor": round(best_ms(trackers, args.sensors), 4),
        "engine_first_message_ms": round(best_ms(through_engine, args.sensors), 4),
    }
    print(
        f"{summary['labels']} labels, {summary['event_rules']} rules: "
        f"{summary['trackers_ms_per_new_sensor']:.3f} ms to build a new sensor's trackers, "
        f"{summary['engine_first_message_ms']:.3f} ms for its first message through AlertEngine"
    )
    print(json.dumps(summary, separators=(",", ":")))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
