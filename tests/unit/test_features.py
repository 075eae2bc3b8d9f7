from __future__ import annotations

import random
from collections.abc import Iterable

import numpy as np
import pytest
import soxr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from soundsentry.audio._kernels import kernels
from soundsentry.audio.mel import MelSpec
from soundsentry.contracts import AudioChunk, FeatureWindow, SampleFormat, decode, encode
from soundsentry.exceptions import ConfigurationError, ContractError
from soundsentry.features.featurizer import (
    FeatureProfile,
    Featurizer,
    Window,
    window_from_proto,
    window_id,
    window_to_proto,
)
from tests.audio_fixtures import chunks, recording
from tests.unit.test_dsp import librosa_log_mel

PROFILES = (
    FeatureProfile("full"),
    FeatureProfile(
        "alarm-band",
        window_s=0.5,
        window_hop_s=0.25,
        band_fmin_hz=2000.0,
        band_fmax_hz=4000.0,
        standardize=True,
    ),
    FeatureProfile(
        "coarse",
        mel=MelSpec(n_fft=1024, hop_length=512, n_mels=40),
        window_s=2.0,
        window_hop_s=1.0,
    ),
)


def run(featurizer: Featurizer, stream: Iterable[AudioChunk]) -> list[Window]:
    windows: list[Window] = []
    for chunk in stream:
        result = featurizer.process([chunk])
        assert not result.rejected
        windows += result.windows
    return windows


def by_key(windows: Iterable[Window]) -> dict[tuple[str, int], Window]:
    return {(w.profile, w.start_sample): w for w in windows}


def assert_same_windows(got: list[Window], expected: list[Window]) -> None:
    got_map, expected_map = by_key(got), by_key(expected)
    assert got_map.keys() == expected_map.keys()
    for key, window in got_map.items():
        other = expected_map[key]
        assert window.window_id == other.window_id
        assert window.log_mel_db.shape == other.log_mel_db.shape
        assert np.abs(window.log_mel_db - other.log_mel_db).max() <= 1e-3
        assert window.rms_dbfs == pytest.approx(other.rms_dbfs, abs=1e-6)
        assert window.start_time_ns == other.start_time_ns


def assert_matches_librosa(windows: list[Window], y: np.ndarray) -> None:
    """Every window equals the matching frames of librosa over the whole signal."""
    references = {}
    for profile in PROFILES:
        references[profile.name] = (profile, librosa_log_mel(y, profile.mel))
    for window in windows:
        profile, reference = references[window.profile]
        first = window.start_sample // profile.mel.hop_length
        expected = reference[profile.band, first : first + profile.window_frames]
        if profile.standardize:
            expected = (expected - expected.mean()) / max(float(expected.std()), 1e-6)
        assert np.abs(window.log_mel_db - expected).max() <= 1e-3, window.profile


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(["siren", "dog_bark", "cough", "glass"]),
    sizes=st.lists(st.integers(min_value=1, max_value=9000), min_size=1, max_size=12),
)
def test_any_chunking_gives_the_whole_file_windows_and_librosa_frames(
    name: str, sizes: list[int]
) -> None:
    samples, rate = recording(name)
    whole = run(Featurizer(PROFILES), chunks(samples, rate))
    streamed = run(Featurizer(PROFILES), chunks(samples, rate, sizes))
    assert whole, "the recording is long enough for windows"
    assert_same_windows(streamed, whole)
    assert_matches_librosa(streamed, samples.astype(np.float64) / 32768.0)


@settings(max_examples=10, deadline=None)
@given(sizes=st.lists(st.integers(min_value=1, max_value=4000), min_size=1, max_size=8))
def test_resampled_sensors_stream_like_the_whole_file(sizes: list[int]) -> None:
    samples, rate = recording("baby_8k")
    assert rate == 8000
    whole = run(Featurizer(PROFILES), chunks(samples, rate))
    streamed = run(Featurizer(PROFILES), chunks(samples, rate, sizes))
    assert_same_windows(streamed, whole)
    # The featurizer's resampler is soxr's, so librosa gets the same 16 kHz signal.
    y16 = soxr.resample(samples.astype(np.float32) / 32768.0, rate, 16_000)
    assert_matches_librosa(streamed, y16.astype(np.float64))


