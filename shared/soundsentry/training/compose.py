"""Composite models (``soundsentry compose``): a general model and specialists in one ONNX graph.

A specialist (say, smoke and CO alarms on the band above 1.5 kHz) beside a general model is
better at its labels, but as a second model it costs the pipeline a second score message per
window: the alerter's work grows with messages, not labels. Composing puts both networks into
one graph behind one input: the specialist's branch takes the rows of its band (a ``Slice``),
each label's output comes from the part that answers for it (a specialist answers for its
``takes_over`` labels, the general model for the rest), and the composite serves as one model:
one ONNX call per batch, one message per window.

The composite's scores are its parts' scores, exactly (checked on every validation window of
the data set before anything is written). Its thresholds, window metrics and event rules are
tuned on that validation split as ``soundsentry train`` does (so they equal what each part got
for its labels on the same data), and the card's ``composition`` names each part's card,
version and the labels taken from it. Then the ONNX file and the card are written, the card in
one rename.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from soundsentry.exceptions import ConfigurationError, SoundSentryError
from soundsentry.features.featurizer import profile_document
from soundsentry.models.model_set import (
    INPUT_NAME,
    CompositionPart,
    LoadedModel,
    ModelCard,
    band_rows,
    carries,
    load_model,
    read_card,
    reported_labels,
    write_card,
)
from soundsentry.training.calibration import (
    TunedRule,
    card_margin,
    margin_metric,
    predict_all,
    retune_document,
)

__all__ = ["ComposeReport", "CompositionCheckError", "compose_cards"]

logger = logging.getLogger(__name__)

# The parts' scores pass through Concat and Gather only: any difference is a wiring mistake.
_TOLERANCE = 1e-6


class CompositionCheckError(SoundSentryError):
    """The composite's scores are not its parts' (nothing was written)."""


@dataclass(frozen=True)
class ComposeReport:
    card: Path
    onnx: Path
    sources: dict[str, str]  # label -> model name
    largest_difference: float
    tuned: dict[str, TunedRule]


@dataclass(frozen=True)
class _Part:
    model: LoadedModel
    card_path: Path
    rows: slice  # of the composite's input bands


def _parts(base_path: Path, specialist_paths: list[Path]) -> list[_Part]:
    base = load_model(base_path)
    parts = [_Part(base, base_path, slice(0, base.profile.num_bands))]
    frame_output = base.frame_output
    names = {base.name}
    for path in specialist_paths:
        model = load_model(path)
        card = model.card
        if not card.takes_over:
            raise ConfigurationError(f"{path}: a specialist's card must list takes_over labels")
        if card.name in names:
            raise ConfigurationError(f"{path}: a second part named {card.name!r}")
        names.add(card.name)
        if not carries(base.profile, model.profile):
            raise ConfigurationError(
                f"{path}: profile {model.profile.name!r} is not a band of {base.profile.name!r}'s "
                "windows (same mel spec and window geometry, neither standardised)"
            )
        if card.silence_gate_dbfs != base.card.silence_gate_dbfs:
            raise ConfigurationError(
                f"{path}: silence gate {card.silence_gate_dbfs} differs from the base's "
                f"{base.card.silence_gate_dbfs} (a composite has one)"
            )
        if model.frame_output != frame_output:
            raise ConfigurationError(
                f"{path}: frame-level scores in one part and not in the other cannot be composed"
            )
        parts.append(_Part(model, path, band_rows(base.profile, model.profile)))
    reported_labels(part.model.card for part in parts[1:])  # two taking over one label
    return parts


def _sources(parts: list[_Part]) -> list[tuple[str, int, int]]:
    """(label, part, output index) in the composite's label order: the base's labels, then
    the specialists' new ones; each from the part that answers for it."""
    owner = {
        label: p for p, part in enumerate(parts[1:], 1) for label in part.model.card.takes_over
    }
    labels = list(parts[0].model.card.labels)
    labels += [
        label for part in parts[1:] for label in part.model.card.takes_over if label not in labels
    ]
    return [
        (label, owner.get(label, 0), parts[owner.get(label, 0)].model.card.labels.index(label))
        for label in labels
    ]


