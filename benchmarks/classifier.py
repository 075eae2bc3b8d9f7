"""Classifier throughput: batched ONNX inference on real feature windows, one CPU core.

Scores windows made by the featurizer from real recordings (../shared/data) with every model of
a model directory (default: models/), through soundsentry.models with one inference thread, at
several batch sizes. Without a model directory it measures the default architecture of
`soundsentry train` exported with untrained weights (speed does not depend on the weights; the
JSON says which was measured). Needs PyTorch only in that case.

Last line: one JSON object with windows_per_s_per_core (at --batch) and the figure per batch size.

    .venv/bin/python benchmarks/classifier.py [--model models] [--batch 64] [--windows 4096]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from soundsentry.audio import s16_chunks  # noqa: E402
from soundsentry.features import FeatureProfile, Featurizer, Window  # noqa: E402
from soundsentry.models import ModelSet  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "urbansound8k_subset"
LABELS = [
    "smoke_alarm",
    "co_alarm",
    "glass_break",
    "gun_shot",
    "siren",
    "car_horn",
    "dog_bark",
    "baby_cry",
]


def untrained_default(directory: Path) -> Path:
    """Export `soundsentry train`'s default network, untrained, with its card, into directory."""
    from soundsentry.train import TrainConfig, TrainResult, build_network, export_model  # noqa: PLC0415

    profile = FeatureProfile("full-16k")
    network = build_network(profile, len(LABELS)).eval()
    rng = np.random.default_rng(0)
    inputs = rng.normal(-40.0, 15.0, (8, profile.num_bands, profile.window_frames))
    result = TrainResult(
        model=network,
        profile=profile,
        labels=tuple(LABELS),
        thresholds=dict.fromkeys(LABELS, 0.5),
        metrics={},
        training_data=[],
        licence="benchmark only: untrained weights",
        config=TrainConfig(profile=profile, labels=tuple(LABELS)),
        check_inputs=inputs.astype(np.float32),
    )
    return export_model(result, directory, name="untrained", version="0").parent


def real_windows(profiles: list[FeatureProfile], count: int) -> list[Window]:
    featurizer = Featurizer(profiles)
    windows: list[Window] = []
    for index, path in enumerate(sorted((DATA / "audio").glob("*/*.flac"))):
        samples, rate = soundfile.read(path, dtype="int16")
        blocks = (samples[i : i + rate // 10] for i in range(0, samples.size, rate // 10))
        for chunk in s16_chunks(blocks, sensor_id=f"s{index}", stream_id="b", sample_rate_hz=rate):
            windows += featurizer.process([chunk]).windows
        if len(windows) >= count:
            return windows[:count]
    if not windows:
        sys.exit(f"no recordings under {DATA}")
    return windows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models"))
    parser.add_argument("--batch", type=int, default=64, help="the batch size the JSON reports")
    parser.add_argument("--windows", type=int, default=4096)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    with tempfile.TemporaryDirectory() as scratch:
        trained = args.model.is_dir() and any(args.model.glob("*.json"))
        directory = args.model if trained else untrained_default(Path(scratch))
        models = ModelSet.from_dir(directory, threads=1)
        names = ", ".join(f"{m.name} {m.card.version}" for m in models.models)
        onnx_bytes = sum((directory / m.card.onnx).stat().st_size for m in models.models)
        print(
            f"models: {names} ({'trained' if trained else 'untrained default architecture'}), "
            f"{onnx_bytes} bytes of ONNX"
        )
        windows = real_windows(models.profiles(), args.windows)
        print(f"{len(windows)} real windows")
        figures: dict[int, float] = {}
        for batch in sorted({1, 16, 64, 256, args.batch}):
            models.score(windows[:batch])  # warm-up
            started = time.process_time()
            for lo in range(0, len(windows), batch):
                models.score(windows[lo : lo + batch])
            cpu = time.process_time() - started
            figures[batch] = len(windows) / cpu
            print(f"batch {batch:4d}: {figures[batch]:9.0f} windows/s on one core")
    print(
        json.dumps(
            {
                "model": names,
                "trained": trained,
                "onnx_bytes": onnx_bytes,
                "batch": args.batch,
                "windows_per_s_per_core": round(figures[args.batch], 1),
                "windows_per_s_per_core_by_batch": {
                    str(k): round(v, 1) for k, v in figures.items()
                },
            }
        )
    )


if __name__ == "__main__":
    main()