def test_a_gap_resets_the_sensor_and_no_window_spans_it() -> None:
    samples, rate = recording("siren")
    all_chunks = list(chunks(samples, rate, [1600]))
    lost = set(range(12, 15))  # 300 ms of lost packets at 1.2 s
    featurizer = Featurizer(PROFILES)
    windows: list[Window] = []
    gaps = 0
    for i, chunk in enumerate(all_chunks):
        if i in lost:
            continue
        result = featurizer.process([chunk])
        windows += result.windows
        gaps += result.events["gap"]
    assert gaps == 1
    gap_start, gap_end = 12 * 1600, 15 * 1600
    for window in windows:
        start = window.start_sample * rate // window.sample_rate_hz
        end = start + window.num_samples * rate // window.sample_rate_hz
        assert end <= gap_start or start >= gap_end, (window.profile, start, end)
    # Windows after the gap sit on the same grid with the same content and ids as an
    # uninterrupted run.
    uninterrupted = by_key(run(Featurizer(PROFILES), chunks(samples, rate, [1600])))
    after = [w for w in windows if w.start_sample >= gap_end]
    assert after
    assert_same_windows(after, [uninterrupted[(w.profile, w.start_sample)] for w in after])


def test_repeated_and_late_chunks_are_dropped_and_counted() -> None:
    samples, rate = recording("dog_bark")
    ordered = list(chunks(samples, rate, [1600]))
    expected = run(Featurizer(PROFILES), ordered)
    featurizer = Featurizer(PROFILES)
    windows: list[Window] = []
    stale = 0
    for i, chunk in enumerate(ordered):
        for repeat in [chunk, ordered[max(i - 3, 0)]] if i else [chunk]:
            result = featurizer.process([repeat])
            windows += result.windows
            stale += result.events["stale_sequence"]
    assert stale == len(ordered) - 1
    assert_same_windows(windows, expected)


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        ({"stream_id": "rebooted", "sequence": 0, "start_sample": 0}, "stream_restart"),
        ({"start_sample": 123_456}, "sample_discontinuity"),
        ({"sample_rate_hz": 8000}, "format_change"),
    ],
)
def test_discontinuities_reset_the_sensor(change: dict[str, object], reason: str) -> None:
    samples, rate = recording("siren")
    stream = list(chunks(samples, rate, [1600]))
    featurizer = Featurizer(PROFILES)
    run(featurizer, stream[:10])
    odd = AudioChunk()
    odd.CopyFrom(stream[10])
    for field, value in change.items():
        setattr(odd, field, value)
    result = featurizer.process([odd])
    assert result.events[reason] == 1
    assert not result.windows  # a fresh start has too little audio for a window


def test_many_sensors_in_one_batch_equal_each_sensor_alone() -> None:
    names = ["siren", "dog_bark", "cough", "glass", "baby_8k"]
    streams = {}
    for n, name in enumerate(names):
        samples, rate = recording(name)
        streams[name] = list(chunks(samples, rate, [700 + 300 * n], sensor_id=name))
    alone = {name: run(Featurizer(PROFILES), stream) for name, stream in streams.items()}
    featurizer = Featurizer(PROFILES)
    together: list[Window] = []
    steps = max(len(s) for s in streams.values())
    for step in range(0, steps, 3):  # several chunks per sensor per batch
        batch = [c for s in streams.values() for c in s[step : step + 3]]
        result = featurizer.process(batch)
        assert not result.rejected
        together += result.windows
    for name in names:
        assert_same_windows([w for w in together if w.sensor_id == name], alone[name])
    assert featurizer.sensors == len(names)