def _fuse(parts: list[_Part], sources: list[tuple[str, int, int]]) -> Any:
    """One ONNX graph: each part behind a prefix, fed the rows of its band, outputs gathered."""
    onnx = _onnx()
    from onnx import TensorProto, compose, helper, numpy_helper  # noqa: PLC0415

    base = parts[0].model
    bands, frames = base.profile.num_bands, base.profile.window_frames
    frame_output = base.frame_output
    nodes: list[Any] = []
    initializers: list[Any] = []
    value_info: list[Any] = []
    opsets: dict[str, int] = {}
    ir_version = 0
    scores, frame_scores, offsets = [], [], []
    offset = 0
    for index, part in enumerate(parts):
        model = compose.add_prefix(onnx.load(str(part.model.onnx_path)), f"part{index}/")
        graph = model.graph
        if model.functions:
            raise ConfigurationError(
                f"{part.model.onnx_path}: graphs with functions are not composed"
            )
        ir_version = max(ir_version, model.ir_version)
        for opset in model.opset_import:
            domain = "" if opset.domain == "ai.onnx" else opset.domain
            known = opsets.setdefault(domain, opset.version)
            if known != opset.version:
                # An operator's meaning can change between opsets: never read one as another.
                raise ConfigurationError(
                    f"{part.model.onnx_path}: opset {opset.version} of domain "
                    f"{domain or 'ai.onnx'!r}, another part has {known}; export both alike"
                )
        (source_input,) = [
            i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}
        ]
        if part.rows == slice(0, bands):
            nodes.append(helper.make_node("Identity", [INPUT_NAME], [source_input]))
        else:
            bounds = [f"part{index}/rows.{name}" for name in ("start", "stop", "axis")]
            for name, value in zip(bounds, (part.rows.start, part.rows.stop, 2), strict=True):
                initializers.append(numpy_helper.from_array(np.array([value], np.int64), name))
            nodes.append(helper.make_node("Slice", [INPUT_NAME, *bounds], [source_input]))
        nodes += list(graph.node)
        initializers += list(graph.initializer)
        value_info += list(graph.value_info)
        outputs = [o.name for o in graph.output]
        scores.append(outputs[0])
        if frame_output:
            frame_scores.append(outputs[1])
        offsets.append(offset)
        offset += len(part.model.card.labels)
    picks = np.array([offsets[p] + i for _, p, i in sources], np.int64)
    initializers.append(numpy_helper.from_array(picks, "composite/picks"))
    outs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", len(sources)])]
    nodes += [
        helper.make_node("Concat", scores, ["composite/all_scores"], axis=1),
        helper.make_node("Gather", ["composite/all_scores", "composite/picks"], ["scores"], axis=1),
    ]
    if frame_output:
        nodes += [
            helper.make_node("Concat", frame_scores, ["composite/all_frames"], axis=1),
            helper.make_node(
                "Gather", ["composite/all_frames", "composite/picks"], ["frame_scores"], axis=1
            ),
        ]
        outs.append(
            helper.make_tensor_value_info(
                "frame_scores", TensorProto.FLOAT, ["batch", len(sources), frames]
            )
        )
    graph = helper.make_graph(
        nodes,
        "composite",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, ["batch", 1, bands, frames])],
        outs,
        initializer=initializers,
        value_info=value_info,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid(domain, version) for domain, version in opsets.items()],
        producer_name="soundsentry compose",
    )
    model.ir_version = ir_version
    onnx.checker.check_model(model)
    return model


def _copy_licence_files(parts: list[_Part], out: Path) -> None:
    """The parts' ``<name>.LICENCES.txt`` and ``<name>.FREESOUNDCREDITS.txt`` beside the
    composite's card (the first part that has one: the parts share their data's licences), as
    the card's licence statement refers to them."""
    name = out.stem
    for extra in ("LICENCES.txt", "FREESOUNDCREDITS.txt"):
        for part in parts:
            source = part.card_path.parent / f"{part.card_path.stem}.{extra}"
            if source.is_file():
                if source.resolve() != (out.parent / f"{name}.{extra}").resolve():
                    shutil.copyfile(source, out.parent / f"{name}.{extra}")
                break


