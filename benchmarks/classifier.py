"""Classifier throughput: batched ONNX inference on real feature windows, one CPU core.

Scores windows made by the featurizer from real recordings (../shared/data) with every model of
a model directory (default: models/), through soundsentry.models.model_set with one inference
thread, at several batch sizes. Without a model directory it measures the default architecture of
`soundsentry train` (or other block widths: --channels) exported with untrained weights, in float,
or int8 with --int8 (speed does not depend on the weights; the JSON says which was measured). Needs
PyTorch only in that case.

Also times one ONNX Runtime run of 4, 16, 64 and 256 windows (without the slicing of
LoadedModel.predict). Last line: one JSON object with windows_per_s_per_core (at --batch), the
figure per batch size and ms_per_window_by_run_size.

    .venv/bin/python benchmarks/classifier.py [--model models] [--batch 64] [--windows 4096]
        [--model none --channels 8 16 32 [--int8]]
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

from soundsentry.audio.pcm import s16_chunks  # noqa: E402
from soundsentry.features.featurizer import FeatureProfile, Featurizer, Window  # noqa: E402
from soundsentry.models.model_set import INFERENCE_SLICE, INPUT_NAME, ModelSet  # noqa: E402

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


def untrained_default(directory: Path, channels: tuple[int, ...] = (16, 32, 64)) -> Path:
    """Export `soundsentry train`'s network (default widths, or ``channels``), untrained, with
    its card, into directory."""
    from soundsentry.training.train import TrainConfig, TrainResult, build_network, export_model  # noqa: PLC0415

    profile = FeatureProfile("full-16k")
    network = build_network(profile, len(LABELS), channels=channels).eval()
    rng = np.random.default_rng(0)
    inputs = rng.normal(-40.0, 15.0, (8, profile.num_bands, profile.window_frames))
    result = TrainResult(
        model=network,
        profile=profile,
        labels=tuple(LABELS),
        thresholds=dict.fromkeys(LABELS, 0.5),
        event_rules={},  # the threshold rule detect uses
        metrics={},
        training_data=[],
        licence="benchmark only: untrained weights",
        config=TrainConfig(profile=profile, labels=tuple(LABELS), channels=channels),
        check_inputs=inputs.astype(np.float32),
    )
    return export_model(result, directory, name="untrained", version="0").parent


def quantized(directory: Path) -> None:
    """Make the untrained model of ``directory`` int8 (its card then names the int8 file)."""
    from soundsentry.training.quantize import quantize_onnx  # noqa: PLC0415

    card_path = directory / "untrained.json"
    card = json.loads(card_path.read_text())
    source = directory / card["onnx"]
    windows = real_windows([FeatureProfile("full-16k")], 512)
    calibration = np.stack([w.log_mel_db for w in windows]).astype(np.float32)
    quantize_onnx(source, directory / "untrained.int8.onnx", calibration)
    card["onnx"] = "untrained.int8.onnx"
    card_path.write_text(json.dumps(card))
    source.unlink()  # the size reported is the int8 file's


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


def run_sizes(models: ModelSet, windows: list[Window]) -> dict[int, float]:
    """CPU seconds per window of each model's session run on N windows at once, summed over
    the models (their profiles' rows of the same windows)."""
    out: dict[int, float] = {}
    for size in (4, 16, 64, 256):
        cpu = 0.0
        for model in models.models:
            own = [w.log_mel_db for w in windows if w.profile == model.profile.name]
            if len(own) < size:  # a band model carried by a wider profile's windows
                continue
            rows = np.stack(own)
            feeds = [rows[lo : lo + size, None] for lo in range(0, len(rows) - size + 1, size)]
            model.session.run(None, {INPUT_NAME: feeds[0]})  # warm-up
            started = time.process_time()
            for feed in feeds:
                model.session.run(None, {INPUT_NAME: feed})
            cpu += (time.process_time() - started) / (len(feeds) * size)
        out[size] = cpu
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=Path("models"))
    parser.add_argument("--batch", type=int, default=64, help="the batch size the JSON reports")
    parser.add_argument("--windows", type=int, default=4096)
    parser.add_argument(
        "--channels",
        type=int,
        nargs="+",
        default=[16, 32, 64],
        help="block widths of the untrained network (without a model directory)",
    )
    parser.add_argument(
        "--int8",
        action="store_true",
        help="quantize the untrained network as `soundsentry quantize` does (ranges measured "
        "on 512 real windows) and measure that",
    )
    args = parser.parse_args()
    trained = args.model.is_dir() and any(args.model.glob("*.json"))
    if args.int8 and trained:
        parser.error("--int8 quantizes the untrained network: use it with --model none")
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    with tempfile.TemporaryDirectory() as scratch:
        directory = (
            args.model if trained else untrained_default(Path(scratch), tuple(args.channels))
        )
        if not trained and args.int8:
            quantized(directory)
        models = ModelSet.from_dir(directory, threads=1)
        names = ", ".join(f"{m.name} {m.card.version}" for m in models.models)
        onnx_bytes = sum((directory / m.card.onnx).stat().st_size for m in models.models)
        kind = "trained" if trained else f"untrained, channels {args.channels}"
        kind += ", int8" if not trained and args.int8 else ""
        print(f"models: {names} ({kind}), {onnx_bytes} bytes of ONNX")
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
        # One ONNX Runtime run per N windows, without the slicing of LoadedModel.predict: why
        # INFERENCE_SLICE is what it is.
        runs = run_sizes(models, windows)
        for size, per_window in runs.items():
            print(f"one run of {size:3d} windows: {per_window * 1e3:.3f} ms per window")
    print(
        json.dumps(
            {
                "model": names,
                "trained": trained,
                "channels": None if trained else args.channels,
                "int8": not trained and args.int8,
                "onnx_bytes": onnx_bytes,
                "batch": args.batch,
                "windows_per_s_per_core": round(figures[args.batch], 1),
                "windows_per_s_per_core_by_batch": {
                    str(k): round(v, 1) for k, v in figures.items()
                },
                "inference_slice": INFERENCE_SLICE,
                "ms_per_window_by_run_size": {str(k): round(v * 1e3, 4) for k, v in runs.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