def assert_identical(got: list[Window], expected: list[Window]) -> None:
    assert [w.window_id for w in got] == [w.window_id for w in expected]
    for mine, theirs in zip(got, expected, strict=True):
        np.testing.assert_array_equal(mine.log_mel_db, theirs.log_mel_db)
        assert mine.rms_dbfs == theirs.rms_dbfs
        assert mine.start_time_ns == theirs.start_time_ns


def test_forgotten_sensors_free_their_rows_for_new_ones_and_the_rest_stream_on() -> None:
    """Sensors come and go (rows reused, the slabs grow and shrink, rows move): every sensor's
    windows are exactly those of a featurizer that only ever saw that sensor."""
    names = ["siren", "dog_bark", "cough", "glass", "air_conditioner"]

    def stream(n: int) -> list[AudioChunk]:
        audio, rate = recording(names[n % len(names)])
        audio = np.resize(audio, 30 * 1600)  # 3 s, repeated if shorter
        return list(chunks(audio, rate, [1600], sensor_id=f"mic-{n}", first_sample=160 * n))

    streams = {n: stream(n) for n in range(60)}
    alone = {n: run(Featurizer(PROFILES), chunks_) for n, chunks_ in streams.items()}
    featurizer = Featurizer(PROFILES)
    got: dict[int, list[Window]] = {n: [] for n in streams}
    live = list(range(40))  # 40 sensors, then all but 5 leave, then 20 new ones join
    for step in range(30):
        if step == 10:
            for n in live[5:]:
                featurizer.forget(f"mic-{n}")
            live = live[:5] + list(range(40, 60))
        batch = [streams[n][step] for n in live]
        random.Random(step).shuffle(batch)
        for window in featurizer.process(batch).windows:
            got[int(window.sensor_id.removeprefix("mic-"))].append(window)
    assert featurizer.sensors == 25
    for n in range(5):
        assert_identical(got[n], alone[n])
    for n in range(40, 60):
        # New sensors start mid-stream at step 10, like a featurizer that starts there.
        assert_identical(got[n], run(Featurizer(PROFILES), streams[n][10:]))
    assert len({featurizer.state_bytes(f"mic-{n}") for n in live}) == 1
    assert featurizer.state_bytes("mic-6") == 0


def test_a_reset_inside_a_batch_drops_the_audio_queued_before_it() -> None:
    samples, rate = recording("siren")
    stream = list(chunks(samples, rate, [1600]))
    other = list(chunks(samples, rate, [1600], sensor_id="mic-2"))
    # Chunks 0-9 of mic-1, a gap, then 12-29 in one batch; mic-2 in between.
    batch = stream[:10] + other[:15] + stream[12:30] + other[15:30]
    windows = Featurizer(PROFILES).process(batch).windows
    fresh = Featurizer(PROFILES).process(stream[12:30]).windows
    assert_identical([w for w in windows if w.sensor_id == "mic-1"], fresh)


def test_many_resets_inside_one_batch_keep_only_the_audio_after_each_sensors_last() -> None:
    samples, rate = recording("siren")
    streams = [list(chunks(samples, rate, [1600], sensor_id=f"mic-{n}")) for n in range(6)]
    # Every sensor: chunks 0-9, a gap, 12-19, a gap, 22-35, all interleaved in one batch.
    parts = [range(10), range(12, 20), range(22, 36)]
    batch = [stream[i] for part in parts for i in part for stream in streams]
    windows = Featurizer(PROFILES).process(batch).windows
    for n, stream in enumerate(streams):
        fresh = Featurizer(PROFILES).process(stream[22:36]).windows
        assert fresh
        assert_identical([w for w in windows if w.sensor_id == f"mic-{n}"], fresh)


