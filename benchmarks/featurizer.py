"""Featurizer throughput: 1,000 simulated sensors sending 100 ms chunks, on one CPU core.

Each sensor streams a real 16 kHz recording from ../shared/data (urbansound8k_subset) in
100 ms s16le chunks; every step hands one chunk per sensor to one Featurizer.process call, as the
featurizer service does with a batch from Kafka. The CPU time of those calls (decode, frames,
windows with ids and RMS) is measured, pinned to one core with single-threaded BLAS.

Baseline: librosa doing the same per-chunk work, i.e. for each sensor and chunk,
melspectrogram(center=False) + power_to_db over the samples carried from the previous chunk
plus the new ones.

Last line: one JSON object with realtime_factor_per_core, speedup_vs_librosa, max_abs_db_diff
(streamed windows vs librosa over each whole recording) and state_bytes_per_sensor.

    .venv/bin/python benchmarks/featurizer.py [--sensors 1000] [--seconds 10]
"""

from __future__ import annotations

import os

# One core, single-threaded numeric libraries: set before numpy is imported.
for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402
import soundfile  # noqa: E402

from soundsentry.audio.mel import MelSpec  # noqa: E402
from soundsentry.contracts import AudioChunk, SampleFormat  # noqa: E402
from soundsentry.features.featurizer import DEFAULT_PROFILES, Featurizer  # noqa: E402

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "urbansound8k_subset"


