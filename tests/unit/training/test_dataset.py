from __future__ import annotations

import csv
import json
import struct
import zlib
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from soundsentry.audio.mel import num_frames
from soundsentry.audio.spectrogram_png import encode_png_gray, spectrogram_image
from soundsentry.cli import main as cli_main
from soundsentry.evaluation.sed_metrics import read_event_list
from soundsentry.exceptions import ConfigurationError
from soundsentry.training import dataset
from soundsentry.training.alarms import AlarmSignal
from soundsentry.training.dataset import (
    NO_LABEL,
    SPLITS,
    TARGET_LABELS,
    ClipLoader,
    Example,
    MixSpec,
    SourceClip,
    active_region,
    load_catalog,
    make_example,
    split_by_group,
    synthesize,
)
from tests.audio_fixtures import SHARED_DATA

RATE = 16_000
CREATED = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
COUNTS = {"train": 4, "validate": 2, "test": 2}
SMALL = MixSpec(duration_s=2.0)


@pytest.fixture(scope="module")
def catalog() -> list[SourceClip]:
    return load_catalog(SHARED_DATA)


@pytest.fixture(scope="module")
def train(catalog: list[SourceClip]) -> tuple[list[SourceClip], list[SourceClip]]:
    clips = split_by_group(catalog, seed=0)["train"]
    return (
        [clip for clip in clips if clip.role == "target"],
        [clip for clip in clips if clip.role != "target"],
    )


@pytest.fixture(scope="module")
def loader() -> ClipLoader:
    return ClipLoader(sample_rate_hz=RATE)


# --- catalog ---------------------------------------------------------------------------------


def test_catalog_maps_labels_with_the_counts_of_the_data_readme(
    catalog: list[SourceClip],
) -> None:
    assert len(catalog) == 3887
    assert Counter(clip.label for clip in catalog if clip.label) == {
        "glass_break": 212 + 5,  # the booth set's five GlassSmash recordings
        "gun_shot": 70,
        "siren": 177 + 196,  # emergency_sirens
        "car_horn": 78,
        "dog_bark": 200,
        "baby_cry": 457,
    }
    background = Counter(
        (clip.dataset, clip.source_label, clip.role) for clip in catalog if clip.label is None
    )
    urban = "urbansound8k_subset"
    others = {"dcase2016_task2_office", "dcase2016_task2_segments", "booth_household_sounds"}
    assert {k: v for k, v in background.items() if k[0] not in others} == {
        (urban, "air_conditioner", "ambience"): 200,
        (urban, "engine_idling", "ambience"): 196,
        (urban, "street_music", "ambience"): 200,
        (urban, "children_playing", "ambience"): 200,
        (urban, "drilling", "ambience"): 200,
        (urban, "jackhammer", "ambience"): 240,
        ("glassbreak_edgeimpulse", "background", "ambience"): 205,
        ("ambience_blanket", "background", "ambience"): 13,
        ("speech_commands_noise", "background", "ambience"): 6,
    }
    office = [k for k in background if k[0] == "dcase2016_task2_office"]
    assert len(office) == 11
    assert all(background[k] == 20 and k[2] == "event" for k in office)
    segments = [k for k in background if k[0] == "dcase2016_task2_segments"]
    assert len(segments) == 11
    assert all(background[k] == 54 and k[2] == "event" for k in segments)
    booth = [k for k in background if k[0] == "booth_household_sounds"]
    assert len(booth) == 44  # every household sound but the glass smashes is a negative
    assert all(k[2] == "event" for k in booth)
    assert {clip.licence for clip in catalog if clip.dataset == urban} == {"CC BY-NC 3.0"}


def test_catalog_groups_by_source_recording(catalog: list[SourceClip]) -> None:
    def groups(dataset_name: str, source_label: str) -> int:
        return len(
            {
                c.group
                for c in catalog
                if c.dataset == dataset_name and c.source_label == source_label
            }
        )

    # The data README: 91 + 72 glass-break recordings, 221 Donate-a-Cry installations.
    assert groups("glassbreak_edgeimpulse", "glass_break") == 91
    assert groups("glassbreak_edgeimpulse", "background") == 72
    assert groups("donateacry_babycry", "baby_cry") == 221
    assert groups("dcase2016_task2_office", "cough") == 20
    by_name = {clip.ref: clip for clip in catalog}
    assert by_name["urbansound8k_subset/audio/fold1/101415-3-0-2.flac"].group == (
        "urbansound8k_subset:101415"
    )
    # Neighbouring siren files probably come from one video: blocks of ten share a group.
    sirens = "emergency_sirens/audio/siren/sound_{}.flac"
    assert by_name[sirens.format(10)].group == by_name[sirens.format(19)].group
    assert by_name[sirens.format(19)].group != by_name[sirens.format(20)].group