def test_a_reset_of_a_resampled_sensor_inside_a_batch_drops_the_audio_queued_before_it() -> None:
    samples, rate = recording("baby_8k")
    assert rate == 8000
    stream = list(chunks(samples, rate, [800]))
    other, other_rate = recording("siren")
    others = list(chunks(other, other_rate, [1600], sensor_id="mic-2"))
    # mic-1 (8 kHz, resampled) gets a gap inside the batch; mic-2 (16 kHz) streams on.
    batch = stream[:10] + others[:15] + stream[12:30] + others[15:30]
    windows = Featurizer(PROFILES).process(batch).windows
    fresh = Featurizer(PROFILES).process(stream[12:30]).windows
    assert fresh
    assert_identical([w for w in windows if w.sensor_id == "mic-1"], fresh)
    alone = Featurizer(PROFILES).process(others[:30]).windows
    assert_identical([w for w in windows if w.sensor_id == "mic-2"], alone)


def test_needed_from_follows_sensors_whose_rows_move_when_the_slabs_shrink() -> None:
    """100 sensors (slabs of 128 rows), then 80 leave: the slabs halve and the rows of the
    remaining sensors above the new size move down. Their needed_from, and their windows after
    the move, are those of featurizers that only ever saw each of them."""
    audio, rate = recording("siren")
    audio = np.resize(audio, 40 * 1600)

    def stream(n: int) -> list[AudioChunk]:
        return list(chunks(audio, rate, [1600], sensor_id=f"mic-{n}", first_sample=320 * n))

    streams = {n: stream(n) for n in range(100)}
    featurizer = Featurizer(PROFILES)
    for step in range(12):
        featurizer.process([streams[n][step] for n in range(100)])
    staying = list(range(80, 100))  # the highest rows: these move
    for n in range(80):
        featurizer.forget(f"mic-{n}")
    alone = {n: Featurizer(PROFILES) for n in staying}
    for n in staying:
        alone[n].process(streams[n][:12])
        assert featurizer.needed_from(f"mic-{n}") == alone[n].needed_from(f"mic-{n}")
    after = featurizer.process([streams[n][step] for step in range(12, 40) for n in staying])
    for n in staying:
        expected = alone[n].process(streams[n][12:40]).windows
        assert expected
        assert_identical([w for w in after.windows if w.sensor_id == f"mic-{n}"], expected)
        assert featurizer.needed_from(f"mic-{n}") == alone[n].needed_from(f"mic-{n}")


def test_a_batch_larger_than_any_before_is_laid_out_whole() -> None:
    """Regression: a sensor whose audio just fitted the old buffer, then one that did not, made
    the buffer's growth copy past its end (ValueError)."""
    samples, rate = recording("siren")
    featurizer = Featurizer()
    featurizer.process([next(chunks(samples[:1000], rate, sensor_id="a"))])
    result = featurizer.process(
        [
            next(chunks(samples[:1500], rate, sensor_id="b")),
            next(chunks(samples[:600], rate, sensor_id="c")),
        ]
    )
    assert result.frames == 4 + 1


def test_the_first_batch_compiles_nothing() -> None:
    """Every compiled loop is built for the argument types a batch passes before the first one
    (compiling in a batch costs a service seconds)."""
    featurizer = Featurizer(PROFILES)
    compiled = {name: len(loop.signatures) for name, loop in kernels()._asdict().items()}
    samples, rate = recording("siren")
    baby, baby_rate = recording("baby_8k")
    s16 = list(chunks(samples, rate, [1600]))
    as_f32 = s16[1]
    as_f32.sample_format = SampleFormat.SAMPLE_FORMAT_F32LE
    as_f32.pcm = (np.frombuffer(s16[1].pcm, dtype="<i2") / 32768).astype("<f4").tobytes()
    featurizer.process(s16[:1])
    featurizer.process([as_f32, *list(chunks(baby, baby_rate, [800], sensor_id="baby"))[:3]])
    assert {name: len(loop.signatures) for name, loop in kernels()._asdict().items()} == compiled