def compose_cards(
    base_card: str | Path,
    specialist_cards: list[str | Path],
    dataset_dir: str | Path,
    out_card: str | Path,
    *,
    version: str,
) -> ComposeReport:
    """Compose the model of ``base_card`` with the specialists of ``specialist_cards`` into
    ``out_card`` (its ONNX file beside it, named like the card); see the module docstring.

    The composite's name is the card file's stem; its silence gate is the base's.

    Raises
    ------
    ConfigurationError
        for parts that do not load or do not fit together (a specialist without
        ``takes_over``, two taking over one label, a profile that is not a band of the
        base's windows, another silence gate, frame scores in one part only, another opset),
        an output that would overwrite a part's files or a card that is no composite's, a
        data set without the labels, or a missing onnx package.
    CompositionCheckError
        when the composite's scores are not its parts' (nothing is written).
    """
    from soundsentry.training.examples import load_dataset, validation_set  # noqa: PLC0415

    out = Path(out_card)
    target = out.with_suffix(".onnx")
    parts = _parts(Path(base_card), [Path(p) for p in specialist_cards])
    _check_output(out, target, parts)
    out.parent.mkdir(parents=True, exist_ok=True)
    sources = _sources(parts)
    labels = tuple(label for label, _, _ in sources)
    base = parts[0].model
    data = load_dataset(dataset_dir, profile=base.profile, labels=labels, splits=("validate",))
    inputs, targets = validation_set(data)
    dataset_name = Path(dataset_dir).resolve().name
    document = _document(out, parts, sources, version=version)
    logger.info("composing %s from %s", out, ", ".join(p.model.name for p in parts))

    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".compose-") as scratch:
        candidate = Path(scratch) / target.name
        _onnx().save(_fuse(parts, sources), str(candidate))
        composite = LoadedModel(ModelCard.model_validate(document), candidate, card_path=out)
        ours = predict_all(composite, inputs)
        largest = 0.0
        for index, part in enumerate(parts):
            theirs = predict_all(part.model, inputs[:, part.rows])
            for column, (_, p, i) in enumerate(sources):
                if p != index:
                    continue
                largest = max(largest, float(np.abs(ours[0][:, column] - theirs[0][:, i]).max()))
                if ours[1] is not None and theirs[1] is not None:
                    gap = np.abs(ours[1][:, column] - theirs[1][:, i]).max()
                    largest = max(largest, float(gap))
        if largest > _TOLERANCE:
            raise CompositionCheckError(
                f"{out}: the composite's scores differ from its parts' by {largest:.2e}; "
                "nothing was written"
            )
        tuned = retune_document(document, data, ours, targets, dataset_name=dataset_name)
        candidate.replace(target)
        _copy_licence_files(parts, out)
        write_card(out, document)
    return ComposeReport(
        card=out,
        onnx=target,
        sources={label: parts[p].model.name for label, p, _ in sources},
        largest_difference=largest,
        tuned=tuned,
    )


def _onnx() -> Any:
    try:
        import onnx  # noqa: PLC0415 - the [quantize] extra
    except ImportError as exc:
        raise ConfigurationError(
            "composing needs the onnx package: pip install 'soundsentry[quantize]'"
        ) from exc
    return onnx


def _check_output(out: Path, target: Path, parts: list[_Part]) -> None:
    """Refuse to write over a part's card or ONNX files, or over a card that is no composite
    (replacing an earlier composite is how a composite is updated)."""
    taken = set()
    for part in parts:
        card = part.model.card
        folder = part.card_path.parent
        taken |= {part.card_path.resolve(), (folder / card.onnx).resolve()}
        if card.quantization is not None:
            taken.add((folder / card.quantization.source_onnx).resolve())
    for path in (out, target):
        if path.resolve() in taken:
            raise ConfigurationError(f"{out}: {path.name} would overwrite a part's file")
    if out.exists():
        try:
            previous = read_card(out)
        except ConfigurationError:
            previous = None
        if previous is None or not previous.composition:
            raise ConfigurationError(
                f"{out} exists and is no composite's card; remove it or choose another --out"
            )


def _document(
    out: Path, parts: list[_Part], sources: list[tuple[str, int, int]], *, version: str
) -> dict[str, Any]:
    base = parts[0].model.card
    training_data: list[dict[str, str]] = []
    for part in parts:
        training_data += [e for e in part.model.card.training_data if e not in training_data]
    licences = list(
        dict.fromkeys(part.model.card.licence for part in parts if part.model.card.licence)
    )
    composition = [
        CompositionPart(
            card=Path(os.path.relpath(part.card_path.resolve(), out.parent.resolve())).as_posix(),
            name=part.model.name,
            version=part.model.card.version,
            labels=[label for label, p, _ in sources if p == index],
        )
        for index, part in enumerate(parts)
    ]
    described = "; ".join(
        f"{c.name} {c.version} for {', '.join(c.labels)}" for c in composition if c.labels
    )
    # The composite's rules are tuned again: to the strictest false-alarm budget and margin of
    # its parts (calibrate_document reads the margin from the metrics and records it again).
    budgeted = [p.model.card for p in parts if p.model.card.false_alarm_budget_per_hour is not None]
    budgets = [b for card in budgeted if (b := card.false_alarm_budget_per_hour) is not None]
    margins = [card_margin(card.metrics) for card in budgeted]
    return {
        "name": out.stem,
        "version": version,
        "onnx": out.with_suffix(".onnx").name,
        "labels": [label for label, _, _ in sources],
        "profile": profile_document(base.profile),
        "silence_gate_dbfs": base.silence_gate_dbfs,
        "false_alarm_budget_per_hour": min(budgets) if budgets else None,
        "training_data": training_data,
        "licence": " / ".join(licences),
        "description": f"Composite made by soundsentry compose: {described}.",
        "composition": [c.model_dump() for c in composition],
        "metrics": margin_metric(max(margins, default=0.0), budget=min(budgets, default=None)),
    }
