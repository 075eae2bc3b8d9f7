"""Training examples mixed from recordings and synthetic alarms (``soundsentry dataset synth``).

Each example is ``duration_s`` of audio made of

- 1..``max_background_layers`` background layers: the first is always ambience (a random crop of
  a background recording, looped with 20 ms cross-fades when the recording is shorter); each
  further layer is drawn from all background material, so it is either more ambience or an
  isolated office event (DCASE2016) placed once at a random offset. Each layer gets a random
  RMS level from ``MixSpec.background_dbfs``;
- zero or one target sound at a random offset, scaled so that its RMS over its active region
  is ``snr_db`` above the RMS of the background over the same samples.

Labels are clip-level (the set of target labels, empty or one) and events
``(label, onset_s, offset_s)``.

**Active region of a real target clip.** The source datasets label whole clips only. The region
is estimated from the clip's energy envelope: RMS in 20 ms frames every 10 ms, and the region
runs from the first to the last frame whose RMS is within ``MixSpec.active_threshold_db``
(default 20 dB) of the clip's loudest frame. Quiet gaps inside it (between barks, between
cries) stay inside the one event. The target is placed as that region plus 50 ms of the clip on
either side (10 ms fades at the edges); when the region is longer than the example, a window of
the example's length that contains the loudest frame is cut from it and the event is
re-estimated inside the window with the same (whole-clip) threshold.

**Bursts.** With probability ``MixSpec.burst_share`` a real target is cut to a random run of its
bursts instead (at least one): a burst is a run of active frames, and bursts are separated by
at least 80 ms of frames below the threshold. A clip of barks then also yields one bark, a clip
of honks one honk: the source clips are mostly 4 s of repeats (UrbanSound8K), deployments hear
single ones as often. The cut keeps up to 50 ms either side but never reaches into the
neighbouring burst, and the event is the run. Half the runs of one burst longer than 300 ms
are shortened to a random part of it (log-uniform lengths from 150 ms): UrbanSound8K's car
horns are mostly one held horn, the street's are mostly short honks. Off by default: trained
with 0.5 (model v22 in docs/models.md) the detection benchmark's event F1 fell from 0.494 to
0.441 and recall within one false alarm an hour rose for no label but siren, so whole clips
stay the default.

**Varied sources** (training split only; off by default). With ``MixSpec.speed_range`` every real
target and isolated background event is played at a random speed (pitch and length together,
resampled with soxr), and with probability ``MixSpec.reverb_share`` it is heard through a
synthetic room (:func:`soundsentry.training.alarms.room_impulse_response`). The source datasets
hold a few hundred recordings of each sound; a deployment hears other dogs, other horns, in
other rooms. Negatives are varied alike, so a speed or a reverberant tail never tells a target
from a confuser. Events keep the direct sound's timing (a room's tail is not part of the event);
``sources`` append ``&speed=`` and ``&rt60_s=`` to a varied piece. The draws come from a child
generator, so an example keeps its labels, layers and sources when the variety is turned on.

**Synthetic alarms** (:func:`soundsentry.training.alarms.synthesize_alarm`) start at a random offset
and repeat to the end of the example. Their events are the exact pattern cycles (first tone start to
last tone end; reverberation tail excluded), one event per cycle: the gaps inside a cycle (0.5 s for
T3, 0.1 s for T4) are part of the pattern, the pauses between cycles (1.5 s, 5 s) separate events.
The SNR is measured over the samples covered by the cycles.

**Looped UrbanSound8K clips.** The source had tiled clips shorter than 4 s up to 4 s
(``looped=1``, ``orig_dur`` in ``note``). They are kept (gun_shot would lose 69 of its 70 clips
otherwise), but only their first ``orig_dur - 10 ms`` are read, i.e. the original recording
without the repeats and seams (in the 229 looped clips where the repeat could be found by
cross-correlation, it starts between 6.3 ms before and 4.6 ms after ``orig_dur``).
Background clips are treated the same way and then looped by the mixer with cross-fades.

**Caveats.** The estimate follows the loudest sound in the clip, which is not always the
target: UrbanSound8K rates many clips "background" salience (115 of 177 siren clips), where the
labelled sound is not the loudest. The ambience recordings are not checked for target sounds
(a street_music clip may hold a car horn). Looping a 1 s glass-break background chunk to fill
4 s repeats it audibly.

**Splits** are made by source recording (:func:`split_by_group`): UrbanSound8K Freesound id,
glass-break ``recording``, Donate-a-Cry app installation, DCASE file.

**Levels.** If a mixture would peak above ``MixSpec.peak_dbfs`` the whole mixture (target and
background alike) is scaled down, so the SNR is unchanged. Files are written as 16-bit FLAC.
"""

from __future__ import annotations

import csv
import json
import logging
import shutil
import zlib
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
import numpy.typing as npt

from soundsentry.audio.pcm import load_audio, to_s16
from soundsentry.audio.spectrogram_png import encode_png_gray, spectrogram_image
from soundsentry.exceptions import ConfigurationError
from soundsentry.training.alarms import (
    PATTERNS,
    room_impulse_response,
    synthesize_alarm,
    varied_pattern,
)

if TYPE_CHECKING:
    from soundsentry.audio.mel import MelFrontEnd

__all__ = [
    "DATASETS",
    "MANIFEST_FIELDS",
    "NO_LABEL",
    "SCENE_SPLITS",
    "SPLITS",
    "TARGET_LABELS",
    "ClipLoader",
    "ClipRole",
    "EventSpan",
    "Example",
    "MixSpec",
    "SourceClip",
    "active_region",
    "load_catalog",
    "make_example",
    "manifest_row",
    "split_by_group",
    "synthesize",
    "write_flac",
]

logger = logging.getLogger(__name__)

SPLITS: tuple[str, str, str] = ("train", "validate", "test")
NO_LABEL = "no_label"
TARGET_LABELS: tuple[str, ...] = (
    "glass_break",
    "gun_shot",
    "siren",
    "car_horn",
    "dog_bark",
    "baby_cry",
)

ClipRole = Literal["target", "ambience", "event"]
"""``target``: a labelled target sound; ``ambience``: background that can fill a whole example;
``event``: an isolated non-target sound (a distractor), placed once."""

_FRAME_S = 0.02
_HOP_S = 0.01
_TARGET_PAD_S = 0.05
_BURST_GAP_S = 0.08  # quieter than the threshold this long: the next bark, honk or shot
_SHORT_BURST_S = 0.15  # the shortest part of a burst a cut keeps
_EDGE_FADE_S = 0.01
_LOOP_FADE_S = 0.02
# Looped UrbanSound8K clips repeat from up to 6.3 ms before orig_dur: read 10 ms less.
_LOOP_SEAM_MARGIN_S = 0.01
# Mean square below this (-140 dBFS) is digital silence.
_SILENT_MEAN_SQUARE = 1e-14
_MAX_DRAWS = 8
_ALARM_RT60_S = (0.1, 0.8)  # synthesize_alarm's default range
_SOURCE_DIRECT_DB = (0.0, 12.0)  # direct path over reverberant energy: far to near


@dataclass(frozen=True, slots=True)
class _DatasetInfo:
    """How one dataset folder maps onto SoundSentry labels, and what its licence allows."""

    targets: Mapping[str, str]  # source label -> SoundSentry label
    background: frozenset[str] | None  # source labels used as background; None: all the others
    background_role: ClipRole
    licence_summary: str  # one line, for the manifest
    licence_text: str  # a paragraph, for LICENCES.txt