def load_recordings(count: int) -> list[np.ndarray]:
    paths = sorted((DATA / "audio").glob("*/*.flac"))[:: max(1, 1761 // count)][:count]
    if not paths:
        sys.exit(f"no recordings under {DATA}")
    return [soundfile.read(p, dtype="int16")[0] for p in paths]


def chunk_for(sensor: int, step: int, recording: np.ndarray, chunk: int) -> AudioChunk:
    start = step * chunk
    lo = start % recording.size  # loop the recording
    pcm = recording[lo : lo + chunk]
    if pcm.size < chunk:
        pcm = np.concatenate((pcm, recording[: chunk - pcm.size]))
    return AudioChunk(
        sensor_id=f"sensor-{sensor:05d}",
        stream_id="bench",
        sequence=step,
        start_sample=start,
        sample_rate_hz=16_000,
        channels=1,
        sample_format=SampleFormat.SAMPLE_FORMAT_S16LE,
        pcm=pcm.tobytes(),
    )


def run_featurizer(
    recordings: list[np.ndarray], sensors: int, steps: int, chunk: int
) -> tuple[float, int, Featurizer]:
    featurizer = Featurizer(DEFAULT_PROFILES)
    cpu = 0.0
    windows = 0
    for step in range(steps):
        batch = [chunk_for(s, step, recordings[s % len(recordings)], chunk) for s in range(sensors)]
        t0 = time.process_time()
        result = featurizer.process(batch)
        cpu += time.process_time() - t0
        windows += len(result.windows)
        assert not result.rejected
    return cpu, windows, featurizer


def librosa_power(y: np.ndarray, mel: MelSpec) -> np.ndarray:
    """librosa's mel power spectrogram (center=False) with the profile's parameters."""
    return librosa.feature.melspectrogram(
        y=y,
        sr=mel.sample_rate_hz,
        n_fft=mel.n_fft,
        hop_length=mel.hop_length,
        center=False,
        n_mels=mel.n_mels,
        fmin=mel.fmin_hz,
        fmax=mel.fmax_hz,
    )


def run_librosa(recordings: list[np.ndarray], sensors: int, steps: int, chunk: int) -> float:
    mel = DEFAULT_PROFILES[0].mel
    # Warm up: librosa's first call pays one-time costs that are not per-chunk work.
    librosa_power(np.zeros(mel.n_fft * 4, dtype=np.float32), mel)
    cpu = 0.0
    for s in range(sensors):
        carry = np.empty(0, dtype=np.float32)
        for step in range(steps):
            msg = chunk_for(s, step, recordings[s % len(recordings)], chunk)
            t0 = time.process_time()
            y = np.frombuffer(msg.pcm, dtype="<i2").astype(np.float32) / 32768.0
            y = np.concatenate((carry, y))
            frames = 0 if y.size < mel.n_fft else (y.size - mel.n_fft) // mel.hop_length + 1
            if frames:
                spec = librosa_power(y[: (frames - 1) * mel.hop_length + mel.n_fft], mel)
                librosa.power_to_db(spec, ref=1.0, top_db=None)
                carry = y[frames * mel.hop_length :]
            else:
                carry = y
            cpu += time.process_time() - t0
    return cpu


def max_db_diff(recordings: list[np.ndarray], chunk: int) -> float:
    """Stream each recording in chunks and compare every window with librosa on the whole file."""
    profile = DEFAULT_PROFILES[0]
    mel = profile.mel
    worst = 0.0
    for index, recording in enumerate(recordings[:10]):
        featurizer = Featurizer(DEFAULT_PROFILES)
        windows = []
        for step in range(recording.size // chunk):
            windows += featurizer.process([chunk_for(index, step, recording, chunk)]).windows
        y = recording[: (recording.size // chunk) * chunk].astype(np.float64) / 32768.0
        reference = librosa.power_to_db(librosa_power(y, mel), ref=1.0, top_db=None)
        for window in windows:
            first = window.start_sample // mel.hop_length
            expected = reference[profile.band, first : first + profile.window_frames]
            worst = max(worst, float(np.abs(window.log_mel_db - expected).max()))
    return worst


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--seconds", type=float, default=10.0, help="audio per sensor")
    parser.add_argument("--chunk-ms", type=int, default=100)
    parser.add_argument("--librosa-sensors", type=int, default=50)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    chunk = 16 * args.chunk_ms
    steps = round(args.seconds * 1000 / args.chunk_ms)
    recordings = load_recordings(40)
    profile = DEFAULT_PROFILES[0]
    print(
        f"profile {profile.name}: {profile.mel}, window {profile.window_frames} frames "
        f"every {profile.hop_frames} frames"
    )

    cpu, windows, featurizer = run_featurizer(recordings, args.sensors, steps, chunk)
    audio_s = args.sensors * steps * args.chunk_ms / 1000
    realtime = audio_s / cpu
    chunks = args.sensors * steps
    per_chunk_us = cpu / chunks * 1e6
    print(
        f"featurizer: {args.sensors} sensors x {steps} chunks of {args.chunk_ms} ms = "
        f"{audio_s:.0f} s of audio in {cpu:.2f} s CPU on one core -> {realtime:.0f}x real time; "
        f"{per_chunk_us:.1f} us per chunk; {windows} windows"
    )

    lib_steps = min(steps, 50)
    lib_cpu = run_librosa(recordings, args.librosa_sensors, lib_steps, chunk)
    lib_per_chunk_us = lib_cpu / (args.librosa_sensors * lib_steps) * 1e6
    speedup = lib_per_chunk_us / per_chunk_us
    print(
        f"librosa per chunk ({args.librosa_sensors} sensors x {lib_steps} chunks): "
        f"{lib_per_chunk_us:.1f} us per chunk -> featurizer is {speedup:.1f}x faster"
    )

    state = [featurizer.state_bytes(f"sensor-{s:05d}") for s in range(args.sensors)]
    state_bytes = max(state)
    print(f"state per sensor: max {state_bytes} bytes, mean {np.mean(state):.0f} bytes")

    diff = max_db_diff(recordings, chunk)
    print(f"max |streamed - librosa whole-file| = {diff:.2e} dB")

    print(
        json.dumps(
            {
                "sensors": args.sensors,
                "chunk_ms": args.chunk_ms,
                "audio_seconds": audio_s,
                "cpu_seconds": round(cpu, 3),
                "realtime_factor_per_core": round(realtime, 1),
                "us_per_chunk": round(per_chunk_us, 2),
                "librosa_us_per_chunk": round(lib_per_chunk_us, 2),
                "speedup_vs_librosa": round(speedup, 2),
                "max_abs_db_diff": diff,
                "state_bytes_per_sensor": int(state_bytes),
            }
        )
    )


if __name__ == "__main__":
    main()