def test_a_bad_chunk_is_rejected_and_costs_the_batch_nothing_else() -> None:
    samples, rate = recording("siren")
    good = list(chunks(samples, rate, [1600], sensor_id="good"))
    other = list(chunks(samples, rate, [1600], sensor_id="other"))
    expected = run(Featurizer(PROFILES), good)
    featurizer = Featurizer(PROFILES)
    windows: list[Window] = []
    for step, (a, b) in enumerate(zip(good, other, strict=True)):
        broken = AudioChunk()
        broken.CopyFrom(b)
        if step == 5:
            broken.pcm = b"\x00" * 3  # odd byte count
        result = featurizer.process([a, broken])
        if step == 5:
            assert [(i, e.reason) for i, e in result.rejected] == [(1, "odd_byte_count")]
        windows += result.windows
    assert_same_windows([w for w in windows if w.sensor_id == "good"], expected)


def test_f32_and_multichannel_chunks_give_the_same_windows_as_s16() -> None:
    samples, rate = recording("cough")
    expected = run(Featurizer(PROFILES), chunks(samples, rate, [2000]))
    converted = []
    for chunk in chunks(samples, rate, [2000]):
        mono = np.frombuffer(chunk.pcm, dtype="<i2").astype(np.float32) / 32768.0
        stereo = np.repeat(mono, 2)
        chunk.sample_format = SampleFormat.SAMPLE_FORMAT_F32LE
        chunk.channels = 2
        chunk.pcm = stereo.astype("<f4").tobytes()
        converted.append(chunk)
    assert_same_windows(run(Featurizer(PROFILES), converted), expected)


def test_state_per_sensor_stays_bounded() -> None:
    samples, rate = recording("siren")
    long = np.tile(samples, 8)  # 32 s
    featurizer = Featurizer(PROFILES)
    sizes = []
    for chunk in chunks(long, rate, [1600]):
        featurizer.process([chunk])
        sizes.append(featurizer.state_bytes("mic-1"))
    assert max(sizes[100:]) == max(sizes[20:100])  # no growth after warm-up
    assert max(sizes) < 48 * 1024


def test_window_times_and_ids_follow_the_stream() -> None:
    samples, rate = recording("siren")
    windows = run(Featurizer(PROFILES), chunks(samples, rate, [1600], epoch_s=1_800_000_000))
    window = next(w for w in windows if w.profile == "full" and w.start_sample == 8000)
    assert window.start_time_ns == 1_800_000_000 * 10**9 + 500_000_000
    assert window.window_id == window_id("mic-1", "stream-a", "full", 8000)
    assert len({w.window_id for w in windows}) == len(windows)
    assert window.log_mel_db.shape == (64, 49)
    assert window.num_samples == 48 * 320 + 512
    band = next(w for w in windows if w.profile == "alarm-band")
    assert band.log_mel_db.shape == (PROFILES[1].num_bands, 24)
    assert abs(float(band.log_mel_db.mean())) < 1e-4
    assert float(band.log_mel_db.std()) == pytest.approx(1.0, abs=1e-3)