DATASETS: Mapping[str, _DatasetInfo] = {
    "urbansound8k_subset": _DatasetInfo(
        targets={
            "gun_shot": "gun_shot",
            "siren": "siren",
            "car_horn": "car_horn",
            "dog_bark": "dog_bark",
        },
        background=frozenset(
            {
                "air_conditioner",
                "engine_idling",
                "street_music",
                "children_playing",
                "drilling",
                "jackhammer",
            }
        ),
        background_role="ambience",
        licence_summary="urbansound8k_subset: CC BY-NC 3.0, non-commercial use only",
        licence_text=(
            "UrbanSound8K (folds 1 and 2), J. Salamon, C. Jacoby and J. P. Bello, 'A Dataset and "
            "Taxonomy for Urban Sound Research', ACM Multimedia 2014.\n"
            "Licence: CC BY-NC 3.0 -- NON-COMMERCIAL USE ONLY. These examples, and any model "
            "trained on them, may be used for non-commercial purposes only, and the model card "
            "must say so. Attribution is required: FREESOUNDCREDITS.txt (copied here) lists the "
            "Freesound author of each recording."
        ),
    ),
    "glassbreak_edgeimpulse": _DatasetInfo(
        targets={"glass_break": "glass_break"},
        background=frozenset({"background"}),
        background_role="ambience",
        licence_summary="glassbreak_edgeimpulse: no licence stated",
        licence_text=(
            "Glass-break chunks from an Edge Impulse project (github.com/prathambansal-swaja/"
            "Glass_break_sound_classification_using_transfer_learning).\n"
            "Licence: NONE STATED. The rights to reuse this audio are unclear: check before you "
            "redistribute these examples or ship a model trained on them."
        ),
    ),
    "donateacry_babycry": _DatasetInfo(
        targets={"baby_cry": "baby_cry"},
        background=frozenset(),
        background_role="ambience",
        licence_summary="donateacry_babycry: ODbL 1.0 (database), DbCL 1.0 (contents)",
        licence_text=(
            "Donate-a-Cry corpus, cleaned subset (github.com/gveres/donateacry-corpus).\n"
            "Licence: Open Database License 1.0 for the database and Database Contents License "
            "1.0 for its contents. A derived database that is shared must carry attribution and "
            "stay under ODbL."
        ),
    ),
    "dcase2016_task2_office": _DatasetInfo(
        targets={},
        background=None,
        background_role="event",
        licence_summary="dcase2016_task2_office: no licence stated",
        licence_text=(
            "DCASE2016 Task 2 isolated office events by Gregoire Lafay (IRCCyN, Ecole Centrale "
            "de Nantes), via github.com/Stevens05/SASED.\n"
            "Licence: NONE STATED. The rights to reuse this audio are unclear: check before you "
            "redistribute these examples or ship a model trained on them."
        ),
    ),
    "emergency_sirens": _DatasetInfo(
        targets={"siren": "siren"},
        background=frozenset(),
        background_role="ambience",
        licence_summary="emergency_sirens: redistribution granted, audio taken from the web",
        licence_text=(
            "Ambulance sirens (github.com/vishnu-u/Siren-Sound-Dataset, commit 62ebb17).\n"
            "Licence: the author grants free download, modification and redistribution, and says "
            "the audio was taken from YouTube and web sites: think before shipping a model "
            "trained on it commercially."
        ),
    ),
    "dcase2016_task2_segments": _DatasetInfo(
        targets={},
        background=None,
        background_role="event",
        licence_summary="dcase2016_task2_segments: no licence stated",
        licence_text=(
            "DCASE2016 Task 2 development-mixture segments (office events with their background), "
            "via github.com/Stevens05/SASED.\n"
            "Licence: NONE STATED. The rights to reuse this audio are unclear: check before you "
            "redistribute these examples or ship a model trained on them."
        ),
    ),
    "booth_household_sounds": _DatasetInfo(
        targets={"glass_break": "glass_break"},
        background=None,
        background_role="event",
        licence_summary="booth_household_sounds: no licence stated",
        licence_text=(
            "Booth-recorded household and tool sounds (Traer, Norman-Haignere and McDermott, "
            "github.com/jt-uiowa/causal-inference-in-environmental-sound-recognition_data).\n"
            "Licence: NONE STATED. The rights to reuse this audio are unclear: check before you "
            "redistribute these examples or ship a model trained on them."
        ),
    ),
    "ambience_blanket": _DatasetInfo(
        targets={},
        background=None,
        background_role="ambience",
        licence_summary="ambience_blanket: CC0, CC BY, CC BY 3.0, CC BY-SA or public domain",
        licence_text=(
            "Ambience loops of the Blanket app (github.com/rafaelmardojai/blanket).\n"
            "Licence: per file CC0, CC BY, CC BY 3.0, CC BY-SA or public domain (the manifest's "
            "license column); CC BY files need attribution, CC BY-SA shares alike."
        ),
    ),
    "speech_commands_noise": _DatasetInfo(
        targets={},
        background=None,
        background_role="ambience",
        licence_summary="speech_commands_noise: CC BY 4.0 upstream (Speech Commands)",
        licence_text=(
            "Speech Commands' _background_noise_ recordings (via github.com/chaeyoung-lee/"
            "wids_tutorial).\nLicence: none stated there; Speech Commands is CC BY 4.0 upstream."
        ),
    ),
}
_SYNTHETIC_LICENCE = (
    "synthetic alarms: generated by soundsentry.training.alarms, no third-party material"
)

# Long scene recordings are few (one file a scene), so a stratified split would put every one of
# them in ``train``. They are assigned by hand instead: the test scenes are what the detection
# benchmark's background-only hours and long mixtures are made of, and no training example
# uses them; the validation scenes calibrate thresholds to a false-alarm budget.
SCENE_SPLITS: Mapping[str, str] = {
    "ambience_blanket:audio/background/city.flac": "test",
    "ambience_blanket:audio/background/coffee-shop.flac": "test",
    "ambience_blanket:audio/background/rain.flac": "test",
    "ambience_blanket:audio/background/storm.flac": "test",
    "ambience_blanket:audio/background/train.flac": "test",
    "speech_commands_noise:audio/background/doing_the_dishes.flac": "test",
    "speech_commands_noise:audio/background/running_tap.flac": "test",
    "ambience_blanket:audio/background/summer-night.flac": "validate",
    "ambience_blanket:audio/background/wind.flac": "validate",
    "speech_commands_noise:audio/background/exercise_bike.flac": "validate",
}
"""Split of each long scene recording that is not ``train`` (the others are)."""

# The DCASE2016 isolated events were mixed into the recordings the segments are cut from, so
# the two sets share sources: neither goes to ``test``, or training would have heard the test.
_NO_TEST_DATASETS = frozenset({"dcase2016_task2_office", "dcase2016_task2_segments"})
_NO_TEST_FRACTIONS = (0.8, 0.2, 0.0)
_SCENE_DATASETS = frozenset({"ambience_blanket", "speech_commands_noise"})
_SIREN_BLOCK = 10  # emergency_sirens: neighbouring file numbers probably share a video


# ---------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True, slots=True)
class SourceClip:
    """One recording of the development data.

    ``label`` is the SoundSentry label of a target, None for background material. ``group``
    names the source recording (``"<dataset>:<id>"``): clips of one group are correlated and
    must stay in one split. ``usable_s`` is how much of the file, from its start, is original
    audio (shorter than ``duration_s`` for UrbanSound8K clips the source had looped).
    """

    path: Path
    dataset: str
    label: str | None
    group: str
    licence: str
    sample_rate_hz: int
    duration_s: float
    source_label: str = ""
    role: ClipRole = "target"
    usable_s: float = 0.0
    ref: str = ""  # path relative to the data directory, for manifests

    @property
    def stratum(self) -> str:
        """What splits are balanced over: the target label, or the kind of background."""
        return self.label if self.label is not None else f"{self.role}:{self.source_label}"


