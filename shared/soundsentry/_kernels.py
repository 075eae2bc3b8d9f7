"""Compiled inner loops of the log-mel front end (numba, which librosa already depends on).

numpy spends most of a small frame's time in passes over temporaries: gather, window, square,
transpose, project. These loops do each frame in one pass, in cache. They are compiled on first
use (:func:`kernels`, called when a front end is built), never at import time, and without an
on-disk cache so a read-only root filesystem is fine; compiling takes about a second, once per
process.

Neither function checks bounds: :class:`soundsentry.dsp.MelFrontEnd` checks its inputs first.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["Kernels", "kernels"]

F64 = npt.NDArray[np.float64]


def _frames(signal: F64, starts: npt.NDArray[np.intp], window: F64, out: F64, sq: F64) -> None:
    # out[i] = window * signal[starts[i] : starts[i] + n_fft]; sq[i] = sum of the raw squares.
    # Unsigned indices: with signed ones numba adds negative-index wraparound, which makes LLVM's
    # overlap check conservative, and when numpy happens to place `out` just after `signal` the
    # loop runs unvectorized, summing the squares in another order (levels then differ in the
    # last bit from run to run).
    n_fft = np.uint64(window.size)
    for i in range(starts.size):
        s = np.uint64(starts[i])
        acc = 0.0
        for j in range(n_fft):
            x = signal[s + j]
            acc += x * x
            out[i, j] = x * window[j]
        sq[i] = acc


def _mel_power(  # noqa: PLR0917 - a compiled kernel takes its arrays positionally
    spectrum: npt.NDArray[np.complex128],
    weights: F64,
    first_bin: npt.NDArray[np.intp],
    stop_bin: npt.NDArray[np.intp],
    power: F64,
    out: F64,
) -> None:
    # out[i, m] = sum_k weights[m, k] * |spectrum[i, k]|^2 over the bins where band m's
    # triangle is non-zero, summed in ascending k like a CSR product (librosa parity).
    bins = power.size
    for i in range(spectrum.shape[0]):
        for k in range(bins):
            c = spectrum[i, k]
            power[k] = c.real * c.real + c.imag * c.imag
        for m in range(weights.shape[0]):
            acc = 0.0
            for k in range(first_bin[m], stop_bin[m]):
                acc += weights[m, k] * power[k]
            out[i, m] = acc


class Kernels(NamedTuple):
    frames: Callable[[F64, npt.NDArray[np.intp], F64, F64, F64], None]
    mel_power: Callable[
        [npt.NDArray[np.complex128], F64, npt.NDArray[np.intp], npt.NDArray[np.intp], F64, F64],
        None,
    ]


@cache
def kernels() -> Kernels:
    """The compiled loops (compiled on the first call in a process)."""
    import numba  # noqa: PLC0415 - compile on first use, not at import

    # fastmath only on the frame loop: its sum of squares feeds the RMS level, where
    # reassociation is harmless; the mel sums keep IEEE order for parity with librosa.
    frames = numba.njit(nogil=True, fastmath=True)(_frames)
    mel_power = numba.njit(nogil=True)(_mel_power)
    # Compile now, for the only argument types the front end passes, so that a service's
    # first batch does not pay for it.
    one, index = np.ones((1, 2)), np.zeros(1, dtype=np.intp)
    frames(np.ones(2), index, np.ones(2), one, np.empty(1))
    mel_power(np.ones((1, 2), dtype=np.complex128), one, index, index + 2, np.empty(2), one)
    return Kernels(frames=frames, mel_power=mel_power)