def test_rms_level_is_in_dbfs() -> None:
    rate = 16_000
    tone = (0.5 * np.sin(2 * np.pi * 1000 * np.arange(2 * rate) / rate) * 32767).astype(np.int16)
    windows = run(Featurizer(PROFILES[:1]), chunks(tone, rate, [1600]))
    # RMS of a sine of amplitude 0.5 is 0.354: -9.03 dB re full scale 1.0.
    assert all(w.rms_dbfs == pytest.approx(-9.03, abs=0.05) for w in windows)
    silence = run(Featurizer(PROFILES[:1]), chunks(np.zeros(rate * 2, np.int16), rate, [1600]))
    assert all(w.rms_dbfs == -120.0 for w in silence)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"name": ""}, "profile name"),
        ({"name": "a b"}, "profile name"),
        ({"name": "x", "window_s": 0.01}, "shorter than one FFT frame"),
        ({"name": "x", "window_hop_s": 0.001}, "shorter than one hop"),
        ({"name": "x", "band_fmin_hz": 7990.0, "band_fmax_hz": 7995.0}, "no mel band"),
    ],
)
def test_bad_profiles_are_named(kwargs: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        FeatureProfile(**kwargs)  # type: ignore[arg-type]


def test_featurizer_needs_unique_profiles() -> None:
    with pytest.raises(ConfigurationError, match="unique"):
        Featurizer([FeatureProfile("a"), FeatureProfile("a")])
    with pytest.raises(ConfigurationError, match="at least one"):
        Featurizer([])


def test_windows_round_trip_through_their_wire_form() -> None:
    samples, rate = recording("siren")
    windows = run(Featurizer(PROFILES), chunks(samples, rate, [1600]))
    for window in windows[:5]:
        back = window_from_proto(decode(FeatureWindow, encode(window_to_proto(window))))
        assert back.window_id == window.window_id
        assert back.start_time_ns == window.start_time_ns
        assert back.rms_dbfs == pytest.approx(window.rms_dbfs, rel=1e-6)
        np.testing.assert_array_equal(back.log_mel_db, window.log_mel_db)
    broken = window_to_proto(windows[0])
    broken.num_frames += 1
    with pytest.raises(ContractError, match="expected") as caught:
        window_from_proto(broken)
    assert caught.value.reason == "bad_window_shape"
    poisoned = window_to_proto(windows[0])
    values = np.frombuffer(poisoned.log_mel_db, dtype="<f4").copy()
    values[7] = np.nan
    poisoned.log_mel_db = values.tobytes()
    with pytest.raises(ContractError, match="NaN") as caught:
        window_from_proto(poisoned)
    assert caught.value.reason == "non_finite_window"


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cut=st.integers(1, 39), size=st.sampled_from([800, 1600, 2400]))
def test_a_featurizer_restarted_where_needed_from_says_rebuilds_the_rest_exactly(
    cut: int, size: int
) -> None:
    """What a crashed featurizer service relies on: replay from the chunk holding
    needed_from and the windows it had not finished come out the same."""
    samples, rate = recording("siren")
    profiles = [
        FeatureProfile("full-16k"),
        FeatureProfile("band", window_s=0.5, window_hop_s=0.25, band_fmin_hz=2000.0),
    ]
    stream = list(chunks(samples, rate, [size]))
    cut = min(cut, len(stream) - 1)
    first = Featurizer(profiles)
    before = first.process(stream[:cut]).windows
    needed = first.needed_from("mic-1")
    assert needed is not None
    stream_id, sample = needed
    assert stream_id == stream[0].stream_id
    after = first.process(stream[cut:]).windows
    # The first chunk that holds the needed sample, and everything after it, from scratch.
    start = max(i for i, c in enumerate(stream) if c.start_sample <= sample)
    assert start <= cut
    replayed = Featurizer(profiles).process(stream[start:]).windows
    done = {w.window_id for w in before}
    rebuilt = [w for w in replayed if w.window_id not in done]
    assert [w.window_id for w in rebuilt] == [w.window_id for w in after]
    for mine, theirs in zip(rebuilt, after, strict=True):
        np.testing.assert_array_equal(mine.log_mel_db, theirs.log_mel_db)
        assert mine.rms_dbfs == theirs.rms_dbfs


def test_a_sequence_jump_cannot_silence_a_sensor() -> None:
    # A broken counter jumps to 10**18; the sensor's next chunks (their own sequence again)
    # restart the stream instead of being refused as stale until the counter catches up.
    samples, rate = recording("siren")
    stream = list(chunks(samples, rate, [1600]))
    featurizer = Featurizer(PROFILES)
    run(featurizer, stream[:10])
    jump = AudioChunk()
    jump.CopyFrom(stream[10])
    jump.sequence = 10**18
    assert featurizer.process([jump]).events["gap"] == 1
    after = featurizer.process([stream[11]])
    assert after.events["sequence_restart"] == 1
    assert not after.events["stale_sequence"]
    windows = run(featurizer, stream[12:40])
    assert windows  # the sensor is heard again
