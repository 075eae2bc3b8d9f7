"""Write the README's example recording, made entirely by the project (no third-party audio).

``examples/audio/kitchen_alarms.flac``: 20 s at 16 kHz of synthetic room noise (pink noise with
a 50 Hz hum and a slow level drift) with two cycles of a smoke alarm (T3) from 2 s and two of a
CO alarm (T4) from 12 s, from :func:`soundsentry.training.alarms.synthesize_alarm`. Beside it,
``kitchen_alarms.events.tsv`` lists the true events (file, onset, offset, label) for
``soundsentry evaluate``. Seeded: the same files every run.

    .venv/bin/python tools/make_example_audio.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile

from soundsentry.training.alarms import synthesize_alarm

RATE = 16_000
DURATION_S = 20.0
OUT = Path(__file__).resolve().parent.parent / "examples" / "audio"
NAME = "kitchen_alarms"


def _room_noise(rng: np.random.Generator, n: int) -> np.ndarray:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    spectrum[1:] /= np.sqrt(freqs[1:])  # pink: power falls 3 dB an octave
    spectrum[0] = 0
    noise = np.fft.irfft(spectrum, n)
    t = np.arange(n) / RATE
    noise += 0.3 * np.std(noise) * np.sin(2 * np.pi * 50 * t)
    noise *= 1 + 0.3 * np.sin(2 * np.pi * t / 7.0)
    return 10 ** (-40 / 20) * noise / np.sqrt(np.mean(noise**2))  # -40 dBFS RMS


def main() -> None:
    rng = np.random.default_rng(2026)
    n = round(DURATION_S * RATE)
    mix = _room_noise(rng, n)
    events = []
    for label, start_s, length_s in (("smoke_alarm", 2.0, 7.9), ("co_alarm", 12.0, 8.0)):
        alarm = synthesize_alarm(
            label,
            duration_s=length_s,
            sample_rate_hz=RATE,
            rng=rng,
            start_s=0.0,
            level_dbfs=-14.0,
            rt60_s=0.3,
        )
        offset = round(start_s * RATE)
        mix[offset : offset + alarm.audio.size] += alarm.audio
        events += [(label, (offset + a) / RATE, (offset + b) / RATE) for a, b in alarm.cycles]
    OUT.mkdir(parents=True, exist_ok=True)
    audio_path = OUT / f"{NAME}.flac"
    soundfile.write(audio_path, np.clip(mix, -1, 1).astype(np.float32), RATE, subtype="PCM_16")
    lines = [f"{audio_path.name}\t{on:.3f}\t{off:.3f}\t{label}" for label, on, off in events]
    (OUT / f"{NAME}.events.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {audio_path} and {NAME}.events.tsv ({len(events)} events)")


if __name__ == "__main__":
    main()
