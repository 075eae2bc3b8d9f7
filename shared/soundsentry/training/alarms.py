"""Standardised alarm signals, synthesised: training and test material that needs no recordings.

Real smoke and CO alarms follow standards (ISO 8201 / NFPA 72 temporal patterns):

- **T3** (smoke, fire): three 0.5 s tones separated by 0.5 s, then 1.5 s of silence; repeat.
- **T4** (carbon monoxide): four 0.1 s tones separated by 0.1 s, then 5 s of silence; repeat.

Piezo sounders put the fundamental between 2.5 and 3.6 kHz with strong harmonics. Each signal
here draws its fundamental, harmonic levels, timing jitter, level and room reverberation from a
seeded generator, and reports where each tone and each pattern cycle lies (sample indices).

Real alarms are less tidy than the standards: recordings of smoke alarms beep 0.2-1 s tones at
other rates than T3, sound for a short burst of one or two cycles, or fall silent after a test
press. :func:`varied_pattern` draws such a pattern around the nominal one (smoke: long tones;
CO: short tones in a group, a long pause), and ``max_cycles`` cuts a signal to a burst.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from soundsentry.exceptions import ConfigurationError

__all__ = [
    "PATTERNS",
    "AlarmPattern",
    "AlarmSignal",
    "room_impulse_response",
    "synthesize_alarm",
    "varied_pattern",
]

F0_RANGE_HZ = (2500.0, 3600.0)


@dataclass(frozen=True, slots=True)
class AlarmPattern:
    """``tones`` tones of ``tone_s`` seconds, ``gap_s`` apart, then ``pause_s`` of silence."""

    label: str
    tones: int
    tone_s: float
    gap_s: float
    pause_s: float

    @property
    def cycle_s(self) -> float:
        return self.tones * self.tone_s + (self.tones - 1) * self.gap_s + self.pause_s


PATTERNS: dict[str, AlarmPattern] = {
    "smoke_alarm": AlarmPattern("smoke_alarm", tones=3, tone_s=0.5, gap_s=0.5, pause_s=1.5),
    "co_alarm": AlarmPattern("co_alarm", tones=4, tone_s=0.1, gap_s=0.1, pause_s=5.0),
}


def varied_pattern(label: str, rng: np.random.Generator) -> AlarmPattern:
    """A pattern of ``label``'s kind with timings drawn around its nominal values.

    smoke_alarm: 1-4 tones of 0.25-0.9 s, 0.15-0.7 s apart, 0.5-2.5 s of pause (T3 in half of
    the draws' tone counts). co_alarm: 3-5 tones of 0.06-0.14 s, 0.06-0.14 s apart, 2-6 s of
    pause. The two never share a tone length, the cue that tells them apart in a 1 s window.
    """
    nominal = PATTERNS.get(label)
    if nominal is None:
        raise ConfigurationError(f"unknown alarm {label!r}; known: {sorted(PATTERNS)}")
    if label == "smoke_alarm":
        tones = 3 if rng.random() < 0.5 else int(rng.integers(1, 5))
        return AlarmPattern(
            label,
            tones=tones,
            tone_s=float(rng.uniform(0.25, 0.9)),
            gap_s=float(rng.uniform(0.15, 0.7)),
            pause_s=float(rng.uniform(0.5, 2.5)),
        )
    return AlarmPattern(
        label,
        tones=int(rng.integers(3, 6)),
        tone_s=float(rng.uniform(0.06, 0.14)),
        gap_s=float(rng.uniform(0.06, 0.14)),
        pause_s=float(rng.uniform(2.0, 6.0)),
    )


@dataclass(frozen=True, slots=True)
class AlarmSignal:
    """A synthesised alarm and where it sounds.

    ``tones`` and ``cycles`` are ``(start_sample, end_sample)`` pairs: each tone, and each group of
    tones of one pattern cycle (first tone start to last tone end, reverberation tail excluded).
    """

    audio: npt.NDArray[np.float32]  # shape=(n,), full scale 1.0
    sample_rate_hz: int
    label: str
    fundamental_hz: float
    tones: tuple[tuple[int, int], ...]
    cycles: tuple[tuple[int, int], ...]


def room_impulse_response(
    *, rt60_s: float, sample_rate_hz: int, rng: np.random.Generator, direct_ratio_db: float = 6.0
) -> npt.NDArray[np.float32]:
    """A synthetic room response: a direct path plus exponentially decaying noise.

    The noise decays by 60 dB over ``rt60_s``; the direct path is ``direct_ratio_db`` above the
    reverberant energy. The response is normalised to unit energy.
    """
    if not 0.0 < rt60_s <= 5.0:
        raise ConfigurationError(f"rt60_s must be in (0, 5], got {rt60_s}")
    length = max(1, int(rt60_s * sample_rate_hz))
    t = np.arange(length) / sample_rate_hz
    tail = rng.standard_normal(length) * 10.0 ** (-3.0 * t / rt60_s)
    tail /= np.sqrt(np.sum(tail**2))
    response = tail * 10.0 ** (-direct_ratio_db / 20.0)
    response[0] += 1.0
    response /= np.sqrt(np.sum(response**2))
    result: npt.NDArray[np.float32] = response.astype(np.float32)
    return result


def synthesize_alarm(
    label: Literal["smoke_alarm", "co_alarm"] | str,
    *,
    duration_s: float,
    sample_rate_hz: int = 16_000,
    rng: np.random.Generator,
    start_s: float = 0.0,
    fundamental_hz: float | None = None,
    level_dbfs: float | None = None,
    timing_jitter: float = 0.05,
    rt60_s: float | None = None,
    pattern: AlarmPattern | None = None,
    max_cycles: int | None = None,
) -> AlarmSignal:
    """Synthesise ``duration_s`` of audio in which the alarm sounds from ``start_s`` on.

    Parameters
    ----------
    label : "smoke_alarm" (T3) or "co_alarm" (T4)
    fundamental_hz : default drawn from 2500..3600 Hz
    level_dbfs : peak level of the tones, default drawn from -30..-6 dBFS
    timing_jitter : relative random deviation of each tone and gap length (0.05 = +-5 %)
    rt60_s : room reverberation time; default drawn from 0.1..0.8 s; 0 for a dry signal
    pattern : timing to use instead of the label's nominal one (e.g. :func:`varied_pattern`)
    max_cycles : stop after this many pattern cycles (a burst); default: sound to the end

    Raises
    ------
    ConfigurationError
        for an unknown label or values outside what alarms do.
    """
    nominal = PATTERNS.get(label)
    if nominal is None:
        raise ConfigurationError(f"unknown alarm {label!r}; known: {sorted(PATTERNS)}")
    if pattern is None:
        pattern = nominal
    elif pattern.label != label or min(pattern.tones, pattern.tone_s, pattern.gap_s) <= 0:
        raise ConfigurationError(f"pattern {pattern} does not describe a {label}")
    if max_cycles is not None and max_cycles < 1:
        raise ConfigurationError(f"max_cycles must be >= 1, got {max_cycles}")
    if duration_s <= 0 or not 0 <= start_s < duration_s:
        raise ConfigurationError(f"need 0 <= start_s ({start_s}) < duration_s ({duration_s})")
    if not 0 <= timing_jitter < 0.5:
        raise ConfigurationError(f"timing_jitter must be in [0, 0.5), got {timing_jitter}")
    f0 = float(rng.uniform(*F0_RANGE_HZ)) if fundamental_hz is None else fundamental_hz
    if not 1000.0 <= f0 < sample_rate_hz / 2:
        raise ConfigurationError(f"fundamental {f0} Hz must be in 1 kHz..Nyquist")
    level = float(rng.uniform(-30.0, -6.0)) if level_dbfs is None else level_dbfs
    rt60 = float(rng.uniform(0.1, 0.8)) if rt60_s is None else rt60_s

    total = round(duration_s * sample_rate_hz)
    tones, cycles = _schedule(
        pattern,
        start=round(start_s * sample_rate_hz),
        total=total,
        sample_rate_hz=sample_rate_hz,
        jitter=timing_jitter,
        rng=rng,
    )
    if max_cycles is not None and len(cycles) > max_cycles:
        end = cycles[max_cycles - 1][1]
        cycles = cycles[:max_cycles]
        tones = [tone for tone in tones if tone[1] <= end]
    # Harmonics of a square-ish piezo drive: odd ones strong, even ones weaker, random mix.
    harmonics = [
        (k, float(rng.uniform(0.2, 0.6) / k if k % 2 else rng.uniform(0.02, 0.15) / k))
        for k in range(2, 6)
        if k * f0 < sample_rate_hz / 2
    ]
    dry = np.zeros(total, dtype=np.float64)
    for a, b in tones:
        dry[a:b] = _tone(b - a, f0=f0, harmonics=harmonics, sample_rate_hz=sample_rate_hz)

    peak = np.max(np.abs(dry)) or 1.0
    dry *= 10.0 ** (level / 20.0) / peak
    if rt60 > 0:
        # Overlap-add FFT convolution: direct convolution with a long room response takes seconds.
        import scipy.signal  # noqa: PLC0415 - slow to import (about 1 s)

        wet = scipy.signal.oaconvolve(
            dry, room_impulse_response(rt60_s=rt60, sample_rate_hz=sample_rate_hz, rng=rng)
        )
        audio = wet[:total]
    else:
        audio = dry
    np.clip(audio, -1.0, 1.0, out=audio)
    return AlarmSignal(
        audio=audio.astype(np.float32),
        sample_rate_hz=sample_rate_hz,
        label=pattern.label,
        fundamental_hz=f0,
        tones=tuple(tones),
        cycles=tuple(cycles),
    )


def _schedule(
    pattern: AlarmPattern,
    *,
    start: int,
    total: int,
    sample_rate_hz: int,
    jitter: float,
    rng: np.random.Generator,
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """Where the tones and cycles fall: (start, end) sample pairs, cut at ``total``."""

    def jittered(seconds: float) -> int:
        factor = 1.0 + rng.uniform(-jitter, jitter)
        return max(1, round(seconds * factor * sample_rate_hz))

    tones: list[tuple[int, int]] = []
    cycles: list[tuple[int, int]] = []
    position = start
    while position < total:
        first = len(tones)
        for tone in range(pattern.tones):
            end = min(position + jittered(pattern.tone_s), total)
            tones.append((position, end))
            position = end + (jittered(pattern.gap_s) if tone < pattern.tones - 1 else 0)
            if position >= total:
                break
        cycles.append((tones[first][0], tones[-1][1]))
        position += jittered(pattern.pause_s)
    return tones, cycles


def _tone(
    length: int, *, f0: float, harmonics: list[tuple[int, float]], sample_rate_hz: int
) -> npt.NDArray[np.float64]:
    """One tone with its harmonics and 5 ms attack and release ramps (no clicks)."""
    phase = 2 * np.pi * f0 * np.arange(length) / sample_rate_hz
    wave = np.sin(phase)
    for k, amplitude in harmonics:
        wave += amplitude * np.sin(k * phase)
    edge = min(max(1, int(0.005 * sample_rate_hz)), length // 2)
    if edge:
        wave[:edge] *= np.linspace(0.0, 1.0, edge)
        wave[-edge:] *= np.linspace(1.0, 0.0, edge)
    result: npt.NDArray[np.float64] = wave
    return result
