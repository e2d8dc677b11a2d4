"""Re-derive the model files shipped in ``prevad_rx/backends/models`` from the silero-vad wheel.

    .venv/bin/python scripts/derive_models.py [--wheel silero_vad-6.2.3-py3-none-any.whl] [--check]

Without ``--wheel`` the wheel is fetched with ``pip download silero-vad==6.2.3
--no-deps`` (PyPI). The script

1. copies ``silero_vad.onnx`` (streaming model, 8 and 16 kHz, input [B, 576]
   and state [2, B, 128]), ``silero_vad_16k_sequence.onnx`` (one call per block
   of frames) and the MIT licence from the wheel;
2. cuts the sequence model at tensor ``/Transpose_output_0`` into an
   **encoder** (STFT + 4 convolutions; stateless, frames independent) and a
   **decoder** (LSTM + output head), and gives the decoder a batch dimension
   and the LSTM's ``sequence_lens`` input so several streams with runs of
   different lengths share one call;
3. builds the **fast encoder** graph (``silero_vad_16k_encoder_fast.onnx``,
   see ``prevad_rx/backends/_fast_encoder.py``) from the encoder's own weights:
   the STFT and the first two convolutions as wide ``MatMul`` calls with 3-D
   weights (at most 43 and 32 columns per GEMM, so ONNX Runtime sums every dot
   product in one pass, as the reference does), the last two convolutions as
   the reference's own ``Conv`` nodes; and saves every weight of the 16 kHz
   network (``silero_vad_16k_weights.npz``) for the torch implementation;
4. checks that encoder + decoder reproduce the sequence model bit for bit, that
   a batched decoder call equals per-stream calls bit for bit, and reports
   whether the fast encoder equals the reference bit for bit on this machine
   (not fatal: the backend verifies again at start-up and falls back);
5. writes ``SHA256SUMS``, or with ``--check`` verifies the shipped files
   against it instead of writing anything.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import onnx
import onnx.utils
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent
MODELS = ROOT / "prevad_rx" / "backends" / "models"
SILERO_VERSION = "6.2.3"
CUT_TENSOR = "/Transpose_output_0"
COPIED = {
    "silero_vad/data/silero_vad.onnx": "silero_vad.onnx",
    "silero_vad/data/silero_vad_16k_sequence.onnx": "silero_vad_16k_sequence.onnx",
    f"silero_vad-{SILERO_VERSION}.dist-info/licenses/LICENSE": "LICENSE",
}
SHIPPED = [
    "LICENSE",
    "silero_vad.onnx",
    "silero_vad_16k_sequence.onnx",
    "silero_vad_16k_encoder.onnx",
    "silero_vad_16k_decoder.onnx",
    "silero_vad_16k_encoder_fast.onnx",
    "silero_vad_16k_weights.npz",
]


def fetch_wheel(dest: Path) -> Path:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            f"silero-vad=={SILERO_VERSION}",
            "--no-deps",
            "--only-binary=:all:",
            "-d",
            str(dest),
        ],
        check=True,
    )
    return next(dest.glob("silero_vad-*.whl"))


def derive(wheel: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member, name in COPIED.items():
            (out / name).write_bytes(archive.read(member))

    sequence = str(out / "silero_vad_16k_sequence.onnx")
    encoder = out / "silero_vad_16k_encoder.onnx"
    decoder = out / "silero_vad_16k_decoder.onnx"
    onnx.utils.extract_model(sequence, str(encoder), ["input"], [CUT_TENSOR])
    onnx.utils.extract_model(
        sequence, str(decoder), [CUT_TENSOR, "h", "c"], ["speech_probs", "hn", "cn"]
    )

    model = onnx.load(str(decoder))
    for value in model.graph.input:
        if value.name in ("h", "c"):
            dim = value.type.tensor_type.shape.dim[1]
            dim.ClearField("dim_value")
            dim.dim_param = "batch"
    model.graph.input.append(
        helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, ["batch"])
    )
    (lstm,) = [node for node in model.graph.node if node.op_type == "LSTM"]
    lstm.input[4] = "sequence_lens"
    onnx.checker.check_model(model)
    onnx.save(model, str(decoder))

    weights = {i.name: numpy_helper.to_array(i) for i in onnx.load(sequence).graph.initializer}
    onnx.save(fast_encoder(weights), str(out / "silero_vad_16k_encoder_fast.onnx"))
    # every weight of the 16 kHz network, for the torch implementation (vLLM plugin)
    buffer = io.BytesIO()
    np.savez(
        buffer,
        **{
            name.replace("onnx::", "").replace(".", "_"): np.ascontiguousarray(value)
            for name, value in weights.items()
        },
    )
    (out / "silero_vad_16k_weights.npz").write_bytes(_deterministic_npz(buffer.getvalue()))


def fast_encoder(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The 16 kHz encoder as wide GEMMs that ONNX Runtime sums exactly like the reference.

    Input ``input`` [n, 576] (context + frame), output the features [n, 1, 128],
    as the reference encoder. The reference runs per-frame GEMMs of 2-4 columns,
    so ONNX Runtime's MLAS adds each dot product up in one pass over K; MLAS's
    pass width grows as the columns per call shrink and a prepacked 2-D weight is
    packed in passes of 256. Here every GEMM is a ``MatMul`` of all frames'
    rows with a **3-D** weight ``[groups, K, columns]`` (one GEMM per group,
    never prepacked, never fused into ``Gemm``): 43 columns for the STFT
    (K = 256), 32 for conv0 (K = 387) and conv1 (K = 384), all one pass, with K
    in the convolution's own (channel, tap) order. The last two convolutions
    (3% of the work) are the reference's own ``Conv`` nodes on [n, 64, 2].
    """
    basis = weights["stft.forward_basis_buffer"][:, 0, :]  # [258, 256]: real 0..128, imag 129..

    def grouped(w: np.ndarray, columns: int) -> np.ndarray:
        """[out, K] -> [out / columns, K, columns]: output channel g * columns + j."""
        out, k = w.shape
        return w.reshape(out // columns, columns, k).transpose(0, 2, 1)

    def f32(a: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(a, dtype=np.float32)

    arrays: dict[str, np.ndarray] = {
        "basis": f32(grouped(basis, 43)),  # [6, 256, 43]: groups 0-2 real, 3-5 imaginary
        "w0": f32(grouped(weights["encoder.0.weight"].reshape(128, 387), 32)),  # [4, 387, 32]
        "b0": f32(weights["encoder.0.bias"].reshape(4, 1, 32)),
        "w1": f32(grouped(weights["encoder.1.weight"].reshape(64, 384), 32)),  # [2, 384, 32]
        "b1": f32(weights["encoder.1.bias"].reshape(2, 1, 32)),
        "w2": f32(weights["encoder.2.weight"]),
        "b2": f32(weights["encoder.2.bias"]),
        "w3": f32(weights["encoder.3.weight"]),
        "b3": f32(weights["encoder.3.bias"]),
        "two": np.array(2.0, np.float32),
    }
    ints = {
        "reflect64": [0, 0, 0, 64],  # [n, 576] -> [n, 640], as the reference's STFT padding
        "time_pad": [0, 1, 0, 0, 1, 0],  # one zero step before and after the time axis
        "axis0": [0],
        "axis1": [1],
        "axis3": [3],
        "g0": [0],
        "g3": [3],
        "g6": [6],
        "step1": [1],
        "step2": [2],
        "rows256": [-1, 256],
        "rows387": [-1, 387],
        "rows384": [-1, 384],
        "mag_shape": [-1, 4, 129],
        "h0_shape": [-1, 4, 128],
        "h1_shape": [-1, 2, 64],
    }
    for t in range(4):  # the STFT's 4 windows of 256 at hops of 128
        ints[f"win{t}_start"], ints[f"win{t}_end"] = [128 * t], [128 * t + 256]
    for tap in range(3):  # im2col: tap k of output t reads padded step t * stride + k
        ints[f"tap{tap}_start"], ints[f"tap{tap}_end"] = [tap], [tap + 4]
    inits = [numpy_helper.from_array(v, k) for k, v in arrays.items()] + [
        numpy_helper.from_array(np.array(v, np.int64), k) for k, v in ints.items()
    ]
    node = helper.make_node

    def im2col(source: str, step: str, out: str) -> list[onnx.NodeProto]:
        """[n, 6, C] time-padded -> [n, T, C, 3] taps on a new last axis ((channel, tap) K)."""
        nodes = []
        for tap in range(3):
            nodes += [
                node(
                    "Slice",
                    [source, f"tap{tap}_start", f"tap{tap}_end", "axis1", step],
                    [f"{out}_tap{tap}"],
                ),
                node("Unsqueeze", [f"{out}_tap{tap}", "axis3"], [f"{out}_tap{tap}_u"]),
            ]
        nodes.append(node("Concat", [f"{out}_tap{t}_u" for t in range(3)], [out], axis=3))
        return nodes

    def dense(rows: str, w: str, b: str, shape: str, out: str) -> list[onnx.NodeProto]:
        """rows [m, K] @ w [G, K, 32] + b, Relu, back to channels last: [n, T, G * 32]."""
        return [
            node("MatMul", [rows, w], [f"{out}_mm"]),  # [G, m, 32]
            node("Add", [f"{out}_mm", b], [f"{out}_add"]),
            node("Relu", [f"{out}_add"], [f"{out}_relu"]),
            node("Transpose", [f"{out}_relu"], [f"{out}_t"], perm=[1, 0, 2]),  # [m, G, 32]
            node("Reshape", [f"{out}_t", shape], [out]),
        ]

    nodes = [node("Pad", ["input", "reflect64"], ["padded"], mode="reflect")]
    for t in range(4):
        nodes += [
            node("Slice", ["padded", f"win{t}_start", f"win{t}_end", "axis1"], [f"win{t}"]),
            node("Unsqueeze", [f"win{t}", "axis1"], [f"win{t}_u"]),
        ]
    nodes += [
        node("Concat", [f"win{t}_u" for t in range(4)], ["windows"], axis=1),  # [n, 4, 256]
        node("Reshape", ["windows", "rows256"], ["window_rows"]),  # [4n, 256]
        node("MatMul", ["window_rows", "basis"], ["spec"]),  # [6, 4n, 43]
        node("Slice", ["spec", "g0", "g3", "axis0"], ["real"]),
        node("Slice", ["spec", "g3", "g6", "axis0"], ["imag"]),
        node("Pow", ["real", "two"], ["real2"]),  # the reference's own magnitude ops
        node("Pow", ["imag", "two"], ["imag2"]),
        node("Add", ["real2", "imag2"], ["power"]),
        node("Sqrt", ["power"], ["mag_g"]),  # [3, 4n, 43]
        node("Transpose", ["mag_g"], ["mag_t"], perm=[1, 0, 2]),
        node("Reshape", ["mag_t", "mag_shape"], ["mag"]),  # [n, 4, 129]: time, frequency
        node("Pad", ["mag", "time_pad"], ["mag_p"]),  # [n, 6, 129]
        *im2col("mag_p", "step1", "cols0"),  # [n, 4, 129, 3]
        node("Reshape", ["cols0", "rows387"], ["rows0"]),  # [4n, 387]
        *dense("rows0", "w0", "b0", "h0_shape", "h0"),  # [n, 4, 128]
        node("Pad", ["h0", "time_pad"], ["h0_p"]),  # [n, 6, 128]
        *im2col("h0_p", "step2", "cols1"),  # [n, 2, 128, 3]: stride 2
        node("Reshape", ["cols1", "rows384"], ["rows1"]),  # [2n, 384]
        *dense("rows1", "w1", "b1", "h1_shape", "h1"),  # [n, 2, 64]
        node("Transpose", ["h1"], ["h1_c"], perm=[0, 2, 1]),  # [n, 64, 2]: channels first
        node("Conv", ["h1_c", "w2", "b2"], ["c2"], kernel_shape=[3], pads=[1, 1], strides=[2]),
        node("Relu", ["c2"], ["h2"]),  # [n, 64, 1]
        node("Conv", ["h2", "w3", "b3"], ["c3"], kernel_shape=[3], pads=[1, 1], strides=[1]),
        node("Relu", ["c3"], ["h3"]),  # [n, 128, 1]
        node("Transpose", ["h3"], [CUT_TENSOR], perm=[0, 2, 1]),  # [n, 1, 128]
    ]
    graph = helper.make_graph(
        nodes,
        "silero_vad_16k_encoder_fast",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["n", 576])],
        [helper.make_tensor_value_info(CUT_TENSOR, TensorProto.FLOAT, ["n", 1, 128])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.producer_name = "prevad_rx scripts/derive_models.py"
    onnx.checker.check_model(model)
    return model


def _deterministic_npz(data: bytes) -> bytes:
    """Rewrite a .npz (a zip) with fixed timestamps, so the file's hash is reproducible."""
    source = zipfile.ZipFile(io.BytesIO(data))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as target:
        for info in sorted(source.infolist(), key=lambda i: i.filename):
            fixed = zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0))
            target.writestr(fixed, source.read(info.filename))
    return out.getvalue()


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def verify(out: Path) -> None:
    sequence = session(out / "silero_vad_16k_sequence.onnx")
    encoder = session(out / "silero_vad_16k_encoder.onnx")
    decoder = session(out / "silero_vad_16k_decoder.onnx")
    rng = np.random.default_rng(0)
    lengths = [63, 17, 1, 40]
    features, states, references = [], [], []
    for n in lengths:
        windows = (rng.standard_normal((n, 576)) * 0.1).astype(np.float32)
        h = (rng.standard_normal((1, 1, 128)) * 0.3).astype(np.float32)
        c = (rng.standard_normal((1, 1, 128)) * 0.3).astype(np.float32)
        references.append(sequence.run(None, {"input": windows, "h": h, "c": c}))
        (feat,) = encoder.run(None, {"input": windows})
        features.append(feat[:, 0, :])
        states.append((h, c))
    batch = np.zeros((max(lengths), len(lengths), 128), np.float32)
    for b, feat in enumerate(features):
        batch[: len(feat), b] = feat
    probs, hn, cn = decoder.run(
        None,
        {
            CUT_TENSOR: batch,
            "h": np.concatenate([h for h, _ in states], axis=1),
            "c": np.concatenate([c for _, c in states], axis=1),
            "sequence_lens": np.array(lengths, np.int32),
        },
    )
    probs = probs.reshape(len(lengths), -1)
    for b, (n, (ref_p, ref_h, ref_c)) in enumerate(zip(lengths, references, strict=True)):
        if not (
            np.array_equal(probs[b, :n], ref_p)
            and np.array_equal(hn[0, b], ref_h[0, 0])
            and np.array_equal(cn[0, b], ref_c[0, 0])
        ):
            raise SystemExit(f"encoder+decoder differs from the sequence model (stream {b})")
    print("encoder + batched decoder == sequence model, bit for bit")
    fast = session(out / "silero_vad_16k_encoder_fast.onnx")
    differing = []
    for n in (*range(1, 65), 100, 255, 256, 257, 512):
        windows = (rng.standard_normal((n, 576)) * 0.1).astype(np.float32)
        (want,) = encoder.run(None, {"input": windows})
        (got,) = fast.run(None, {"input": windows})
        if not np.array_equal(got, want):
            differing.append(n)
    if differing:
        print(f"note: the fast encoder differs from the reference here at batch sizes {differing}")
    else:
        print("fast encoder == reference encoder, bit for bit (batch sizes 1..64, 100..512)")


def digests(folder: Path) -> str:
    lines = [
        f"{hashlib.sha256((folder / name).read_bytes()).hexdigest()}  {name}\n" for name in SHIPPED
    ]
    return "".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="silero-vad wheel (default: pip download)")
    parser.add_argument("--check", action="store_true", help="verify the shipped files only")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(Path(tmp))
        out = Path(tmp) / "models" if args.check else MODELS
        derive(wheel, out)
        verify(out)
        derived = digests(out)
        if args.check:
            shipped = (MODELS / "SHA256SUMS").read_text()
            if derived != shipped:
                raise SystemExit("derived models differ from the shipped SHA256SUMS:\n" + derived)
            print("shipped models match what the wheel derives")
        else:
            (MODELS / "SHA256SUMS").write_text(derived)
            print(derived, end="")


if __name__ == "__main__":
    main()
