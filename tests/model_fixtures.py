"""Small, real ONNX models built with onnx.helper, and their cards, for tests.

The graph computes, for each label l, sigmoid(sum_b W[b, l] * mean_t x[b, t] + bias[l]): a
linear model on the band means of the window. Tests compute the same in numpy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import onnx
from onnx import TensorProto, helper, numpy_helper

from soundsentry.contracts import WindowScores
from soundsentry.features.featurizer import FeatureProfile, Featurizer
from soundsentry.models.model_set import ModelCard, ModelSet, read_card, score_to_proto
from tests.audio_fixtures import chunks, recording


def linear_model(
    path: Path,
    *,
    weights: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
    num_frames: int,
    frame_output: bool = False,
) -> None:
    """Write the ONNX model; ``weights`` has shape (num_bands, num_labels)."""
    bands, labels = weights.shape
    nodes = [
        helper.make_node("ReduceMean", ["log_mel"], ["means"], axes=[3], keepdims=0),
        helper.make_node("Reshape", ["means", "flat_shape"], ["flat"]),
        helper.make_node("MatMul", ["flat", "W"], ["logits"]),
        helper.make_node("Add", ["logits", "b"], ["biased"]),
        helper.make_node("Sigmoid", ["biased"], ["scores"]),
    ]
    outputs = [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", labels])]
    if frame_output:
        # Frame scores: the same linear model applied to every frame.
        nodes += [
            helper.make_node("Reshape", ["log_mel", "frames_shape"], ["frames"]),
            helper.make_node("Transpose", ["frames"], ["frames_t"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["frames_t", "W"], ["frame_logits"]),
            helper.make_node("Add", ["frame_logits", "b"], ["frame_biased"]),
            helper.make_node("Sigmoid", ["frame_biased"], ["frame_sig"]),
            helper.make_node("Transpose", ["frame_sig"], ["frame_scores"], perm=[0, 2, 1]),
        ]
        outputs.append(
            helper.make_tensor_value_info(
                "frame_scores", TensorProto.FLOAT, ["batch", labels, num_frames]
            )
        )
    constants = [
        numpy_helper.from_array(weights.astype(np.float32), "W"),
        numpy_helper.from_array(bias.astype(np.float32), "b"),
        numpy_helper.from_array(np.array([-1, bands], dtype=np.int64), "flat_shape"),
    ]
    if frame_output:
        constants.append(
            numpy_helper.from_array(
                np.array([-1, bands, num_frames], dtype=np.int64), "frames_shape"
            )
        )
    graph = helper.make_graph(
        nodes,
        "linear-band-means",
        [
            helper.make_tensor_value_info(
                "log_mel", TensorProto.FLOAT, ["batch", 1, bands, num_frames]
            )
        ],
        outputs,
        initializer=[
            numpy_helper.from_array(weights.astype(np.float32), "W"),
            numpy_helper.from_array(bias.astype(np.float32), "b"),
            numpy_helper.from_array(np.array([-1, bands], dtype=np.int64), "flat_shape"),
            numpy_helper.from_array(
                np.array([-1, bands, num_frames], dtype=np.int64), "frames_shape"
            ),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, path)


def expected_scores(
    log_mel: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    bias: npt.NDArray[np.float32],
) -> npt.NDArray[np.float64]:
    """What :func:`linear_model` computes, in numpy: [n, bands, frames] -> [n, labels]."""
    logits = log_mel.astype(np.float64).mean(axis=2) @ weights + bias
    return 1.0 / (1.0 + np.exp(-logits))


def write_model(
    directory: Path,
    name: str,
    profile: FeatureProfile,
    labels: list[str],
    *,
    seed: int = 0,
    frame_output: bool = False,
    **card: Any,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Write ``<name>.onnx`` and ``<name>.json``; return the weights and bias."""
    rng = np.random.default_rng(seed)
    weights = (rng.standard_normal((profile.num_bands, len(labels))) * 0.02).astype(np.float32)
    bias = rng.standard_normal(len(labels)).astype(np.float32)
    linear_model(
        directory / f"{name}.onnx",
        weights=weights,
        bias=bias,
        num_frames=profile.window_frames,
        frame_output=frame_output,
    )
    mel = profile.mel
    document = {
        "name": name,
        "version": "0.0.1",
        "onnx": f"{name}.onnx",
        "labels": labels,
        "profile": {
            "name": profile.name,
            "mel": {
                "sample_rate_hz": mel.sample_rate_hz,
                "n_fft": mel.n_fft,
                "hop_length": mel.hop_length,
                "n_mels": mel.n_mels,
                "fmin_hz": mel.fmin_hz,
                "fmax_hz": mel.fmax_hz,
            },
            "window_s": profile.window_s,
            "window_hop_s": profile.window_hop_s,
            "band_fmin_hz": profile.band_fmin_hz,
            "band_fmax_hz": profile.band_fmax_hz,
            "standardize": profile.standardize,
        },
        "licence": "test fixture",
        **card,
    }
    (directory / f"{name}.json").write_text(json.dumps(document, indent=2))
    return weights, bias


LABELS = ["siren", "dog_bark"]
EVENT_RULES = {
    "siren": {"on_threshold": 0.3, "off_threshold": 0.2, "min_duration_s": 0.5},
    "dog_bark": {"on_threshold": 0.5, "off_threshold": 0.4, "smoothing_windows": 2},
}


def patterned_scores(
    directory: Path, *, sensor_id: str = "mic-1"
) -> tuple[ModelCard, list[WindowScores]]:
    """A "general" model card in ``directory`` and its score messages for real windows of one
    sensor (three recordings in one stream), with scores of a known rhythm: sirens in runs of
    six windows, barks of three, so that events start and end many times (the fixture's model
    itself is random)."""
    profile = FeatureProfile("full-16k", window_s=1.0, window_hop_s=0.5)
    write_model(directory, "general", profile, LABELS, frame_output=True, event_rules=EVENT_RULES)
    models = ModelSet.from_dir(directory)
    audio = np.concatenate([recording(name)[0] for name in ("siren", "dog_bark", "siren")])
    stream = chunks(audio, 16_000, [1600], sensor_id=sensor_id)
    windows = Featurizer([profile]).process(list(stream)).windows
    messages = [score_to_proto(r, LABELS) for r in models.score(windows)]
    for index, message in enumerate(messages):
        values = (0.9 if (index // 6) % 2 else 0.05, 0.8 if index % 10 in (2, 3, 4) else 0.1)
        for entry, value in zip(message.scores, values, strict=True):
            entry.score = value
            entry.frame_scores[:] = [value] * len(entry.frame_scores)
    return read_card(directory / "general.json"), messages
