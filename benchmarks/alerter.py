"""Alerter engine throughput: score messages to events for many sensors, one CPU core.

Feeds the default model's card (models/) score messages as the classifier publishes them (every
label with a score and one frame score per STFT frame) from --sensors sensors, one window per
hop each, to soundsentry.alerting.engine.AlertEngine, after a warm-up that creates every tracker.
The scores are mostly quiet with a loud run now and then, so events start and end. Also times the
state snapshot the alerter service writes per touched sensor and batch (``encoded_state``, as its
table stores it) against the JSON of ``state_of`` (what it stored before).

This is the engine and the snapshot, not the service: Faust's per-record machinery and the
Kafka sends come on top (benchmarks/pipeline.py measures the whole service).

Last line: one JSON object with us_per_message, messages_per_s_per_core, snapshot_us,
snapshot_bytes, json_snapshot_us and json_snapshot_bytes.

    .venv/bin/python benchmarks/alerter.py [--sensors 200] [--windows 60] [--model models]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from soundsentry.alerting.engine import AlertEngine
from soundsentry.contracts import WindowScores
from soundsentry.models.model_set import ModelCard, read_cards

REPO = Path(__file__).resolve().parents[1]


def messages(card: ModelCard, sensors: int, windows: int, seed: int = 0) -> list[WindowScores]:
    """Window after window, every sensor's message of that window (as they interleave)."""
    rng = np.random.default_rng(seed)
    profile = card.profile
    hop = profile.hop_frames * profile.mel.hop_length
    frames = profile.window_frames
    out = []
    for step in range(windows):
        for sensor in range(sensors):
            message = WindowScores(
                sensor_id=f"sensor-{sensor:05d}",
                stream_id="bench",
                model=card.name,
                model_version=card.version,
                start_sample=step * hop,
                num_samples=profile.window_samples,
                sample_rate_hz=profile.mel.sample_rate_hz,
            )
            loud = rng.random() < 0.05  # now and then a label sounds for a window
            for index, label in enumerate(card.labels):
                level = 0.95 if loud and index == step % len(card.labels) else 0.05
                entry = message.scores.add(label=label, score=float(rng.random() * level))
                entry.frame_scores.extend((rng.random(frames) * level).astype(np.float32).tolist())
            out.append(message)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=200)
    parser.add_argument("--windows", type=int, default=60, help="windows per sensor")
    parser.add_argument("--model", type=Path, default=REPO / "models")
    args = parser.parse_args()
    cards = read_cards(args.model)
    card = cards["default"] if "default" in cards else next(iter(cards.values()))
    stream = messages(card, args.sensors, args.windows)
    warm = args.sensors * 5
    engine = AlertEngine({card.name: card})
    for message in stream[:warm]:
        engine.process(message, lambda _: None)
    timed = stream[warm:]
    events = 0
    started = time.process_time()
    for message in timed:
        events += len(engine.process(message, lambda _: None).events)
    cpu = time.process_time() - started
    per_message = cpu / len(timed)
    sensor_ids = [f"sensor-{s:05d}" for s in range(args.sensors)]
    started = time.process_time()
    sizes = [len(engine.encoded_state(s) or b"") for s in sensor_ids]
    snapshot = (time.process_time() - started) / len(sensor_ids)
    started = time.process_time()
    # As Faust's JSON codec stored it: no spaces.
    compact = json.JSONEncoder(separators=(",", ":")).encode
    json_sizes = [len(compact(engine.state_of(s)).encode()) for s in sensor_ids]
    json_snapshot = (time.process_time() - started) / len(sensor_ids)
    print(
        f"alerter engine: {len(timed)} messages of {len(card.labels)} labels from "
        f"{args.sensors} sensors in {cpu:.2f} s CPU -> {per_message * 1e6:.1f} us per message, "
        f"{1 / per_message:,.0f} messages/s on one core; {events} events"
    )
    print(
        f"state snapshot (encoded_state, as the table stores it): {snapshot * 1e6:.1f} us and "
        f"{max(sizes)} bytes per sensor; the JSON of state_of: {json_snapshot * 1e6:.1f} us "
        f"and {max(json_sizes)} bytes"
    )
    print(
        json.dumps(
            {
                "benchmark": "alerter",
                "labels": len(card.labels),
                "sensors": args.sensors,
                "messages": len(timed),
                "events": events,
                "us_per_message": round(per_message * 1e6, 1),
                "messages_per_s_per_core": round(1 / per_message),
                "snapshot_us": round(snapshot * 1e6, 1),
                "snapshot_bytes": max(sizes),
                "json_snapshot_us": round(json_snapshot * 1e6, 1),
                "json_snapshot_bytes": max(json_sizes),
            }
        )
    )


if __name__ == "__main__":
    main()
