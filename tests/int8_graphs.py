"""Checks of the int8 recipes that need onnx and onnxruntime: run in the onnx venv by tests/test_int8.py.

    python tests/int8_graphs.py synthetic            # the rewrite on hand-made graphs, both Transpose paths
    python tests/int8_graphs.py encoder ENC.onnx     # the rewrite on a real exported encoder, and its gate
    python tests/int8_graphs.py upstream BUNDLE OUT  # sherpa-onnx's own quantize_dynamic call, for comparison
    python tests/int8_graphs.py single-file ONNX     # an .onnx with external weights made one self-contained file
Each prints one JSON line.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from nemo2sherpa.errors import GateFailed
from nemo2sherpa.quantize import encoder_outputs_match, pointwise_convs_to_matmul


def _run(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    s = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)


def _graphs() -> dict[str, onnx.ModelProto]:
    rng = np.random.default_rng(1)

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, "T", 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, "T", 8])
    # The conformer conv module's shape: Transpose, pointwise, gate, pointwise, Transpose back.
    conformer = helper.make_graph([
        helper.make_node("Transpose", ["x"], ["a"], "t_in", perm=[0, 2, 1]),
        helper.make_node("Conv", ["a", "w1", "b1"], ["b"], "pw1", kernel_shape=[1], pads=[0, 0]),
        helper.make_node("Sigmoid", ["b"], ["c"], "act"),
        helper.make_node("Conv", ["c", "w2"], ["d"], "pw2", kernel_shape=[1]),
        helper.make_node("Transpose", ["d"], ["y"], "t_out", perm=[0, 2, 1]),
    ], "conformer", [x], [y], [w("w1", 16, 8, 1), w("b1", 16), w("w2", 8, 16, 1)])
    # Transposes that cannot be absorbed (a second reader, a graph output), and a kernel-3 Conv left alone.
    b_out = helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 16, "T"])
    shared = helper.make_graph([
        helper.make_node("Transpose", ["x"], ["a"], "t_in", perm=[0, 2, 1]),
        helper.make_node("Conv", ["a", "w1", "b1"], ["b"], "pw1", kernel_shape=[1]),
        helper.make_node("Conv", ["a", "w3"], ["c"], "k3", kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Add", ["b", "c"], ["d"], "add"),
        helper.make_node("Conv", ["d", "w2"], ["e"], "pw2", kernel_shape=[1]),
        helper.make_node("Transpose", ["e"], ["y"], "t_out", perm=[0, 2, 1]),
    ], "shared", [x], [y, b_out], [w("w1", 16, 8, 1), w("b1", 16), w("w3", 16, 8, 3), w("w2", 8, 16, 1)])
    return {g.name: helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]) for g in (conformer, shared)}


def synthetic() -> dict:
    feeds = {"x": np.random.default_rng(2).standard_normal((1, 37, 8)).astype(np.float32)}
    out = {}
    for name, model in _graphs().items():
        want = _run(model, feeds)
        n = pointwise_convs_to_matmul(model)
        onnx.checker.check_model(model, full_check=True)
        got = _run(model, feeds)
        ops = [node.op_type for node in model.graph.node]
        out[name] = {"rewritten": n, "ops": ops, "initializers": sorted(t.name for t in model.graph.initializer),
                     "max_abs_diff": max(float(np.abs(a - b).max()) for a, b in zip(want, got)),
                     "outputs": [o.name for o in model.graph.output]}
    return out


def encoder(path: Path, reference: Path | None = None) -> dict:
    """The rewrite on a real encoder, checked against the exported graph and (given reference.npz) PyTorch's output;
    a rewrite made wrong on purpose, refused by both checks."""
    model = onnx.load(str(path))
    n = pointwise_convs_to_matmul(model)
    feat = model.graph.input[0].type.tensor_type.shape.dim[1].dim_value
    with tempfile.TemporaryDirectory() as d:
        good = Path(d) / "good.onnx"
        onnx.save_model(model, str(good))
        diff = encoder_outputs_match(path, good, feat)
        against_pytorch = encoder_outputs_match(path, good, feat, reference=reference) if reference else None
        # A wrong rewrite (one weight transposed the other way round would not even fit: scale one instead).
        t = next(t for t in model.graph.initializer if t.name.endswith("/matmul_weight"))
        t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t) * 1.01, t.name))
        bad = Path(d) / "bad.onnx"
        onnx.save_model(model, str(bad))
        refused = []
        for ref in (None, reference) if reference else (None,):
            try:
                encoder_outputs_match(path, bad, feat, reference=ref)
                refused.append("")
            except GateFailed as e:
                refused.append(str(e))
    return {"rewritten": n, "diff": diff, "against_pytorch": against_pytorch, "refused": refused, "convs_left": sum(
        x.op_type == "Conv" and len(x.input) > 1 for x in model.graph.node)}


def upstream(bundle: Path, out: Path) -> dict:
    """What sherpa-onnx's export scripts run for each module (quantize_dynamic, QUInt8 weights, nothing else)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out.mkdir(parents=True, exist_ok=True)
    for m in ("encoder", "decoder", "joiner"):
        quantize_dynamic(model_input=str(bundle / f"{m}.onnx"), model_output=str(out / f"{m}.int8.onnx"),
                         weight_type=QuantType.QUInt8)
    return {"made": sorted(p.name for p in out.iterdir())}


def single_file(path: Path) -> dict:
    """An .onnx with external weights rewritten as one self-contained file (its .weights file removed)."""
    m = onnx.load(str(path), load_external_data=True)
    onnx.save(m, str(path))
    path.with_suffix(".weights").unlink(missing_ok=True)
    return {"size": path.stat().st_size}


if __name__ == "__main__":
    cmd, *args = sys.argv[1:]
    result = {"synthetic": synthetic, "encoder": lambda: encoder(Path(args[0]), Path(args[1]) if args[1:] else None),
              "upstream": lambda: upstream(Path(args[0]), Path(args[1])),
              "single-file": lambda: single_file(Path(args[0]))}[cmd]()
    print(json.dumps(result))
