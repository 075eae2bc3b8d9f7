from __future__ import annotations

import librosa
import numpy as np
import pytest
import soxr

from soundsentry.audio._kernels import _jit, kernels
from soundsentry.audio.mel import MelFrontEnd, MelSpec, num_frames
from soundsentry.exceptions import ConfigurationError
from tests.audio_fixtures import RECORDINGS, recording


def librosa_log_mel(y: np.ndarray, spec: MelSpec) -> np.ndarray:
    """The reference: librosa's mel spectrogram (center=False) in dB, ref=1, no top_db."""
    power = librosa.feature.melspectrogram(
        y=y,
        sr=spec.sample_rate_hz,
        n_fft=spec.n_fft,
        hop_length=spec.hop_length,
        center=False,
        power=2.0,
        n_mels=spec.n_mels,
        fmin=spec.fmin_hz,
        fmax=spec.fmax_hz,
    )
    return librosa.power_to_db(power, ref=1.0, top_db=None)


@pytest.mark.parametrize("name", sorted(RECORDINGS))
@pytest.mark.parametrize(
    "spec",
    [MelSpec(), MelSpec(n_fft=1024, hop_length=256, n_mels=40, fmin_hz=300.0, fmax_hz=7000.0)],
)
def test_log_mel_equals_librosa_on_real_recordings(name: str, spec: MelSpec) -> None:
    samples, rate = recording(name)
    y = samples.astype(np.float64) / 32768.0
    if rate != spec.sample_rate_hz:
        y = soxr.resample(y, rate, spec.sample_rate_hz)
    ours = MelFrontEnd(spec).log_mel(y)
    reference = librosa_log_mel(y, spec)
    assert (
        ours.shape
        == reference.shape
        == (spec.n_mels, num_frames(y.size, n_fft=spec.n_fft, hop_length=spec.hop_length))
    )
    assert np.abs(ours - reference).max() <= 1e-3


def test_input_scale_of_a_power_of_two_is_undone_exactly() -> None:
    samples, _ = recording("dog_bark")
    spec = MelSpec()
    unit = MelFrontEnd(spec).log_mel(samples.astype(np.float64) / 32768.0)
    int16_units = MelFrontEnd(spec, input_scale=32768.0).log_mel(samples.astype(np.float64))
    np.testing.assert_array_equal(unit, int16_units)


def test_frame_levels_do_not_depend_on_where_the_arrays_lie() -> None:
    """The frames' sums of squares are the same bits whatever the memory layout (a frames block
    right after the signal once made LLVM fall back to a loop that sums in another order)."""
    rng = np.random.default_rng(3)
    frame = (rng.standard_normal(512) * 3000).astype(np.float32).astype(np.float64)
    window = MelFrontEnd(MelSpec()).window
    levels = set()
    for gap in (0, 2, 600, 10_000):  # samples between the end of the signal and the frames
        memory = np.zeros(50_000 + gap + 4 * 512)
        signal = memory[:50_000]
        signal[:512] = frame
        out = memory[50_000 + gap : 50_000 + gap + 4 * 512].reshape(4, 512)
        sq = np.empty(4)
        kernels().frames(signal, np.zeros(4, dtype=np.intp), window, out, sq)
        levels.add(float(sq[0]))
    assert len(levels) == 1


def test_silence_is_the_power_floor() -> None:
    out = MelFrontEnd(MelSpec()).log_mel(np.zeros(4000))
    assert np.all(out == -100.0)


def test_too_short_signal_has_no_frames() -> None:
    assert MelFrontEnd(MelSpec()).log_mel(np.zeros(511)).shape == (64, 0)
    assert num_frames(512, n_fft=512, hop_length=320) == 1
    assert num_frames(831, n_fft=512, hop_length=320) == 1
    assert num_frames(832, n_fft=512, hop_length=320) == 2


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"n_fft": 500}, "power of two"),
        ({"hop_length": 0}, "hop_length=0"),
        ({"n_mels": 1000}, "n_mels=1000"),
        ({"fmax_hz": 9000.0}, "sample_rate_hz/2"),
        ({"fmin_hz": 500.0, "fmax_hz": 400.0}, "fmin_hz"),
        ({"sample_rate_hz": 10}, "outside 1000..384000"),
    ],
)
def test_bad_mel_specs_are_named(kwargs: dict[str, float], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        MelSpec(**kwargs)  # type: ignore[arg-type]


def test_band_slice_keeps_bands_whose_centres_are_inside() -> None:
    spec = MelSpec()
    band = spec.band_slice(2000.0, 4000.0)
    centres = spec.mel_center_hz
    assert np.all((centres[band] >= 2000.0) & (centres[band] <= 4000.0))
    assert centres[band.start - 1] < 2000.0
    assert centres[band.stop] > 4000.0
    with pytest.raises(ConfigurationError, match="no mel band"):
        spec.band_slice(3000.0, 3001.0)


def test_kernels_compile_without_a_cache_where_no_directory_is_writable() -> None:
    calls: list[dict[str, object]] = []

    class ReadOnlyNumba:
        """numba where every cache locator fails, as on a read-only root filesystem."""

        @staticmethod
        def njit(**options: object) -> object:
            calls.append(options)
            if options.get("cache"):
                raise RuntimeError("cannot cache function: no locator available")
            return lambda function: function

    def loop(x: int) -> int:
        return x + 1

    compiled = _jit(ReadOnlyNumba, loop, fastmath=True)
    assert compiled(1) == 2
    assert calls == [
        {"nogil": True, "cache": True, "fastmath": True},
        {"nogil": True, "fastmath": True},
    ]
