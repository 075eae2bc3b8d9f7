"""Real recordings from ../shared/data and helpers to stream them as AudioChunks."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from functools import cache
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soundfile
from google.protobuf.timestamp_pb2 import Timestamp

from soundsentry.contracts import AudioChunk, SampleFormat

# The development recordings live beside the checkout (../shared/data), as in CI.
SHARED_DATA = Path(
    os.environ.get("SOUNDSENTRY_SHARED_DATA")
    or Path(__file__).resolve().parents[2] / "shared" / "data"
)

# A few clips of each kind: native 16 kHz street sounds, 44.1 kHz office events resampled
# upstream, and 8 kHz phone recordings.
RECORDINGS = {
    "siren": "urbansound8k_subset/audio/fold1/106905-8-0-0.flac",
    "dog_bark": "urbansound8k_subset/audio/fold1/101415-3-0-2.flac",
    "air_conditioner": "urbansound8k_subset/audio/fold1/134717-0-0-0.flac",
    "cough": "dcase2016_task2_office/audio/cough/cough033.flac",
    "glass": "glassbreak_edgeimpulse/audio/glass_break/1-000206-A-1.flac",
    "baby_8k": (
        "donateacry_babycry/audio/hungry/"
        "02c3b725-26e4-4a2c-9336-04ddc58836d9-1430726196216-1.7-m-04-hu.flac"
    ),
}


@cache
def recording(name: str) -> tuple[npt.NDArray[np.int16], int]:
    """(int16 samples, sample rate) of a named recording; mono."""
    path = SHARED_DATA / RECORDINGS[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: the tests need the development recordings in ../shared/data "
            "beside the checkout (or SOUNDSENTRY_SHARED_DATA pointing at them)"
        )
    samples, rate = soundfile.read(path, dtype="int16")
    return samples, int(rate)


def chunks(
    samples: npt.NDArray[np.int16],
    rate: int,
    sizes: Sequence[int] | None = None,
    *,
    sensor_id: str = "mic-1",
    stream_id: str = "stream-a",
    first_sequence: int = 0,
    first_sample: int = 0,
    epoch_s: int = 1_800_000_000,
) -> Iterator[AudioChunk]:
    """Cut samples into s16le AudioChunks of the given sizes (cycled), or one chunk."""
    sizes = sizes or [samples.size]
    position = 0
    sequence = first_sequence
    index = 0
    while position < samples.size:
        size = sizes[index % len(sizes)]
        part = samples[position : position + size]
        start = first_sample + position
        captured = epoch_s * 1_000_000_000 + start * 1_000_000_000 // rate
        yield AudioChunk(
            sensor_id=sensor_id,
            stream_id=stream_id,
            sequence=sequence,
            start_sample=start,
            sample_rate_hz=rate,
            channels=1,
            sample_format=SampleFormat.SAMPLE_FORMAT_S16LE,
            captured_at=Timestamp(
                seconds=captured // 1_000_000_000, nanos=captured % 1_000_000_000
            ),
            pcm=part.astype("<i2").tobytes(),
        )
        position += size
        sequence += 1
        index += 1


def alarm_mismatches(
    truth: Sequence[tuple[str, float, float]],
    found: Sequence[tuple[str, float, float]],
    *,
    collar_s: float = 0.25,
    continues_within_s: float = 2.0,
    offset_tolerance_s: float = 1.0,
) -> list[str]:
    """How detections (label, onset, offset) differ from the true alarms (label, onset,
    offset). Each detection starts within ``collar_s`` of one true onset; it may go on over
    the alarm's next cycles of its label that start within ``continues_within_s`` of the last
    one's end (an alarm that keeps sounding is one alert), and ends within
    ``offset_tolerance_s`` of the last cycle it covers. Each true alarm is covered once."""
    problems = []
    covered: list[tuple[str, float, float]] = []
    for label, on, off in found:
        cycles = sorted((t for t in truth if t[0] == label), key=lambda t: t[1])
        starts = [t for t in cycles if abs(on - t[1]) <= collar_s]
        if len(starts) != 1:
            problems.append(f"{label} {on:.2f}-{off:.2f} s starts at {len(starts)} true onsets")
            continue
        mine = [starts[0]]
        for cycle in cycles[cycles.index(starts[0]) + 1 :]:
            if cycle[1] < off and cycle[1] - mine[-1][2] < continues_within_s:
                mine.append(cycle)
        if abs(off - mine[-1][2]) > offset_tolerance_s:
            problems.append(f"{label} {on:.2f}-{off:.2f} s: its alarm ends at {mine[-1][2]:.2f} s")
        covered += mine
    problems += [
        f"{alarm[0]} at {alarm[1]:.2f} s covered {covered.count(alarm)} times"
        for alarm in truth
        if covered.count(alarm) != 1
    ]
    return problems