def _parse_note(note: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for part in note.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            fields[key.strip()] = value.strip()
    return fields


def _group_of(dataset: str, file_path: str, note: Mapping[str, str]) -> str:
    name = Path(file_path).name
    if dataset == "urbansound8k_subset":
        recording = name.split("-", 1)[0]  # the Freesound id
    elif dataset == "glassbreak_edgeimpulse":
        recording = note.get("recording", "")
    elif dataset == "donateacry_babycry":
        recording = name[:36]  # the app installation
    elif dataset == "emergency_sirens":
        number = Path(file_path).stem.rsplit("_", 1)[-1]
        recording = f"block{int(number) // _SIREN_BLOCK}" if number.isdigit() else ""
    else:
        recording = file_path
    if not recording:
        raise ConfigurationError(f"{dataset}: cannot tell the source recording of {file_path}")
    return f"{dataset}:{recording}"


def load_catalog(data_dir: Path, *, datasets: Sequence[str] = tuple(DATASETS)) -> list[SourceClip]:
    """Every clip of the development data (``data_dir/<dataset>/manifest.csv``), mapped to labels.

    Raises
    ------
    ConfigurationError
        for a missing folder or manifest, an unknown dataset, a label the mapping does not know,
        or a malformed row.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise ConfigurationError(
            f"data directory {data_dir} does not exist (expected the development data, "
            "e.g. ../shared/data beside the checkout)"
        )
    clips: list[SourceClip] = []
    for dataset in datasets:
        info = DATASETS.get(dataset)
        if info is None:
            raise ConfigurationError(f"unknown dataset {dataset!r}; known: {sorted(DATASETS)}")
        manifest = data_dir / dataset / "manifest.csv"
        if not manifest.is_file():
            raise ConfigurationError(f"{manifest} is missing")
        with manifest.open(newline="", encoding="utf-8") as handle:
            for line, row in enumerate(csv.DictReader(handle), start=2):
                clips.append(_clip_from_row(data_dir, dataset, info, row, f"{manifest}:{line}"))
    return clips


def _clip_from_row(
    data_dir: Path, dataset: str, info: _DatasetInfo, row: Mapping[str, str], where: str
) -> SourceClip:
    try:
        file_path = row["path"]
        source_label = row["label"]
        rate = int(row["sample_rate"])
        duration_s = float(row["duration_s"])
        licence = row["license"]
        note = _parse_note(row.get("note") or "")
    except (KeyError, ValueError, TypeError) as exc:
        raise ConfigurationError(f"{where}: malformed manifest row ({exc!r})") from exc
    role: ClipRole
    if source_label in info.targets:
        label: str | None = info.targets[source_label]
        role = "target"
    elif info.background is None or source_label in info.background:
        label, role = None, info.background_role
    else:
        raise ConfigurationError(
            f"{where}: label {source_label!r} of {dataset} is neither a target "
            f"({sorted(info.targets)}) nor background material"
        )
    usable_s = duration_s
    if note.get("looped") == "1":
        try:
            usable_s = min(duration_s, float(note["orig_dur"]) - _LOOP_SEAM_MARGIN_S)
        except (KeyError, ValueError) as exc:
            raise ConfigurationError(f"{where}: looped clip without a valid orig_dur") from exc
    return SourceClip(
        path=data_dir / dataset / file_path,
        dataset=dataset,
        label=label,
        group=_group_of(dataset, file_path, note),
        licence=licence,
        sample_rate_hz=rate,
        duration_s=duration_s,
        source_label=source_label,
        role=role,
        usable_s=usable_s,
        ref=f"{dataset}/{file_path}",
    )


def split_by_group(
    clips: Sequence[SourceClip],
    *,
    fractions: tuple[float, float, float] = (0.7, 0.15, 0.15),
    seed: int,
) -> dict[str, list[SourceClip]]:
    """Split clips into ``train``, ``validate`` and ``test`` so that no group is in two splits.

    Long scene recordings go where :data:`SCENE_SPLITS` says (``train`` when it does not name
    them); the DCASE2016 office sets, which share sources, are split 80/20 between ``train`` and
    ``validate`` and never reach ``test``. The rest are stratified: groups are stratified by their
    most common :attr:`SourceClip.stratum` (target label or kind of background). Within a
    stratum the groups are shuffled (seeded), then taken largest
    first, each going to the split furthest below its share of the stratum's clips. The result
    depends only on the clips and the seed.

    Raises
    ------
    ConfigurationError
        if ``fractions`` are not three non-negative numbers adding up to 1.
    """
    if len(fractions) != len(SPLITS) or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise ConfigurationError(
            f"fractions must be three numbers in [0, 1] (train, validate, test), got {fractions}"
        )
    if abs(sum(fractions) - 1.0) > 1e-6:
        raise ConfigurationError(f"fractions must add up to 1, got {fractions} = {sum(fractions)}")
    result: dict[str, list[SourceClip]] = {split: [] for split in SPLITS}
    regular: list[SourceClip] = []
    no_test: list[SourceClip] = []
    for clip in clips:
        if clip.dataset in _SCENE_DATASETS:
            result[SCENE_SPLITS.get(clip.group, "train")].append(clip)
        elif clip.dataset in _NO_TEST_DATASETS:
            no_test.append(clip)
        else:
            regular.append(clip)
    rng = np.random.default_rng(_seed_words(seed, "split"))
    for part, shares in ((regular, fractions), (no_test, _NO_TEST_FRACTIONS)):
        for split, taken in _stratified(part, shares, rng).items():
            result[split].extend(taken)
    return result


def _stratified(
    clips: Sequence[SourceClip], fractions: Sequence[float], rng: np.random.Generator
) -> dict[str, list[SourceClip]]:
    by_group: dict[str, list[SourceClip]] = defaultdict(list)
    for clip in clips:
        by_group[clip.group].append(clip)
    strata: dict[str, list[str]] = defaultdict(list)
    for group in sorted(by_group):
        counts = Counter(clip.stratum for clip in by_group[group])
        primary = min(counts, key=lambda key: (-counts[key], key))
        strata[primary].append(group)
    result: dict[str, list[SourceClip]] = {split: [] for split in SPLITS}
    for stratum in sorted(strata):
        groups = strata[stratum]
        order = [groups[i] for i in rng.permutation(len(groups))]
        order.sort(key=lambda g: -len(by_group[g]))  # stable: shuffled among equal sizes
        total = sum(len(by_group[g]) for g in order)
        taken = [0, 0, 0]
        for group in order:
            deficits = [fractions[i] * total - taken[i] for i in range(len(SPLITS))]
            best = max(range(len(SPLITS)), key=lambda i: (deficits[i], -i))
            taken[best] += len(by_group[group])
            result[SPLITS[best]].extend(by_group[group])
    return result


def _seed_words(seed: int, *words: str | int) -> list[int]:
    if isinstance(seed, bool) or seed < 0:
        raise ConfigurationError(f"seed must be a non-negative integer, got {seed!r}")
    return [seed, *(w if isinstance(w, int) else zlib.crc32(w.encode("utf-8")) for w in words)]


# ---------------------------------------------------------------------------------------------
# Mixing


@dataclass(frozen=True, slots=True)
class MixSpec:
    """How examples are mixed.

    ``snr_db``: range of the target-to-background ratio (RMS over the target's active region).
    ``background_dbfs``: range of each background layer's RMS level.
    ``target_probability``: share of examples that hold a target.
    ``alarm_share``: share of target examples whose target is a synthetic alarm (one of
    ``alarm_labels``, uniformly); the others draw a real target label uniformly.
    ``alarm_variety``: share of alarms whose timing is drawn around the nominal pattern
    (:func:`soundsentry.training.alarms.varied_pattern`) instead of T3/T4 exactly;
    ``alarm_burst_share``: share of alarms that sound one or two cycles only.
    ``burst_share``: share of real targets cut to a random run of their bursts (see the module
    docstring); 0 places every clip's whole active region.
    ``speed_range``: real targets and isolated background events are played at a random speed
    between ``1 / (1 + speed_range)`` and ``1 + speed_range`` (log-uniform; pitch and length
    change together, as a tape played faster): other dogs, other horns. 0 plays them as
    recorded; at most 0.5.
    ``reverb_share``: share of real targets and isolated background events heard through a
    synthetic room (RT60 0.1-0.8 s, direct path 0-12 dB above the reverberant energy): the
    same sound further from the microphone. Both apply to the training split only
    (:func:`synthesize`): validation and test examples stay as recorded.
    ``min_ambience_s``: the first background layer comes from ambience recordings at least
    this long (long mixtures: a 1 s chunk looped thirty times is no scene).
    ``active_threshold_db``: a real clip's active region holds the frames within this many dB
    of its loudest frame. ``peak_dbfs``: mixtures louder than this are scaled down (with the
    default ranges about one example in nine; measured on 200 training examples).
    """

    duration_s: float = 4.0
    sample_rate_hz: int = 16_000
    max_background_layers: int = 3
    snr_db: tuple[float, float] = (-8.0, 16.0)
    background_dbfs: tuple[float, float] = (-55.0, -25.0)
    target_probability: float = 0.4
    alarm_labels: tuple[str, ...] = ("smoke_alarm", "co_alarm")
    alarm_share: float = 0.25
    alarm_variety: float = 0.7
    alarm_burst_share: float = 0.4
    burst_share: float = 0.0
    speed_range: float = 0.0
    reverb_share: float = 0.0
    min_ambience_s: float = 0.0
    active_threshold_db: float = 20.0
    peak_dbfs: float = -1.0

    def __post_init__(self) -> None:
        problems = [*self._scalar_problems(), *self._range_problems(), *self._label_problems()]
        if problems:
            raise ConfigurationError("invalid mix spec: " + "; ".join(problems))

    def _scalar_problems(self) -> list[str]:
        problems: list[str] = []
        if not 0.1 <= self.duration_s <= 60.0:
            problems.append(f"duration_s={self.duration_s} is outside 0.1..60")
        if not 8_000 <= self.sample_rate_hz <= 48_000:
            problems.append(f"sample_rate_hz={self.sample_rate_hz} is outside 8000..48000")
        if not 1 <= self.max_background_layers <= 16:
            problems.append(f"max_background_layers={self.max_background_layers} is outside 1..16")
        if not 0.0 <= self.speed_range <= 0.5:
            problems.append(f"speed_range={self.speed_range} is outside 0..0.5")
        if not 0.0 <= self.min_ambience_s <= 3600.0:
            problems.append(f"min_ambience_s={self.min_ambience_s} is outside 0..3600")
        if not 0.0 < self.active_threshold_db <= 80.0:
            problems.append(f"active_threshold_db={self.active_threshold_db} is outside (0, 80]")
        if not -40.0 <= self.peak_dbfs <= 0.0:
            problems.append(f"peak_dbfs={self.peak_dbfs} is outside -40..0")
        return problems

    def _range_problems(self) -> list[str]:
        problems: list[str] = []
        for name, bounds, lo, hi in (
            ("snr_db", self.snr_db, -40.0, 60.0),
            ("background_dbfs", self.background_dbfs, -100.0, 0.0),
        ):
            if not all(np.isfinite(b) for b in bounds):
                problems.append(f"{name}={bounds} must be two finite numbers (low, high)")
            elif not lo <= bounds[0] <= bounds[1] <= hi:
                problems.append(f"{name}={bounds} must satisfy {lo} <= low <= high <= {hi}")
        for name, value in (
            ("target_probability", self.target_probability),
            ("alarm_share", self.alarm_share),
            ("alarm_variety", self.alarm_variety),
            ("alarm_burst_share", self.alarm_burst_share),
            ("burst_share", self.burst_share),
            ("reverb_share", self.reverb_share),
        ):
            if not 0.0 <= value <= 1.0:
                problems.append(f"{name}={value} is outside 0..1")
        return problems

    def _label_problems(self) -> list[str]:
        problems: list[str] = []
        unknown = [label for label in self.alarm_labels if label not in PATTERNS]
        if unknown:
            problems.append(f"alarm_labels {unknown} are unknown; known: {sorted(PATTERNS)}")
        if len(set(self.alarm_labels)) != len(self.alarm_labels):
            problems.append(f"alarm_labels {self.alarm_labels} repeat a label")
        if self.alarm_share > 0 and not self.alarm_labels:
            problems.append(f"alarm_share={self.alarm_share} needs at least one alarm label")
        return problems

    @property
    def num_samples(self) -> int:
        return round(self.duration_s * self.sample_rate_hz)

    @property
    def varies_sources(self) -> bool:
        """Whether recorded sounds are played at other speeds or through rooms."""
        return self.speed_range > 0 or self.reverb_share > 0


class EventSpan(NamedTuple):
    """A labelled sound inside an example, in seconds from the example's start."""

    label: str
    onset_s: float
    offset_s: float


@dataclass(frozen=True, slots=True)
class Example:
    """One mixed training example.

    ``audio`` : np.ndarray [shape=(n,)], float32, full scale 1.0; equals
    ``background_audio + target_audio``. ``labels`` is empty or holds the one target label;
    ``events`` are its onset/offset spans (several for a repeating alarm). ``sources`` describe
    every piece of audio used (``<dataset>/<path>#t=<start>,<end>`` in seconds of the source
    file, ``#t=loop`` for a looped one, ``synthetic:<alarm>`` for an alarm).
    ``snr_db`` is the drawn (and achieved) ratio, None without a target. ``licences`` holds
    one line per source dataset used (see :data:`DATASETS`).
    """

    audio: npt.NDArray[np.float32]
    sample_rate_hz: int
    labels: frozenset[str]
    events: list[EventSpan]
    sources: list[str]
    split: str = ""
    snr_db: float | None = None
    background_layers: int = 0
    background_audio: npt.NDArray[np.float32] | None = None
    target_audio: npt.NDArray[np.float32] | None = None
    licences: tuple[str, ...] = ()


class ClipLoader:
    """Reads the usable part of source clips at one sample rate, keeping recent ones in memory.

    Returned arrays are read-only float32 [shape=(n,)]. 8 kHz (or any other rate) material is
    resampled with soxr at HQ quality.
    """

    def __init__(self, *, sample_rate_hz: int, max_cached: int = 256) -> None:
        if max_cached < 0:
            raise ConfigurationError(f"max_cached must be >= 0, got {max_cached}")
        self.sample_rate_hz = sample_rate_hz
        self._max_cached = max_cached
        self._cache: OrderedDict[Path, npt.NDArray[np.float32]] = OrderedDict()

    def load(self, clip: SourceClip) -> npt.NDArray[np.float32]:
        cached = self._cache.get(clip.path)
        if cached is not None:
            self._cache.move_to_end(clip.path)
            return cached
        audio, rate = load_audio(clip.path)
        if rate != clip.sample_rate_hz:
            raise ConfigurationError(
                f"{clip.path} is {rate} Hz but its manifest says {clip.sample_rate_hz} Hz"
            )
        usable = clip.usable_s if clip.usable_s > 0 else clip.duration_s
        audio = audio[: max(1, round(usable * rate))]
        if rate != self.sample_rate_hz:
            import soxr  # noqa: PLC0415

            audio = np.asarray(
                soxr.resample(audio, rate, self.sample_rate_hz, quality="HQ"), dtype=np.float32
            )
        audio = np.ascontiguousarray(audio, dtype=np.float32)
        audio.setflags(write=False)
        if self._max_cached:
            self._cache[clip.path] = audio
            while len(self._cache) > self._max_cached:
                self._cache.popitem(last=False)
        return audio


def _frame_levels_db(
    audio: npt.NDArray[np.floating], *, sample_rate_hz: int
) -> tuple[npt.NDArray[np.float64], int, int]:
    """Mean-square level (dB) of 20 ms frames every 10 ms; (levels, frame, hop) in samples."""
    frame = max(1, round(_FRAME_S * sample_rate_hz))
    hop = max(1, round(_HOP_S * sample_rate_hz))
    x = np.asarray(audio, dtype=np.float64)
    if x.size <= frame:
        mean_square = np.array([np.mean(np.square(x))]) if x.size else np.zeros(1)
    else:
        count = (x.size - frame) // hop + 1
        csum = np.concatenate(([0.0], np.cumsum(np.square(x))))
        starts = np.arange(count) * hop
        mean_square = (csum[starts + frame] - csum[starts]) / frame
    levels = 10.0 * np.log10(np.maximum(mean_square, _SILENT_MEAN_SQUARE))
    return levels, frame, hop


@dataclass(frozen=True, slots=True)
class _Activity:
    """The 20 ms frames of a clip (see :func:`_frame_levels_db`) within a threshold of its
    loudest: their levels, the indices of the active ones, and frame and hop in samples."""

    levels: npt.NDArray[np.float64]
    active: npt.NDArray[np.intp]
    frame: int
    hop: int
    size: int  # the clip's samples

    @property
    def region(self) -> tuple[int, int]:
        """First active frame's start to last active frame's end (exclusive), in samples."""
        return int(self.active[0]) * self.hop, min(
            self.size, int(self.active[-1]) * self.hop + self.frame
        )


def _activity(
    audio: npt.NDArray[np.floating], *, sample_rate_hz: int, threshold_db: float
) -> _Activity | None:
    """The frames within ``threshold_db`` of the loudest; None for digital silence (every
    frame below -140 dBFS)."""
    levels, frame, hop = _frame_levels_db(audio, sample_rate_hz=sample_rate_hz)
    peak = float(levels.max())
    if peak <= 10.0 * np.log10(_SILENT_MEAN_SQUARE):
        return None
    active = np.flatnonzero(levels >= peak - threshold_db)
    return _Activity(levels, active, frame, hop, int(np.asarray(audio).size))


def active_region(
    audio: npt.NDArray[np.floating], *, sample_rate_hz: int, threshold_db: float = 20.0
) -> tuple[int, int] | None:
    """Where a clip's sound is: first to last 20 ms frame within ``threshold_db`` of the loudest.

    Frames are 20 ms long, 10 ms apart. Returns ``(start_sample, end_sample)`` (end exclusive),
    or None for digital silence (every frame below -140 dBFS). The mixer places real target
    clips by the same frames (:func:`_real_target`).
    """
    activity = _activity(audio, sample_rate_hz=sample_rate_hz, threshold_db=threshold_db)
    return None if activity is None else activity.region


def _rms(x: npt.NDArray[np.floating]) -> float:
    return float(np.sqrt(np.mean(np.square(x, dtype=np.float64)))) if x.size else 0.0


def _fade_edges(x: npt.NDArray[np.float64], fade: int) -> None:
    fade = min(fade, x.size // 2)
    if fade > 0:
        ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        x[:fade] *= ramp
        x[-fade:] *= ramp[::-1]


def _loop_to(
    x: npt.NDArray[np.float32], n: int, *, rng: np.random.Generator, sample_rate_hz: int
) -> npt.NDArray[np.float64]:
    """``x`` repeated to ``n`` samples from a random phase, with linear cross-fades at seams."""
    fade = min(round(_LOOP_FADE_S * sample_rate_hz), x.size // 4)
    period = x.size - fade
    tile = x.astype(np.float64)
    if fade > 0:
        ramp = (np.arange(fade) + 0.5) / fade
        tile[:fade] *= ramp
        tile[-fade:] *= ramp[::-1]
    out = np.zeros(n, dtype=np.float64)
    position = -int(rng.integers(fade, fade + period))  # the first fade-in lies before 0
    while position < n:
        lo, hi = max(position, 0), min(position + x.size, n)
        out[lo:hi] += tile[lo - position : hi - position]
        position += period
    return out


def _ambience_layer(
    clip: SourceClip, audio: npt.NDArray[np.float32], n: int, rng: np.random.Generator, rate: int
) -> tuple[npt.NDArray[np.float64], str]:
    if audio.size >= n:
        start = int(rng.integers(0, audio.size - n + 1))
        return audio[start : start + n].astype(np.float64), _ref(clip, start, start + n, rate)
    return _loop_to(audio, n, rng=rng, sample_rate_hz=rate), f"{clip.ref}#t=loop"


def _ref(clip: SourceClip, start: int, end: int, rate: int) -> str:
    return f"{clip.ref}#t={start / rate:.3f},{end / rate:.3f}"


class _Variety(NamedTuple):
    """How one recorded sound is heard: at ``speed`` (1 as recorded), through ``room`` (an
    impulse response; None for none) of reverberation time ``rt60_s``."""

    speed: float = 1.0
    room: npt.NDArray[np.float32] | None = None
    rt60_s: float = 0.0

    def describe(self, ref: str) -> str:
        """``ref`` with the speed and the room appended (``&speed=``, ``&rt60_s=``)."""
        speed = f"&speed={self.speed:.3f}" if self.speed != 1.0 else ""
        room = f"&rt60_s={self.rt60_s:.2f}" if self.room is not None else ""
        return f"{ref}{speed}{room}"

    def at_speed(self, audio: npt.NDArray[np.float32], rate: int) -> npt.NDArray[np.float32]:
        """``audio`` played ``speed`` times faster: ``1 / speed`` as long, pitch times ``speed``."""
        if self.speed == 1.0:
            return audio
        import soxr  # noqa: PLC0415 - only mixing needs it

        played = soxr.resample(audio, rate * self.speed, rate, quality="HQ")
        return np.ascontiguousarray(played, dtype=np.float32)

    def in_room(self, track: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """``track`` through the room, cut to its length (the direct path keeps its timing)."""
        if self.room is None:
            return track
        import scipy.signal  # noqa: PLC0415 - slow to import; only mixing needs it

        wet = scipy.signal.oaconvolve(track, self.room.astype(np.float64))
        return np.ascontiguousarray(wet[: track.size])


def _draw_variety(rng: np.random.Generator, spec: MixSpec) -> _Variety:
    speed = 1.0
    if spec.speed_range > 0:
        bound = float(np.log1p(spec.speed_range))
        speed = float(np.exp(rng.uniform(-bound, bound)))
    if not (spec.reverb_share > 0 and rng.random() < spec.reverb_share):
        return _Variety(speed)
    rt60_s = float(rng.uniform(*_ALARM_RT60_S))
    room = room_impulse_response(
        rt60_s=rt60_s,
        sample_rate_hz=spec.sample_rate_hz,
        rng=rng,
        direct_ratio_db=float(rng.uniform(*_SOURCE_DIRECT_DB)),
    )
    return _Variety(speed, room, rt60_s)


def _event_layer(
    clip: SourceClip,
    audio: npt.NDArray[np.float32],
    n: int,
    rng: np.random.Generator,
    rate: int,
    *,
    heard: _Variety | None = None,
) -> tuple[npt.NDArray[np.float64], str, float]:
    """An isolated event placed once: (signal, description, level as recorded).

    ``heard`` plays the cut piece at its speed and in its room; it draws nothing from ``rng``,
    so the layers that follow are the same with and without it."""
    start = int(rng.integers(0, audio.size - n + 1)) if audio.size > n else 0
    piece = audio[start : start + n].astype(np.float64)
    fade = round(_EDGE_FADE_S * rate)
    _fade_edges(piece, fade)
    level = _rms(piece[piece != 0.0])
    out = np.zeros(n, dtype=np.float64)
    offset = int(rng.integers(0, n - piece.size + 1))
    if heard is None:
        out[offset : offset + piece.size] = piece
        return out, _ref(clip, start, start + piece.size, rate), level
    played = heard.at_speed(piece.astype(np.float32), rate).astype(np.float64)
    kept = piece.size
    if played.size > n:  # slowed past the example's length: keep its start, fade it out
        played = played[:n]
        _fade_edges(played, fade)
        kept = round(n * heard.speed)
    offset = min(offset, n - played.size)
    out[offset : offset + played.size] = played
    return heard.in_room(out), heard.describe(_ref(clip, start, start + kept, rate)), level


def _background(
    *,
    rng: np.random.Generator,
    spec: MixSpec,
    backgrounds: Sequence[SourceClip],
    loader: ClipLoader,
    variety_rng: np.random.Generator | None = None,
) -> tuple[npt.NDArray[np.float64], int, list[SourceClip], list[str]]:
    ambience = [
        clip
        for clip in backgrounds
        if clip.role == "ambience" and (clip.usable_s or clip.duration_s) >= spec.min_ambience_s
    ]
    if not ambience:
        raise ConfigurationError(
            "no ambience clips among the backgrounds: every example needs one background "
            "recording that can fill it (e.g. UrbanSound8K air_conditioner)"
        )
    n, rate = spec.num_samples, spec.sample_rate_hz
    layers = int(rng.integers(1, spec.max_background_layers + 1))
    mix = np.zeros(n, dtype=np.float64)
    used: list[SourceClip] = []
    descriptions: list[str] = []
    for layer in range(layers):
        pool = ambience if layer == 0 else backgrounds
        for _ in range(_MAX_DRAWS):
            clip = pool[int(rng.integers(len(pool)))]
            audio = loader.load(clip)
            if clip.role == "ambience":
                signal, description = _ambience_layer(clip, audio, n, rng, rate)
                level = _rms(signal)
            else:
                # The level is the event's as recorded: a room spreads it over its tail.
                heard = None if variety_rng is None else _draw_variety(variety_rng, spec)
                signal, description, level = _event_layer(clip, audio, n, rng, rate, heard=heard)
            if level * level > _SILENT_MEAN_SQUARE:
                break
        else:
            raise ConfigurationError(
                f"drew {_MAX_DRAWS} digitally silent background pieces in a row; last: {clip.ref}"
            )
        level_dbfs = float(rng.uniform(*spec.background_dbfs))
        mix += signal * (10.0 ** (level_dbfs / 20.0) / level)
        used.append(clip)
        descriptions.append(description)
    return mix, layers, used, descriptions


def _real_target(
    *,
    rng: np.random.Generator,
    spec: MixSpec,
    candidates: Sequence[SourceClip],
    loader: ClipLoader,
    variety: _Variety | None = None,
) -> tuple[npt.NDArray[np.float64], list[tuple[int, int]], SourceClip, str]:
    n, rate = spec.num_samples, spec.sample_rate_hz
    heard = variety if variety is not None else _Variety()
    activity = None
    for _ in range(_MAX_DRAWS):
        clip = candidates[int(rng.integers(len(candidates)))]
        audio = heard.at_speed(loader.load(clip), rate)
        activity = _activity(audio, sample_rate_hz=rate, threshold_db=spec.active_threshold_db)
        if activity is not None:
            break
    if activity is None:
        raise ConfigurationError(f"drew {_MAX_DRAWS} digitally silent target clips in a row")
    levels, active, frame, hop = activity.levels, activity.active, activity.frame, activity.hop
    region = activity.region
    pad = round(_TARGET_PAD_S * rate)
    lo, hi = max(0, region[0] - pad), min(audio.size, region[1] + pad)
    # Drawn only when enabled, so data sets mixed with burst_share=0 keep their seeds' audio.
    cut = None
    if spec.burst_share > 0 and rng.random() < spec.burst_share:
        cut = _burst_run(activity, rng=rng, pad=pad, n=n, rate=rate)
    if cut is not None:
        lo, hi, region = cut
    elif hi - lo > n:
        # Cut an n-sample window that holds the loudest frame, then find the event inside it.
        loudest = int(np.argmax(levels)) * hop
        loudest_end = min(audio.size, loudest + frame)
        first = max(lo, loudest_end - n)
        last = max(first, min(loudest, hi - n))
        lo = int(rng.integers(first, last + 1))
        hi = lo + n
        starts = np.arange(levels.size) * hop
        inside = active[(starts[active] >= lo) & (starts[active] + frame <= hi)]
        if inside.size:
            region = (int(starts[inside[0]]), int(starts[inside[-1]]) + frame)
        else:  # a frame longer than the window (tiny examples): the window is the event
            region = (lo, hi)
        region = (max(region[0], lo), min(region[1], hi))
    piece = audio[lo:hi].astype(np.float64)
    _fade_edges(piece, round(_EDGE_FADE_S * rate))
    offset = int(rng.integers(0, n - piece.size + 1))
    track = np.zeros(n, dtype=np.float64)
    track[offset : offset + piece.size] = piece
    span = (offset + region[0] - lo, offset + region[1] - lo)
    # The room's tail is not part of the event, as for the alarms.
    track = heard.in_room(track)
    # Times in the source file's own seconds: a sample played at speed s covers s / rate there.
    ref = _ref(clip, round(lo * heard.speed), round(hi * heard.speed), rate)
    return track, [span], clip, heard.describe(ref)


def _bursts(activity: _Activity) -> list[tuple[int, int]]:
    """The clip's bursts: runs of active frames split by gaps of at least ``_BURST_GAP_S``,
    as (start, end) in samples."""
    gap_frames = max(1, round(_BURST_GAP_S / _HOP_S))
    active = activity.active
    breaks = np.flatnonzero(np.diff(active) > gap_frames)
    firsts = np.concatenate(([active[0]], active[breaks + 1]))
    lasts = np.concatenate((active[breaks], [active[-1]]))
    return [
        (int(a) * activity.hop, min(activity.size, int(b) * activity.hop + activity.frame))
        for a, b in zip(firsts, lasts, strict=True)
    ]


def _burst_run(
    activity: _Activity, *, rng: np.random.Generator, pad: int, n: int, rate: int
) -> tuple[int, int, tuple[int, int]] | None:
    """A random run of consecutive bursts that fits ``n`` samples: (lo, hi, event region).

    The cut keeps up to ``pad`` samples either side, stopping halfway to a neighbouring burst.
    A run of one burst is, half the time, shortened to a random part of it (log-uniform from
    ``_SHORT_BURST_S`` to all of it): a held horn cut to a honk. None when there is nothing to
    choose (one burst, kept whole) or the drawn run is longer than ``n``."""
    bursts = _bursts(activity)
    first = int(rng.integers(len(bursts)))
    last = first + int(rng.integers(len(bursts) - first))
    while last > first and bursts[last][1] - bursts[first][0] + 2 * pad > n:
        last -= 1
    start, end = bursts[first][0], bursts[last][1]
    shortest = round(_SHORT_BURST_S * rate)
    if first == last and end - start > 2 * shortest and n > shortest and rng.random() < 0.5:
        length = round(np.exp(rng.uniform(np.log(shortest), np.log(min(end - start, n)))))
        lo = start + int(rng.integers(0, end - start - length + 1))
        return lo, lo + length, (lo, lo + length)
    if len(bursts) < 2:
        return None
    before = bursts[first - 1][1] if first > 0 else None
    after = bursts[last + 1][0] if last + 1 < len(bursts) else None
    lo = max(0, start - pad) if before is None else max(start - pad, (before + start) // 2)
    hi = min(activity.size, end + pad) if after is None else min(end + pad, (end + after + 1) // 2)
    if hi - lo > n:
        return None
    return lo, hi, (start, end)


def _alarm_target(
    *, rng: np.random.Generator, spec: MixSpec, label: str
) -> tuple[npt.NDArray[np.float64], list[tuple[int, int]], str]:
    pattern = varied_pattern(label, rng) if rng.random() < spec.alarm_variety else PATTERNS[label]
    max_cycles = int(rng.integers(1, 3)) if rng.random() < spec.alarm_burst_share else None
    sounding_s = pattern.tones * pattern.tone_s + (pattern.tones - 1) * pattern.gap_s
    latest_s = spec.duration_s - min(sounding_s, spec.duration_s / 2)
    start_s = float(rng.uniform(0.0, latest_s))
    rt60_s = float(rng.uniform(*_ALARM_RT60_S))
    # Dry, then reverberated here by FFT: synthesize_alarm's direct convolution takes seconds
    # for a 0.8 s room response. The same response, level (rescaled below anyway) and timing.
    signal = synthesize_alarm(
        label,
        duration_s=spec.duration_s,
        sample_rate_hz=spec.sample_rate_hz,
        rng=rng,
        start_s=start_s,
        rt60_s=0.0,
        pattern=pattern,
        max_cycles=max_cycles,
    )
    response = room_impulse_response(rt60_s=rt60_s, sample_rate_hz=spec.sample_rate_hz, rng=rng)
    track = np.zeros(spec.num_samples, dtype=np.float64)
    import scipy.signal  # noqa: PLC0415 - slow to import (about 1 s); only mixing needs it

    wet = scipy.signal.oaconvolve(signal.audio.astype(np.float64), response.astype(np.float64))
    size = min(track.size, wet.size)
    track[:size] = wet[:size]
    spans = [(a, min(b, track.size)) for a, b in signal.cycles if a < track.size]
    description = f"synthetic:{label}#f0_hz={signal.fundamental_hz:.1f},rt60_s={rt60_s:.2f}"
    return track, spans, description


def _span_mask(n: int, spans: Sequence[tuple[int, int]]) -> npt.NDArray[np.bool_]:
    mask = np.zeros(n, dtype=bool)
    for a, b in spans:
        mask[a:b] = True
    return mask


def make_example(
    *,
    rng: np.random.Generator,
    spec: MixSpec,
    targets: Sequence[SourceClip],
    backgrounds: Sequence[SourceClip],
    target_label: str | None,
    loader: ClipLoader | None = None,
) -> Example:
    """Mix one example: background layers and, unless ``target_label`` is None, one target.

    ``target_label`` is a real label (a clip is drawn from ``targets`` with that label) or a
    synthetic alarm label (``smoke_alarm``, ``co_alarm``). ``loader`` caches decoded clips across
    calls (a new, uncached one is used when None). See the module docstring for the method.

    Raises
    ------
    ConfigurationError
        for a target label with no clip among ``targets``, or no ambience among ``backgrounds``.
    """
    loader = loader or ClipLoader(sample_rate_hz=spec.sample_rate_hz, max_cached=0)
    if loader.sample_rate_hz != spec.sample_rate_hz:
        raise ConfigurationError(
            f"loader reads at {loader.sample_rate_hz} Hz but the spec mixes at "
            f"{spec.sample_rate_hz} Hz"
        )
    candidates: list[SourceClip] = []
    if target_label is not None and target_label not in PATTERNS:
        candidates = [clip for clip in targets if clip.label == target_label]
        if not candidates:
            known = sorted({str(clip.label) for clip in targets} | set(PATTERNS))
            raise ConfigurationError(
                f"no target clip is labelled {target_label!r}; available: {known}"
            )
    n, rate = spec.num_samples, spec.sample_rate_hz
    # A child generator of its own, so an example mixed with variety keeps the labels, layers and
    # sources of the same example mixed without it (spawning leaves rng's stream as it was).
    variety_rng = rng.spawn(1)[0] if spec.varies_sources else None
    background, layers, used, sources = _background(
        rng=rng, spec=spec, backgrounds=backgrounds, loader=loader, variety_rng=variety_rng
    )
    licences = {DATASETS[clip.dataset].licence_summary for clip in used}
    target = np.zeros(n, dtype=np.float64)
    spans: list[tuple[int, int]] = []
    snr_db: float | None = None
    if target_label is not None:
        if target_label in PATTERNS:
            target, spans, description = _alarm_target(rng=rng, spec=spec, label=target_label)
            licences.add(_SYNTHETIC_LICENCE)
        else:
            target, spans, clip, description = _real_target(
                rng=rng,
                spec=spec,
                candidates=candidates,
                loader=loader,
                variety=None if variety_rng is None else _draw_variety(variety_rng, spec),
            )
            licences.add(DATASETS[clip.dataset].licence_summary)
        sources.insert(0, description)
        snr_db = float(rng.uniform(*spec.snr_db))
        mask = _span_mask(n, spans)
        target_rms = _rms(target[mask])
        background_rms = _rms(background[mask])
        if background_rms * background_rms <= _SILENT_MEAN_SQUARE:
            background_rms = _rms(background)  # the background is silent just there
        target *= background_rms * 10.0 ** (snr_db / 20.0) / max(target_rms, 1e-12)
    mix = background + target
    peak = float(np.max(np.abs(mix))) if mix.size else 0.0
    limit = 10.0 ** (spec.peak_dbfs / 20.0)
    if peak > limit:
        scale = limit / peak
        mix *= scale
        background *= scale
        target *= scale
    events = [EventSpan(str(target_label), a / rate, b / rate) for a, b in spans if b > a]
    return Example(
        audio=mix.astype(np.float32),
        sample_rate_hz=rate,
        labels=frozenset() if target_label is None else frozenset({target_label}),
        events=events,
        sources=sources,
        snr_db=snr_db,
        background_layers=layers,
        background_audio=background.astype(np.float32),
        target_audio=target.astype(np.float32),
        licences=tuple(sorted(licences)),
    )


# ---------------------------------------------------------------------------------------------
# Writing a data set

MANIFEST_FIELDS = (
    "path",
    "split",
    "labels",
    "events",
    "sources",
    "snr_db",
    "background_layers",
    "licences",
)


def _draw_target_label(
    rng: np.random.Generator, spec: MixSpec, real_labels: Sequence[str]
) -> str | None:
    if rng.random() >= spec.target_probability:
        return None
    alarms = spec.alarm_labels
    if alarms and (not real_labels or rng.random() < spec.alarm_share):
        return alarms[int(rng.integers(len(alarms)))]
    if not real_labels:
        raise ConfigurationError("no target clips and no alarm labels: nothing to put in examples")
    return real_labels[int(rng.integers(len(real_labels)))]


def synthesize(
    *,
    data_dir: Path,
    out_dir: Path,
    examples_per_split: Mapping[str, int],
    spec: MixSpec | None = None,
    seed: int,
    rekognition: bool = False,
    created_utc: datetime | None = None,
) -> Path:
    """Write a mixed data set; returns the path of its ``manifest.csv``.

    Layout under ``out_dir`` (which must be empty or absent)::

        <split>/<split>-000000.flac       16-bit mono FLAC at spec.sample_rate_hz
        <split>/reference.tsv             the split's events for ``soundsentry evaluate``
        manifest.csv                      path, split, labels (';'), events (JSON), sources (';'),
                                          snr_db, background_layers, licences (';')
        LICENCES.txt                      licences of the source datasets used
        FREESOUNDCREDITS.txt              when UrbanSound8K material was used (attribution)
        rekognition/<split>/<label or no_label>/<split>-000000.png     (rekognition=True)
        rekognition/<split>.manifest      Rekognition Custom Labels (SageMaker Ground Truth
                                          classification) JSON lines; source-ref relative to
                                          rekognition/ (prefix it with s3://bucket/prefix/)

    Example ``i`` of a split is mixed from a generator seeded with (seed, split, i): the same
    seed gives the same files. ``created_utc`` is the manifests' creation date (default: now).

    Raises
    ------
    ConfigurationError
        for an unknown split, a negative count, a non-empty ``out_dir`` or bad data.
    """
    spec = spec or MixSpec()
    unknown = sorted(set(examples_per_split) - set(SPLITS))
    if unknown:
        raise ConfigurationError(f"unknown splits {unknown}; known: {list(SPLITS)}")
    if any(int(count) < 0 for count in examples_per_split.values()):
        raise ConfigurationError(f"example counts must be >= 0, got {dict(examples_per_split)}")
    _seed_words(seed)
    out_dir = Path(out_dir)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ConfigurationError(f"output directory {out_dir} exists and is not empty")
    created = (created_utc or datetime.now(UTC)).astimezone(UTC)

    catalog = load_catalog(Path(data_dir))
    splits = split_by_group(catalog, seed=seed)
    loader = ClipLoader(sample_rate_hz=spec.sample_rate_hz)
    writer = _DatasetWriter(out_dir, spec=spec, rekognition=rekognition, created_utc=created)
    for split_index, split in enumerate(SPLITS):
        count = int(examples_per_split.get(split, 0))
        clips = splits[split]
        targets = [clip for clip in clips if clip.role == "target"]
        backgrounds = [clip for clip in clips if clip.role != "target"]
        real_labels = sorted({str(clip.label) for clip in targets})
        # Varied sources are training augmentation: the other splits are heard as recorded.
        split_spec = spec if split == "train" else replace(spec, speed_range=0.0, reverb_share=0.0)
        for index in range(count):
            rng = np.random.default_rng(_seed_words(seed, split_index, index))
            label = _draw_target_label(rng, spec, real_labels)
            example = make_example(
                rng=rng,
                spec=split_spec,
                targets=targets,
                backgrounds=backgrounds,
                target_label=label,
                loader=loader,
            )
            writer.add(replace(example, split=split), name=f"{split}-{index:06d}")
    manifest = writer.finish(data_dir=Path(data_dir), seed=seed)
    logger.info("wrote %d examples to %s", writer.count, out_dir)
    return manifest


class _DatasetWriter:
    """Writes examples (FLAC, optional PNG) as they come, and the manifests at the end."""

    def __init__(
        self, out_dir: Path, *, spec: MixSpec, rekognition: bool, created_utc: datetime
    ) -> None:
        self.out_dir = out_dir
        self.spec = spec
        self.created_utc = created_utc
        self.front_end = _front_end(spec) if rekognition else None
        alarms = [label for label in spec.alarm_labels if label not in TARGET_LABELS]
        self.classes = [NO_LABEL, *TARGET_LABELS, *alarms]
        self.rows: list[dict[str, str]] = []
        self.rekognition_lines: dict[str, list[str]] = {split: [] for split in SPLITS}
        self.datasets_used: set[str] = set()
        self.licences_used: set[str] = set()

    @property
    def count(self) -> int:
        return len(self.rows)

    def add(self, example: Example, *, name: str) -> None:
        relative = f"{example.split}/{name}.flac"
        (self.out_dir / example.split).mkdir(parents=True, exist_ok=True)
        write_flac(self.out_dir / relative, example)
        self.rows.append(manifest_row(relative, example))
        self.datasets_used.update(s.split("/", 1)[0] for s in example.sources if "/" in s)
        self.licences_used.update(example.licences)
        if self.front_end is not None:
            class_name = next(iter(sorted(example.labels)), NO_LABEL)
            png = f"{example.split}/{class_name}/{name}.png"
            path = self.out_dir / "rekognition" / png
            path.parent.mkdir(parents=True, exist_ok=True)
            image = spectrogram_image(self.front_end.log_mel(example.audio))
            path.write_bytes(encode_png_gray(image))
            self.rekognition_lines[example.split].append(
                _rekognition_line(png, class_name, self.classes.index(class_name), self.created_utc)
            )
        if self.count % 500 == 0:
            logger.info("mixed %d examples", self.count)

    def finish(self, *, data_dir: Path, seed: int) -> Path:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        manifest = self.out_dir / "manifest.csv"
        with manifest.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=MANIFEST_FIELDS, lineterminator="\n")
            writer.writeheader()
            writer.writerows(self.rows)
        _write_references(self.out_dir, self.rows)
        if self.front_end is not None:
            for split, lines in self.rekognition_lines.items():
                path = self.out_dir / "rekognition" / f"{split}.manifest"
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        _write_licences(
            self.out_dir,
            data_dir,
            self.datasets_used,
            self.licences_used,
            seed=seed,
            spec=self.spec,
        )
        return manifest


def _write_references(out_dir: Path, rows: Sequence[Mapping[str, str]]) -> None:
    """``<split>/reference.tsv`` for each split: the examples' events as ``soundsentry
    evaluate`` reads them (a file without events on a line of its own)."""
    lines: dict[str, list[str]] = {}
    for row in rows:
        events = json.loads(row["events"])
        lines.setdefault(row["split"], []).extend(
            [
                f"{row['path']}\t{onset:.3f}\t{offset:.3f}\t{label}"
                for label, onset, offset in events
            ]
            or [row["path"]]
        )
    for split, text in lines.items():
        (out_dir / split / "reference.tsv").write_text("\n".join(text) + "\n", encoding="utf-8")


def _front_end(spec: MixSpec) -> MelFrontEnd:
    from soundsentry.audio.mel import MelFrontEnd, MelSpec  # noqa: PLC0415 - imports librosa

    rate = spec.sample_rate_hz
    mel = MelSpec(sample_rate_hz=rate, fmax_hz=min(MelSpec().fmax_hz, rate / 2))
    return MelFrontEnd(mel)


def write_flac(path: Path, example: Example) -> None:
    """``example``'s audio as 16-bit FLAC at its sample rate."""
    import soundfile  # noqa: PLC0415 - needs libsndfile

    soundfile.write(
        str(path), to_s16(example.audio), example.sample_rate_hz, format="FLAC", subtype="PCM_16"
    )


def manifest_row(relative: str, example: Example) -> dict[str, str]:
    """The manifest row (:data:`MANIFEST_FIELDS`) of ``example`` stored at ``relative``."""
    events = [[e.label, round(e.onset_s, 6), round(e.offset_s, 6)] for e in example.events]
    return {
        "path": relative,
        "split": example.split,
        "labels": ";".join(sorted(example.labels)),
        "events": json.dumps(events, separators=(",", ":")),
        "sources": ";".join(example.sources),
        "snr_db": "" if example.snr_db is None else f"{example.snr_db:.2f}",
        "background_layers": str(example.background_layers),
        "licences": ";".join(example.licences),
    }


def _rekognition_line(source_ref: str, class_name: str, index: int, created: datetime) -> str:
    attribute = "soundsentry-class"
    return json.dumps(
        {
            "source-ref": source_ref,
            attribute: index,
            f"{attribute}-metadata": {
                "confidence": 1,
                "job-name": f"labeling-job/{attribute}",
                "class-name": class_name,
                "human-annotated": "yes",
                "creation-date": created.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3],
                "type": "groundtruth/image-classification",
            },
        },
        separators=(",", ":"),
    )


def _write_licences(
    out_dir: Path,
    data_dir: Path,
    datasets_used: set[str],
    licences_used: set[str],
    *,
    seed: int,
    spec: MixSpec,
) -> None:
    parts = [
        "SoundSentry mixed training data (soundsentry dataset synth)",
        f"seed {seed}; {spec}",
        "",
        "Each example mixes audio from the datasets below; manifest.csv lists, per example, the "
        "source files (sources) and their licences (licences). The most restrictive licence of "
        "its sources applies to an example, and to any model trained on it.",
        "",
    ]
    for dataset in sorted(datasets_used):
        parts += [f"== {dataset}", DATASETS[dataset].licence_text]
        if dataset in _SCENE_DATASETS:
            parts += _per_file_licences(data_dir / dataset / "manifest.csv")
        parts.append("")
    if _SYNTHETIC_LICENCE in licences_used:
        parts += [
            "== synthetic alarms",
            "Generated by soundsentry.training.alarms (T3/T4 patterns).",
            "",
        ]
    if "urbansound8k_subset" in datasets_used:
        credits = data_dir / "urbansound8k_subset" / "FREESOUNDCREDITS.txt"
        if credits.is_file():
            shutil.copyfile(credits, out_dir / "FREESOUNDCREDITS.txt")
    (out_dir / "LICENCES.txt").write_text("\n".join(parts), encoding="utf-8")


def _per_file_licences(manifest: Path) -> list[str]:
    """One line per recording of a set whose licence (and attribution) is per file."""
    if not manifest.is_file():
        return []
    with manifest.open(newline="", encoding="utf-8") as handle:
        return [f"  {row['path']}: {row['license']}" for row in csv.DictReader(handle)]
