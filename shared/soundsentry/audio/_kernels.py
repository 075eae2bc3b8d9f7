"""Compiled inner loops of the log-mel front end (numba, which librosa already depends on).

numpy spends most of a small frame's time in passes over temporaries: gather, window, square,
transpose, project. These loops do each frame in one pass, in cache. They are compiled on first
use (:func:`kernels`, called when a front end is built), never at import time. Compiling takes
about 6 s, so the machine code is cached on disk (numba's cache, beside this file or in
``NUMBA_CACHE_DIR``) where a directory is writable; on a read-only root filesystem each process
compiles once.

Neither function checks bounds: :class:`soundsentry.audio.mel.MelFrontEnd` checks its inputs first.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import cache
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

__all__ = ["Kernels", "kernels"]

F64 = npt.NDArray[np.float64]


def _frames(
    signal: F64 | npt.NDArray[np.float32],
    starts: npt.NDArray[np.intp],
    window: F64,
    out: F64,
    sq: F64,
) -> None:
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
            x = np.float64(signal[s + j])  # the featurizer's signal is float32
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
            row = weights[m]
            # Unsigned bounds: no negative-index wraparound in the loop (a third faster).
            for k in range(np.uint64(first_bin[m]), np.uint64(stop_bin[m])):
                acc += row[k] * power[k]
            out[i, m] = acc


def _gather(  # noqa: PLR0917 - a compiled kernel takes its arrays positionally
    audio: npt.NDArray[np.int16] | npt.NDArray[np.float32],
    entry_slot: npt.NDArray[np.intp],
    entry_offset: npt.NDArray[np.intp],
    entry_length: npt.NDArray[np.intp],
    tails: npt.NDArray[np.float32],
    tail_length: npt.NDArray[np.intp],
    skip: npt.NDArray[np.intp],
    hop: int,
    signal: npt.NDArray[np.float32],
    starts: npt.NDArray[np.intp],
    piece_slot: npt.NDArray[np.intp],
    piece_frames: npt.NDArray[np.intp],
) -> tuple[int, int]:
    # Entry i is audio[entry_offset[i] : + entry_length[i]] of the sensor in row entry_slot[i].
    # Sensors in order of first appearance, each one's entries in order: its tail, then its new
    # audio (less the skip) on the hop grid of `signal`; the frames' starts go to `starts`,
    # (row, frames) to the pieces, and the samples of the next unfinished frame back to the tail.
    n_fft = tails.shape[1]
    group_of = np.full(tails.shape[0], -1, dtype=np.intp)
    group_slot = np.empty(entry_slot.size, dtype=np.intp)
    group_end = np.zeros(entry_slot.size + 1, dtype=np.intp)
    groups = 0
    for i in range(entry_slot.size):
        s = entry_slot[i]
        if group_of[s] < 0:
            group_of[s] = groups
            group_slot[groups] = s
            groups += 1
        group_end[group_of[s] + 1] += 1
    for g in range(groups):
        group_end[g + 1] += group_end[g]
    order = np.empty(entry_slot.size, dtype=np.intp)
    fill = group_end[:groups].copy()
    for i in range(entry_slot.size):
        g = group_of[entry_slot[i]]
        order[fill[g]] = i
        fill[g] += 1
    position = 0
    pieces = 0
    frames = 0
    for g in range(groups):
        s = group_slot[g]
        length = tail_length[s]
        # Slice copies: numba's element indexing checks for negative indices, which keeps
        # these loops from vectorizing.
        signal[position : position + length] = tails[s, :length]
        for e in range(group_end[g], group_end[g + 1]):
            lo = entry_offset[order[e]]
            size = entry_length[order[e]]
            cut = skip[s]
            if cut >= size:
                skip[s] = cut - size
                continue
            skip[s] = 0
            signal[position + length : position + length + size - cut] = audio[lo + cut : lo + size]
            length += size - cut
        if length < n_fft:
            tails[s, :length] = signal[position : position + length]
            tail_length[s] = length
            continue
        count = (length - n_fft) // hop + 1
        kept = count * hop
        tails[s, : length - kept] = signal[position + kept : position + length]
        tail_length[s] = length - kept
        for j in range(count):
            starts[frames + j] = position + j * hop
        frames += count
        piece_slot[pieces] = s
        piece_frames[pieces] = count
        pieces += 1
        position += (length + hop - 1) // hop * hop
    return pieces, frames


def _windows(  # noqa: PLR0915, PLR0917 - one kernel: count, then fill; arrays positionally
    log_mel: F64,
    level: F64,
    piece_slot: npt.NDArray[np.intp],
    piece_frames: npt.NDArray[np.intp],
    ring: npt.NDArray[np.float32],
    ring_level: F64,
    next_frame: npt.NDArray[np.intp],
    next_window: npt.NDArray[np.intp],
    hop_frames: npt.NDArray[np.intp],
    window_frames: npt.NDArray[np.intp],
    band_start: npt.NDArray[np.intp],
    band_stop: npt.NDArray[np.intp],
) -> tuple[npt.NDArray[np.float32], F64, npt.NDArray[np.intp]]:
    # Piece q's frames (rows of log_mel and level, in order) go into row piece_slot[q]'s ring,
    # frame f at f % capacity. A window is copied out, its bands transposed to (bands, frames),
    # as its last frame arrives: the ring needs to hold only the longest window.
    # Returns the window blocks and levels (flat) and one record per window, in the order
    # piece, profile, window number: (row, profile, window number, block offset, level offset).
    capacity = ring.shape[1]
    profiles = hop_frames.size
    windows = 0
    values = 0
    levels = 0
    for q in range(piece_slot.size):
        end = next_frame[piece_slot[q]] + piece_frames[q]
        for p in range(profiles):
            k = next_window[piece_slot[q], p]
            last = end - window_frames[p]  # window k is complete when k * hop_frames <= last
            if last >= k * hop_frames[p]:
                n = last // hop_frames[p] - k + 1
                windows += n
                values += n * (band_stop[p] - band_start[p]) * window_frames[p]
                levels += n * window_frames[p]
    blocks = np.empty(values, dtype=np.float32)
    block_level = np.empty(levels, dtype=np.float64)
    records = np.empty((windows, 5), dtype=np.intp)
    cursor = np.empty(profiles, dtype=np.intp)
    row = 0
    w = 0
    value = 0
    lev = 0
    for q in range(piece_slot.size):
        s = piece_slot[q]
        first = next_frame[s]
        end = first + piece_frames[q]
        # Records in the order piece, profile, window; offsets in the same order.
        for p in range(profiles):
            cursor[p] = w
            k = next_window[s, p]
            last = end - window_frames[p]
            while k * hop_frames[p] <= last:
                records[w, 0] = s
                records[w, 1] = p
                records[w, 2] = k
                records[w, 3] = value
                records[w, 4] = lev
                value += (band_stop[p] - band_start[p]) * window_frames[p]
                lev += window_frames[p]
                w += 1
                k += 1
        for f in range(first, end):
            r = f % capacity
            ring[s, r, :] = log_mel[row, :]
            ring_level[s, r] = level[row]
            row += 1
            for p in range(profiles):
                k = next_window[s, p]
                lo = k * hop_frames[p]
                if lo + window_frames[p] != f + 1:
                    continue
                out = records[cursor[p], 3]
                wf = window_frames[p]
                b0 = band_start[p]
                for t in range(wf):
                    frame = ring[s, (lo + t) % capacity, b0 : band_stop[p]]
                    for b in range(frame.size):
                        blocks[out + b * wf + t] = frame[b]
                    block_level[records[cursor[p], 4] + t] = ring_level[s, (lo + t) % capacity]
                cursor[p] += 1
                next_window[s, p] = k + 1
        next_frame[s] = end
    return blocks, block_level, records


Intp = npt.NDArray[np.intp]


class Kernels(NamedTuple):
    frames: Callable[[F64 | npt.NDArray[np.float32], Intp, F64, F64, F64], None]
    mel_power: Callable[[npt.NDArray[np.complex128], F64, Intp, Intp, F64, F64], None]
    gather: Callable[..., tuple[int, int]]
    windows: Callable[..., tuple[npt.NDArray[np.float32], F64, Intp]]


def _jit(numba: Any, function: Callable[..., Any], **options: Any) -> Any:
    try:
        return numba.njit(nogil=True, cache=True, **options)(function)
    except RuntimeError:  # numba found no writable cache directory
        return numba.njit(nogil=True, **options)(function)


@cache
def kernels() -> Kernels:
    """The compiled loops (compiled on the first call in a process)."""
    import numba  # noqa: PLC0415 - compile on first use, not at import

    # fastmath only on the frame loop: its sum of squares feeds the RMS level, where
    # reassociation is harmless; the mel sums keep IEEE order for parity with librosa.
    frames = _jit(numba, _frames, fastmath=True)
    mel_power = _jit(numba, _mel_power)
    gather = _jit(numba, _gather)
    windows = _jit(numba, _windows)
    # Compile now, for the only argument types the front end and the featurizer pass, so that a
    # service's first batch does not pay for it.
    one, index = np.ones((1, 2)), np.zeros(1, dtype=np.intp)
    for signal in (np.ones(2), np.ones(2, dtype=np.float32)):
        frames(signal, index, np.ones(2), one, np.empty(1))
    mel_power(np.ones((1, 2), dtype=np.complex128), one, index, index + 2, np.empty(2), one)
    tails, signal = np.zeros((1, 2), dtype=np.float32), np.empty(8, dtype=np.float32)
    # s16le records: int16 read-only (np.frombuffer over their bytes); others float32.
    for audio in (np.frombuffer(bytes(2), dtype=np.int16), np.zeros(1, dtype=np.float32)):
        state = np.zeros(1, dtype=np.intp), np.zeros(1, dtype=np.intp)  # tail length, skip
        out = np.empty(8, dtype=np.intp)
        gather(audio, index, index, index, tails, *state, 1, signal, out, out, out)
    ring = np.zeros((1, 1, 2), dtype=np.float32)
    profile = (index + 1, index + 1, index, index + 1)  # hop, window, band start and stop
    windows(one, np.ones(1), index, index, ring, one, index, index.reshape(1, 1), *profile)
    return Kernels(frames=frames, mel_power=mel_power, gather=gather, windows=windows)