def test_looped_clips_are_read_without_their_repeats(
    catalog: list[SourceClip], loader: ClipLoader
) -> None:
    looped = [clip for clip in catalog if clip.usable_s < clip.duration_s]
    assert len(looped) == 281  # the data README's count of looped=1 clips
    assert sum(clip.label == "gun_shot" for clip in looped) == 69
    clip = next(c for c in looped if c.ref.endswith("fold1/102106-3-0-0.flac"))
    assert clip.usable_s == pytest.approx(1.6406 - 0.01)
    assert loader.load(clip).size == round(clip.usable_s * RATE)


def test_the_8_khz_baby_cries_are_resampled(catalog: list[SourceClip], loader: ClipLoader) -> None:
    clip = next(c for c in catalog if c.label == "baby_cry")
    assert clip.sample_rate_hz == 8_000
    audio = loader.load(clip)
    assert audio.dtype == np.float32
    assert audio.size == pytest.approx(clip.duration_s * RATE, abs=2)


def test_catalog_names_a_missing_data_dir(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_catalog(tmp_path / "nowhere")


# --- splits ----------------------------------------------------------------------------------


def test_split_keeps_every_group_in_one_split(catalog: list[SourceClip]) -> None:
    splits = split_by_group(catalog, seed=3)
    assert set(splits) == set(SPLITS)
    groups = {name: {clip.group for clip in clips} for name, clips in splits.items()}
    assert not groups["train"] & groups["validate"]
    assert not groups["train"] & groups["test"]
    assert not groups["validate"] & groups["test"]
    assert sorted(c.ref for clips in splits.values() for c in clips) == sorted(
        c.ref for c in catalog
    )
    for label in TARGET_LABELS:
        counts = [sum(clip.label == label for clip in splits[name]) for name in SPLITS]
        assert all(counts), (label, counts)
        assert 0.6 <= counts[0] / sum(counts) <= 0.8, (label, counts)


def test_scene_recordings_go_where_scene_splits_says(catalog: list[SourceClip]) -> None:
    # The held-out scenes are what the detection benchmark's background hours are made of.
    scenes = {"ambience_blanket", "speech_commands_noise"}
    for seed in (0, 7):
        splits = split_by_group(catalog, seed=seed)
        for name, clips in splits.items():
            for clip in clips:
                if clip.dataset in scenes:
                    assert dataset.SCENE_SPLITS.get(clip.group, "train") == name, clip.ref
    assert set(dataset.SCENE_SPLITS.values()) == {"validate", "test"}


def test_the_office_sets_which_share_sources_never_reach_test(catalog: list[SourceClip]) -> None:
    splits = split_by_group(catalog, seed=7)
    office = {"dcase2016_task2_office", "dcase2016_task2_segments"}
    assert not [clip for clip in splits["test"] if clip.dataset in office]
    for name in ("train", "validate"):
        assert any(clip.dataset == "dcase2016_task2_segments" for clip in splits[name])


def test_split_is_deterministic_for_a_seed(catalog: list[SourceClip]) -> None:
    def refs(seed: int) -> dict[str, list[str]]:
        return {k: [c.ref for c in v] for k, v in split_by_group(catalog, seed=seed).items()}

    assert refs(5) == refs(5)
    assert refs(5) != refs(6)


@pytest.mark.parametrize("fractions", [(0.5, 0.5, 0.5), (1.2, -0.1, -0.1)])
def test_split_rejects_bad_fractions(
    catalog: list[SourceClip], fractions: tuple[float, float, float]
) -> None:
    with pytest.raises(ConfigurationError, match="fractions"):
        split_by_group(catalog, fractions=fractions, seed=0)


# --- mixing ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("snr_db", (10.0, 0.0)),
        ("max_background_layers", 0),
        ("target_probability", 1.5),
        ("alarm_labels", ("fire_bell",)),
        ("background_dbfs", (-20.0, 6.0)),
        ("alarm_variety", -0.1),
        ("alarm_burst_share", 2.0),
        ("burst_share", -0.1),
        ("speed_range", 0.6),
        ("speed_range", -0.1),
        ("reverb_share", 1.5),
        ("min_ambience_s", -1.0),
    ],
)
def test_mix_spec_names_what_is_wrong(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field):
        MixSpec(**{field: value})


