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
    truth: Sequence[tuple[str, float]],
    found: Sequence[tuple[str, float, float]],
    *,
    collar_s: float = 0.25,
) -> list[str]:
    """How detections (label, onset, offset) differ from the truth's alarms (label, onset):
    each true onset is found once within ``collar_s``, or falls inside an event of its label
    that is still going (a cycle within the rule's merge gap of the last one continues it:
    an alarm that keeps sounding is one alert); every detection starts at a true onset."""
    problems = []
    for label, onset in truth:
        starts = sum(kind == label and abs(on - onset) <= collar_s for kind, on, _ in found)
        going = any(kind == label and on < onset < off for kind, on, off in found)
        if starts > 1 or (starts == 0 and not going):
            problems.append(f"{label} at {onset:.2f} s: {starts} onsets, inside an event: {going}")
    for label, on, off in found:
        if not any(kind == label and abs(on - onset) <= collar_s for kind, onset in truth):
            problems.append(f"{label} {on:.2f}-{off:.2f} s starts at no true onset")
    return problems
