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
3. for the fast encoder (``prevad_rx/backends/_fast_encoder.py``): saves the
   STFT basis and the first two convolutions' weights as GEMM matrices
   (``silero_vad_16k_encoder_gemm.npz``) and writes the encoder's last two
   convolutions as per-frame batched matrix products
   (``silero_vad_16k_encoder_tail.onnx``); and saves every weight of the 16 kHz
   network (``silero_vad_16k_weights.npz``) for the torch implementation;
4. checks that encoder + decoder reproduce the sequence model bit for bit, and
   that a batched decoder call equals per-stream calls bit for bit;
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
    "silero_vad_16k_encoder_tail.onnx",
    "silero_vad_16k_encoder_gemm.npz",
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
    onnx.save(encoder_tail(weights), str(out / "silero_vad_16k_encoder_tail.onnx"))
    conv0 = weights["encoder.0.weight"]  # [128, 129, 3]
    conv1 = weights["encoder.1.weight"]  # [64, 128, 3]
    # GEMM operands with K in the convolution's own (channel, tap) order
    gemm = {
        "stft_basis_t": weights["stft.forward_basis_buffer"][:, 0, :].T,  # [256, 258]
        "conv0_w_t": conv0.reshape(conv0.shape[0], -1).T,  # [387, 128]
        "conv0_b": weights["encoder.0.bias"],
        "conv1_w_t": conv1.reshape(conv1.shape[0], -1).T,  # [384, 64]
        "conv1_b": weights["encoder.1.bias"],
    }
    buffer = io.BytesIO()
    np.savez(buffer, **{k: np.ascontiguousarray(v, dtype=np.float32) for k, v in gemm.items()})
    (out / "silero_vad_16k_encoder_gemm.npz").write_bytes(_deterministic_npz(buffer.getvalue()))
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


def encoder_tail(weights: dict[str, np.ndarray]) -> onnx.ModelProto:
    """The encoder's last two convolutions as one graph of batched MatMuls.

    Inputs ``h1`` [n, 2, 64] (time, channel: the fast encoder's layout) and ``zeros``
    [n, 64, 1]; output the features [n, 1, 128]. Each convolution is the matrix
    product ORT's ``Conv`` computes per frame -- weights [out, channel x tap] times
    that frame's im2col column [channel x tap, 1] with zeros at the padded taps --
    done by ``MatMul`` with the frames as a batch, so each frame's product has the
    same shape as in the original graph.
    """
    w2, b2 = weights["encoder.2.weight"], weights["encoder.2.bias"]  # [64, 64, 3]
    w3, b3 = weights["encoder.3.weight"], weights["encoder.3.bias"]  # [128, 64, 3]
    inits = [
        numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name)
        for name, array in (
            ("w2", w2.reshape(64, 192)),
            ("b2", b2.reshape(64, 1)),
            ("w3", w3.reshape(128, 192)),
            ("b3", b3.reshape(128, 1)),
        )
    ] + [
        numpy_helper.from_array(np.array(v, np.int64), name)
        for name, v in (
            ("column", [0, 192, 1]),
            ("features", [0, 1, 128]),
        )
    ]
    # The zero taps come in as an input and are joined with Concat: for these tiny
    # tensors ORT's Pad (and a broadcast Mul) cost more than the products themselves.
    nodes = [
        helper.make_node("Transpose", ["h1"], ["ncl"], perm=[0, 2, 1]),  # [n, 64, 2]
        helper.make_node("Concat", ["zeros", "ncl"], ["taps2"], axis=2),  # [n, 64, 3]
        helper.make_node("Reshape", ["taps2", "column"], ["col2"]),  # [n, 192, 1]
        helper.make_node("MatMul", ["w2", "col2"], ["mm2"]),  # [n, 64, 1]
        helper.make_node("Add", ["mm2", "b2"], ["add2"]),
        helper.make_node("Relu", ["add2"], ["h2"]),
        helper.make_node("Concat", ["zeros", "h2", "zeros"], ["taps3"], axis=2),  # [n, 64, 3]
        helper.make_node("Reshape", ["taps3", "column"], ["col3"]),
        helper.make_node("MatMul", ["w3", "col3"], ["mm3"]),  # [n, 128, 1]
        helper.make_node("Add", ["mm3", "b3"], ["add3"]),
        helper.make_node("Relu", ["add3"], ["h3"]),
        helper.make_node("Reshape", ["h3", "features"], [CUT_TENSOR]),
    ]
    graph = helper.make_graph(
        nodes,
        "silero_vad_16k_encoder_tail",
        [
            helper.make_tensor_value_info("h1", TensorProto.FLOAT, ["n", 2, 64]),
            helper.make_tensor_value_info("zeros", TensorProto.FLOAT, ["n", 64, 1]),
        ],
        [helper.make_tensor_value_info(CUT_TENSOR, TensorProto.FLOAT, ["n", 1, 128])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 16)], ir_version=8)
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