def test_active_region_finds_a_burst_in_silence() -> None:
    rng = np.random.default_rng(0)
    audio = np.zeros(RATE, dtype=np.float32)
    audio[8_000:12_800] = rng.standard_normal(4_800).astype(np.float32) * 0.1  # 0.5..0.8 s
    audio[:8_000] = rng.standard_normal(8_000).astype(np.float32) * 0.001  # 40 dB down
    region = active_region(audio, sample_rate_hz=RATE, threshold_db=20.0)
    assert region is not None
    assert region[0] / RATE == pytest.approx(0.5, abs=0.02)
    assert region[1] / RATE == pytest.approx(0.8, abs=0.02)
    assert active_region(np.zeros(RATE, dtype=np.float32), sample_rate_hz=RATE) is None


def _event_mask(example: Example) -> npt.NDArray[np.bool_]:
    mask = np.zeros(example.audio.size, dtype=bool)
    for event in example.events:
        mask[round(event.onset_s * RATE) : round(event.offset_s * RATE)] = True
    return mask


def _db(x: npt.NDArray[np.floating]) -> float:
    return float(10 * np.log10(np.mean(np.square(x, dtype=np.float64))))


@pytest.mark.parametrize("label", [None, *TARGET_LABELS, "smoke_alarm", "co_alarm"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("burst_share", [0.0, 1.0])
def test_make_example_mixes_at_the_drawn_snr(
    train: tuple[list[SourceClip], list[SourceClip]],
    loader: ClipLoader,
    label: str | None,
    seed: int,
    burst_share: float,
) -> None:
    targets, backgrounds = train
    spec = MixSpec(burst_share=burst_share)
    example = make_example(
        rng=np.random.default_rng([seed, 99]),
        spec=spec,
        targets=targets,
        backgrounds=backgrounds,
        target_label=label,
        loader=loader,
    )
    assert example.audio.dtype == np.float32
    assert example.audio.shape == (spec.num_samples,)
    assert 1 <= example.background_layers <= spec.max_background_layers
    assert len(example.sources) == example.background_layers + (label is not None)
    assert np.max(np.abs(example.audio)) <= 10 ** (spec.peak_dbfs / 20) + 1e-6
    assert example.target_audio is not None
    assert example.background_audio is not None
    np.testing.assert_allclose(
        example.audio, example.background_audio + example.target_audio, atol=1e-6
    )
    if label is None:
        assert example.labels == frozenset()
        assert example.events == []
        assert example.snr_db is None
        assert not np.any(example.target_audio)
        return
    assert example.labels == {label}
    assert example.events
    for event in example.events:
        assert event.label == label
        assert 0.0 <= event.onset_s < event.offset_s <= spec.duration_s
    assert example.snr_db is not None
    assert spec.snr_db[0] <= example.snr_db <= spec.snr_db[1]
    mask = _event_mask(example)
    measured = _db(example.target_audio[mask]) - _db(example.background_audio[mask])
    assert measured == pytest.approx(example.snr_db, abs=0.5)


@pytest.mark.parametrize("label", ["smoke_alarm", "co_alarm"])
def test_alarm_events_are_the_alarm_cycles(
    train: tuple[list[SourceClip], list[SourceClip]],
    loader: ClipLoader,
    monkeypatch: pytest.MonkeyPatch,
    label: str,
) -> None:
    made: list[AlarmSignal] = []
    real = dataset.synthesize_alarm

    def spy(*args: Any, **kwargs: Any) -> AlarmSignal:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(dataset, "synthesize_alarm", spy)
    spec = MixSpec(duration_s=12.0, alarm_burst_share=0.0)
    example = make_example(
        rng=np.random.default_rng(4),
        spec=spec,
        targets=train[0],
        backgrounds=train[1],
        target_label=label,
        loader=loader,
    )
    (signal,) = made
    assert [(e.onset_s, e.offset_s) for e in example.events] == [
        (a / RATE, b / RATE) for a, b in signal.cycles
    ]
    assert len(example.events) >= 2  # 12 s hold several T3 cycles and at least two T4 cycles
    assert example.target_audio is not None
    first = round(example.events[0].onset_s * RATE)
    peak = np.max(np.abs(example.target_audio))
    # Nothing sounds before the first cycle (FFT convolution leaves rounding noise only).
    assert np.max(np.abs(example.target_audio[:first]), initial=0.0) < 1e-6 * peak
    assert np.max(np.abs(example.target_audio[first : first + 16])) > 1e-3 * peak


BURSTS_S = ((0.5, 0.7), (1.5, 1.7), (2.5, 3.1))  # three barks of a 4 s clip


@pytest.fixture(scope="module")
def barks(tmp_path_factory: pytest.TempPathFactory) -> SourceClip:
    rng = np.random.default_rng(3)
    audio = np.zeros(4 * RATE, dtype=np.float32)
    for a, b in BURSTS_S:
        audio[round(a * RATE) : round(b * RATE)] = 0.3 * rng.standard_normal(
            round((b - a) * RATE)
        ).astype(np.float32)
    path = tmp_path_factory.mktemp("barks") / "barks.flac"
    soundfile.write(path, audio, RATE)
    return SourceClip(
        path=path,
        dataset="urbansound8k_subset",
        label="dog_bark",
        group="test:barks",
        licence="CC BY-NC 3.0",
        sample_rate_hz=RATE,
        duration_s=4.0,
    )


def _bark_examples(
    barks: SourceClip,
    train: tuple[list[SourceClip], list[SourceClip]],
    burst_share: float = 0.0,
    **variety: float,
) -> list[Example]:
    spec = MixSpec(burst_share=burst_share, **variety)
    return [
        make_example(
            rng=np.random.default_rng([seed, 7]),
            spec=spec,
            targets=[barks],
            backgrounds=train[1],
            target_label="dog_bark",
        )
        for seed in range(40)
    ]


def test_whole_clips_give_one_event_from_first_to_last_bark(
    barks: SourceClip, train: tuple[list[SourceClip], list[SourceClip]]
) -> None:
    for example in _bark_examples(barks, train, burst_share=0.0):
        (event,) = example.events
        assert event.offset_s - event.onset_s == pytest.approx(2.6, abs=0.03)


def test_burst_cuts_give_runs_of_barks_and_parts_of_one(
    barks: SourceClip, train: tuple[list[SourceClip], list[SourceClip]]
) -> None:
    runs = {  # every run of consecutive bursts, by length
        round(BURSTS_S[j][1] - BURSTS_S[i][0], 1)
        for i in range(len(BURSTS_S))
        for j in range(i, len(BURSTS_S))
    }
    seen: set[float] = set()
    parts = 0
    for example in _bark_examples(barks, train, burst_share=1.0):
        (event,) = example.events
        length = event.offset_s - event.onset_s
        if round(length, 1) in runs and abs(length - round(length, 1)) < 0.03:
            seen.add(round(length, 1))
        else:  # part of one burst: at least 150 ms, at most the longest burst
            assert 0.15 - 0.01 <= length <= 0.6
            parts += 1
        assert example.target_audio is not None
        # Nothing of a neighbouring bark is kept: the target is silent 50 ms off the event.
        outside = np.ones(example.target_audio.size, dtype=bool)
        outside[round((event.onset_s - 0.05) * RATE) : round((event.offset_s + 0.05) * RATE)] = (
            False
        )
        assert not np.any(example.target_audio[outside])
    assert {0.2, 2.6} <= seen  # single barks and the whole clip both occur
    assert parts > 0


def test_make_example_names_an_unknown_target_label(
    train: tuple[list[SourceClip], list[SourceClip]],
) -> None:
    with pytest.raises(ConfigurationError, match="fire_bell"):
        make_example(
            rng=np.random.default_rng(0),
            spec=SMALL,
            targets=train[0],
            backgrounds=train[1],
            target_label="fire_bell",
        )


# --- images ----------------------------------------------------------------------------------


def _png_chunks(data: bytes) -> Iterator[tuple[bytes, bytes]]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    position = 8
    while position < len(data):
        (length,) = struct.unpack(">I", data[position : position + 4])
        kind = data[position + 4 : position + 8]
        body = data[position + 8 : position + 8 + length]
        (crc,) = struct.unpack(">I", data[position + 8 + length : position + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        yield kind, body
        position += 12 + length


def _decode_png(data: bytes) -> npt.NDArray[np.uint8]:
    chunks = list(_png_chunks(data))
    assert [kind for kind, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    width, height, depth, colour, _, _, _ = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, colour) == (8, 0)  # 8-bit grayscale
    rows = np.frombuffer(zlib.decompress(chunks[1][1]), dtype=np.uint8).reshape(height, width + 1)
    assert not np.any(rows[:, 0])  # filter type None
    return rows[:, 1:]


def test_png_encoder_round_trips() -> None:
    pixels = np.arange(64 * 99, dtype=np.uint32).reshape(64, 99).astype(np.uint8)
    np.testing.assert_array_equal(_decode_png(encode_png_gray(pixels)), pixels)
    with pytest.raises(ConfigurationError, match="uint8"):
        encode_png_gray(np.zeros((4, 4), dtype=np.float32))  # type: ignore[arg-type]


def test_spectrogram_image_puts_low_frequencies_at_the_bottom() -> None:
    db = np.full((64, 10), -80.0)
    db[0] = 0.0  # the lowest mel band is loud
    image = spectrogram_image(db, min_size_px=64)
    assert image.shape == (64, 70)  # 10 frames stretched to at least 64 px
    assert np.all(image[-1] == 255)
    assert np.all(image[0] == 0)


# --- synthesize ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "data"
    synthesize(
        data_dir=SHARED_DATA,
        out_dir=out,
        examples_per_split=COUNTS,
        spec=SMALL,
        seed=11,
        rekognition=True,
        created_utc=CREATED,
    )
    return out


def _rows(out: Path) -> list[dict[str, str]]:
    with (out / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_synthesize_writes_flacs_that_match_the_manifest(synthesized: Path) -> None:
    rows = _rows(synthesized)
    assert Counter(row["split"] for row in rows) == COUNTS
    assert sorted(p.relative_to(synthesized).as_posix() for p in synthesized.glob("*/*.flac")) == (
        sorted(row["path"] for row in rows)
    )
    for row in rows:
        info = soundfile.info(str(synthesized / row["path"]))
        assert (info.format, info.subtype, info.channels) == ("FLAC", "PCM_16", 1)
        assert (info.samplerate, info.frames) == (RATE, 2 * RATE)
        assert row["path"].startswith(f"{row['split']}/")
        events = json.loads(row["events"])
        labels = set(filter(None, row["labels"].split(";")))
        assert {label for label, _, _ in events} == labels
        assert len(labels) <= 1
        assert all(0.0 <= onset < offset <= 2.0 for _, onset, offset in events)
        assert (row["snr_db"] == "") == (not labels)
        assert 1 <= int(row["background_layers"]) <= 3
        assert row["sources"]
        assert row["licences"]


def test_each_split_has_a_reference_that_evaluate_reads(synthesized: Path) -> None:
    rows = _rows(synthesized)
    for split in COUNTS:
        reference = read_event_list(synthesized / split / "reference.tsv")
        expected = sorted(
            (row["path"], label, round(onset, 3), round(offset, 3))
            for row in rows
            if row["split"] == split
            for label, onset, offset in json.loads(row["events"])
        )
        got = sorted((e.file_id, e.label, e.onset_s, e.offset_s) for e in reference)
        assert got == expected
        listed = (synthesized / split / "reference.tsv").read_text().splitlines()
        assert {line.split("\t")[0] for line in listed} == {
            row["path"] for row in rows if row["split"] == split
        }  # files without events are listed too


def test_synthesize_lists_the_licences(synthesized: Path) -> None:
    rows = _rows(synthesized)
    used = {s.split("/", 1)[0] for row in rows for s in row["sources"].split(";") if "/" in s}
    assert "urbansound8k_subset" in used  # this seed uses it; the checks below need it
    text = (synthesized / "LICENCES.txt").read_text(encoding="utf-8")
    assert "CC BY-NC 3.0" in text
    assert "NON-COMMERCIAL USE ONLY" in text
    assert all(name in text for name in used)
    assert (synthesized / "FREESOUNDCREDITS.txt").is_file()
    urban_rows = [row for row in rows if "urbansound8k_subset/" in row["sources"]]
    assert all("non-commercial use only" in row["licences"] for row in urban_rows)
    for name in ("glassbreak_edgeimpulse", "dcase2016_task2_office"):
        if name in used:
            assert "NONE STATED" in text


def test_synthesize_writes_the_rekognition_layout(synthesized: Path) -> None:
    rows = {Path(row["path"]).stem: row for row in _rows(synthesized)}
    root = synthesized / "rekognition"
    pngs = sorted(root.glob("*/*/*.png"))
    assert len(pngs) == len(rows)
    for png in pngs:
        split, class_name = png.parent.parent.name, png.parent.name
        row = rows[png.stem]
        assert split == row["split"]
        assert class_name == (row["labels"] or NO_LABEL)
        image = _decode_png(png.read_bytes())
        assert image.shape == (64, num_frames(2 * RATE, n_fft=512, hop_length=320))
    for split in SPLITS:
        lines = [
            json.loads(line)
            for line in (root / f"{split}.manifest").read_text(encoding="utf-8").splitlines()
        ]
        assert len(lines) == COUNTS[split]
        for line in lines:
            metadata = line["soundsentry-class-metadata"]
            assert (root / line["source-ref"]).is_file()
            assert line["source-ref"].split("/")[:2] == [split, metadata["class-name"]]
            assert metadata["type"] == "groundtruth/image-classification"
            assert metadata["creation-date"] == "2025-01-02T03:04:05.000"
            assert isinstance(line["soundsentry-class"], int)


def test_synthesize_is_deterministic_for_a_seed(synthesized: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    synthesize(
        data_dir=SHARED_DATA,
        out_dir=again,
        examples_per_split=COUNTS,
        spec=SMALL,
        seed=11,
        rekognition=True,
        created_utc=CREATED,
    )
    for name in ("manifest.csv", "rekognition/train.manifest", "LICENCES.txt"):
        assert (again / name).read_bytes() == (synthesized / name).read_bytes(), name
    first = sorted(synthesized.glob("*/*.flac"))
    assert [soundfile.read(p, dtype="int16")[0].tobytes() for p in first] == [
        soundfile.read(again / p.relative_to(synthesized), dtype="int16")[0].tobytes()
        for p in first
    ]
    other = tmp_path / "other"
    synthesize(
        data_dir=SHARED_DATA,
        out_dir=other,
        examples_per_split={"train": 4},
        spec=SMALL,
        seed=12,
    )
    assert _rows(other) != [row for row in _rows(synthesized) if row["split"] == "train"]


def test_synthesize_refuses_a_non_empty_output_dir(tmp_path: Path) -> None:
    (tmp_path / "keep.txt").write_text("mine", encoding="utf-8")
    with pytest.raises(ConfigurationError, match="not empty"):
        synthesize(data_dir=SHARED_DATA, out_dir=tmp_path, examples_per_split={}, seed=0)


def test_main_runs_the_synth_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOUNDSENTRY_DATA_DIR", str(SHARED_DATA))
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--train", "2", "--validate", "1", "--test", "1"]
    assert cli_main(["dataset", "synth", *argv, "--duration-s", "1.0", "--seed", "3"]) == 0
    assert len(_rows(out)) == 4
    monkeypatch.delenv("SOUNDSENTRY_DATA_DIR")
    assert cli_main(["dataset", "synth", "--out", str(tmp_path / "none")]) == 2


def test_burst_cuts_fit_examples_shorter_than_the_shortest_cut(
    barks: SourceClip, train: tuple[list[SourceClip], list[SourceClip]]
) -> None:
    spec = MixSpec(duration_s=0.1, burst_share=1.0)
    for seed in range(20):
        example = make_example(
            rng=np.random.default_rng([seed, 8]),
            spec=spec,
            targets=[barks],
            backgrounds=train[1],
            target_label="dog_bark",
        )
        assert example.audio.size == spec.num_samples
        assert all(0.0 <= e.onset_s < e.offset_s <= 0.1 for e in example.events)


# --- varied sources --------------------------------------------------------------------------


def _note(source: str, key: str) -> float | None:
    """A ``&key=value`` of a source description, None when absent."""
    for part in source.split("&")[1:]:
        name, _, value = part.partition("=")
        if name == key:
            return float(value)
    return None


def test_a_faster_bark_is_a_shorter_event(
    barks: SourceClip, train: tuple[list[SourceClip], list[SourceClip]]
) -> None:
    speeds = []
    for example in _bark_examples(barks, train, speed_range=0.2):
        (event,) = example.events
        speed = _note(example.sources[0], "speed")
        assert speed is not None
        assert 1 / 1.2 - 1e-3 <= speed <= 1.2 + 1e-3
        assert _note(example.sources[0], "rt60_s") is None
        # First bark to last, 2.6 s as recorded, found on 20 ms frames 10 ms apart (the
        # resampler's ringing can add a frame at either end).
        assert event.offset_s - event.onset_s == pytest.approx(2.6 / speed, abs=0.05)
        # The source times are the clip's own: first bark at 0.5 s, last ending at 3.1 s, with
        # 50 ms of the sped-up clip either side.
        start, end = (float(t) for t in example.sources[0].split("#t=")[1].split("&")[0].split(","))
        assert start == pytest.approx(0.5 - 0.05 * speed, abs=0.03)
        assert end == pytest.approx(3.1 + 0.05 * speed, abs=0.03)
        speeds.append(speed)
    assert min(speeds) < 0.95
    assert max(speeds) > 1.05


def test_a_bark_in_a_room_keeps_its_event_and_rings_after_it(
    barks: SourceClip, train: tuple[list[SourceClip], list[SourceClip]]
) -> None:
    dry = _bark_examples(barks, train)
    wet = _bark_examples(barks, train, reverb_share=1.0)
    rang = 0
    for before, after in zip(dry, wet, strict=True):
        assert _note(after.sources[0], "rt60_s") is not None
        assert after.events == before.events
        assert after.target_audio is not None
        assert before.target_audio is not None
        (event,) = after.events
        onset, offset = round(event.onset_s * RATE), round(event.offset_s * RATE)
        peak = np.max(np.abs(after.target_audio))
        # Silent before the direct sound (the clip's 50 ms of padding before the first bark).
        lead = after.target_audio[: onset - round(0.05 * RATE)]
        assert np.max(np.abs(lead), initial=0.0) < 1e-6 * peak
        # The room's tail sounds past the last bark's padding, where the dry one is silent.
        tail = slice(offset + round(0.06 * RATE), offset + round(0.08 * RATE))
        if tail.stop <= after.target_audio.size:
            assert not np.any(before.target_audio[tail])
            assert np.max(np.abs(after.target_audio[tail])) > 1e-3 * peak
            rang += 1
    assert rang >= len(wet) - 2  # a bark placed at the very end has no room for its tail


def test_variety_keeps_an_examples_labels_layers_and_sources(
    train: tuple[list[SourceClip], list[SourceClip]], loader: ClipLoader
) -> None:
    targets, backgrounds = train
    varied_events = 0
    for seed in range(12):
        label = (None, *TARGET_LABELS)[seed % (len(TARGET_LABELS) + 1)]
        plain, varied = (
            make_example(
                rng=np.random.default_rng([seed, 5]),
                spec=MixSpec(**variety),
                targets=targets,
                backgrounds=backgrounds,
                target_label=label,
                loader=loader,
            )
            for variety in ({}, {"speed_range": 0.2, "reverb_share": 1.0})
        )
        assert varied.labels == plain.labels
        assert varied.background_layers == plain.background_layers
        # The same clips; the background layers cut from the same places (the end moves for a
        # slower one), the target from where its sped-up clip has its sound.
        assert [s.split("#")[0] for s in varied.sources] == [s.split("#")[0] for s in plain.sources]
        first = 1 if label else 0
        assert [s.split(",")[0] for s in varied.sources[first:]] == [
            s.split(",")[0] for s in plain.sources[first:]
        ]
        assert varied.target_audio is not None
        assert varied.background_audio is not None
        np.testing.assert_allclose(
            varied.audio, varied.background_audio + varied.target_audio, atol=1e-6
        )
        # The target (first) is heard in a room; the first background layer is ambience, a
        # scene, never varied; a further layer is when it is an isolated event.
        backgrounds_described = varied.sources[1:] if label else varied.sources
        if label:
            assert _note(varied.sources[0], "rt60_s") is not None
        assert "&" not in backgrounds_described[0]
        varied_events += sum("&rt60_s=" in source for source in backgrounds_described[1:])
    assert varied_events > 0


def test_synthesize_varies_the_training_split_only(tmp_path: Path) -> None:
    counts = {"train": 6, "validate": 3, "test": 3}
    varied_spec = MixSpec(duration_s=2.0, speed_range=0.2, reverb_share=1.0)
    for name, spec in (("plain", SMALL), ("varied", varied_spec)):
        synthesize(
            data_dir=SHARED_DATA,
            out_dir=tmp_path / name,
            examples_per_split=counts,
            spec=spec,
            seed=11,
            created_utc=CREATED,
        )
    plain, varied = _rows(tmp_path / "plain"), _rows(tmp_path / "varied")
    for before, after in zip(plain, varied, strict=True):
        audio = [
            soundfile.read(tmp_path / name / before["path"], dtype="int16")[0]
            for name in ("plain", "varied")
        ]
        if before["split"] == "train":
            assert after["labels"] == before["labels"]
        else:
            assert after == before
            np.testing.assert_array_equal(audio[0], audio[1])
    train_sources = [row["sources"] for row in varied if row["split"] == "train"]
    assert any("&speed=" in sources and "&rt60_s=" in sources for sources in train_sources)


def test_main_passes_the_variety_to_the_mixer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SOUNDSENTRY_DATA_DIR", str(SHARED_DATA))
    out = tmp_path / "cli"
    argv = ["--out", str(out), "--train", "6", "--validate", "0", "--test", "0", "--seed", "3"]
    assert cli_main(["dataset", "synth", *argv, "--speed-range", "0.1", "--reverb-share", "1"]) == 0
    rows = _rows(out)
    assert any("&speed=" in row["sources"] and "&rt60_s=" in row["sources"] for row in rows)
    bad = ["--out", str(tmp_path / "bad"), "--speed-range", "0.9"]
    assert cli_main(["dataset", "synth", *bad]) == 2


def test_a_varied_background_event_keeps_the_level_it_was_drawn_at(
    train: tuple[list[SourceClip], list[SourceClip]], loader: ClipLoader
) -> None:
    _, backgrounds = train
    events = [clip for clip in backgrounds if clip.role == "event"]
    ambience = [clip for clip in backgrounds if clip.role == "ambience"]
    ratios = []
    for seed in range(10):
        plain, varied = (
            make_example(
                rng=np.random.default_rng([seed, 6]),
                spec=MixSpec(max_background_layers=3, **variety),
                targets=[],
                backgrounds=[ambience[seed % len(ambience)], *events],
                target_label=None,
                loader=loader,
            )
            for variety in ({}, {"reverb_share": 1.0})
        )
        assert plain.background_audio is not None
        assert varied.background_audio is not None
        extra = plain.background_audio - varied.background_audio
        if not np.any(extra):
            continue  # one layer only: nothing to vary
        ratios.append(
            np.sum(np.square(varied.background_audio, dtype=np.float64))
            / np.sum(np.square(plain.background_audio, dtype=np.float64))
        )
    assert ratios
    # A unit-energy room keeps an event's energy (less the tail cut at the example's end).
    assert 10 * np.log10(np.array(ratios)) == pytest.approx(np.zeros(len(ratios)), abs=1.5)


@pytest.mark.parametrize("seed", range(6))
def test_a_background_event_at_another_speed_stays_whole_inside_the_example(
    barks: SourceClip, seed: int
) -> None:
    n = 2 * RATE
    rng = np.random.default_rng(seed)
    short = (0.3 * rng.standard_normal(RATE // 2)).astype(np.float32)  # 0.5 s
    long = (0.3 * rng.standard_normal(RATE + RATE // 2 + RATE // 4)).astype(np.float32)  # 1.75 s
    slower = dataset._Variety(speed=1 / 1.2)
    for audio in (short, long):
        plain, plain_ref, plain_level = dataset._event_layer(
            barks, audio, n, np.random.default_rng(seed), RATE
        )
        slow, slow_ref, slow_level = dataset._event_layer(
            barks, audio, n, np.random.default_rng(seed), RATE, heard=slower
        )
        assert slow_level == plain_level  # the level as recorded
        sounding = np.flatnonzero(np.abs(slow) > 1e-4)
        played = audio.size * 1.2
        if played <= n:  # all of it, 1.2 times as long, wherever it was placed
            assert sounding[-1] - sounding[0] == pytest.approx(played, abs=0.02 * RATE)
            # Its energy, 1.2 times as long, less the top of white noise's band (the
            # resampler's pass band ends short of 8 kHz).
            energy = 1.2 * np.sum(np.square(plain))
            assert np.sum(np.square(slow)) == pytest.approx(energy, rel=0.08)
            assert slow_ref == plain_ref + "&speed=0.833"
        else:  # longer than the example: its start, to the example's end
            assert sounding[0] < 0.01 * RATE
            assert sounding[-1] > n - 0.01 * RATE
            assert slow_ref == f"{barks.ref}#t=0.000,{n / 1.2 / RATE:.3f}&speed=0.833"
