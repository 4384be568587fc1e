"""The int8 recipes: the pointwise-Conv-as-MatMul rewrite, its gate, what each recipe leaves in the graph."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from conftest import INCLUDE, ROOT, last_json, run_cli, stage_python
from nemo2sherpa.quantize import INT8_RECIPES

SCRIPT = ROOT / "tests" / "int8_graphs.py"


def _in_onnx_venv(*args: str) -> dict:
    proc = subprocess.run([str(stage_python("onnx")), str(SCRIPT), *args], capture_output=True, text=True,
                          env={"PYTHONPATH": str(INCLUDE)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_pointwise_convs_become_matmuls_with_the_same_output():
    """Kernel-size-1 Convs become MatMul (+ Add for a bias) with the same numbers; a Transpose(0,2,1) that only
    feeds the Conv, or only reads it, is absorbed; a shared one, a graph output and a kernel-3 Conv are kept."""
    r = _in_onnx_venv("synthetic")
    conformer, shared = r["conformer"], r["shared"]
    assert conformer["rewritten"] == 2 and "Conv" not in conformer["ops"]
    # Both outer Transposes absorbed; the two left turn the gate's [N, C, T] around, as the depthwise conv needs.
    assert conformer["ops"].count("Transpose") == 2 and conformer["ops"].count("MatMul") == 2
    assert conformer["initializers"] == ["b1", "pw1/matmul_weight", "pw2/matmul_weight"]  # old weights dropped
    assert conformer["max_abs_diff"] <= 1e-5
    assert shared["rewritten"] == 2 and shared["ops"].count("Conv") == 1  # the kernel-3 Conv stays
    assert shared["outputs"] == ["y", "b"] and "w3" in shared["initializers"]  # a graph output keeps its name
    assert shared["max_abs_diff"] <= 1e-5


def test_the_rewrite_is_checked_on_the_real_encoder_and_a_wrong_one_is_refused(exported):
    """Against the exported graph, and against PyTorch's output recorded at export (what quantize uses in a run:
    one 4 GB session at 1.1B instead of two)."""
    r = _in_onnx_venv("encoder", str(exported / "bundle" / "encoder.onnx"),
                      str(exported / "reference" / "reference.npz"))
    assert r["rewritten"] == 4  # two pointwise convs in each of the tiny model's 2 conformer layers
    assert r["convs_left"] == 7  # subsampling (5) and the depthwise convs (2) are not pointwise Conv1d
    assert r["diff"] <= 1e-5 and r["against_pytorch"] <= 1e-5
    for refused in r["refused"]:
        assert "differs from the exported one by" in refused and "sherpa-onnx" in refused


def test_default_recipe_leaves_no_conv_integer_and_quantizes_per_channel(full_bundle):
    """The VNNI recipe: MatMulInteger with one int8 scale per output column, no ConvInteger anywhere."""
    code = """
import json, sys, onnx
from onnx import numpy_helper
m = onnx.load(sys.argv[1])
inits = {t.name: t for t in m.graph.initializer}
mm = [n for n in m.graph.node if n.op_type == "MatMulInteger"]
print(json.dumps({"ops": sorted({n.op_type for n in m.graph.node}), "matmuls": len(mm),
  "weight_types": sorted({inits[n.input[1]].data_type for n in mm if n.input[1] in inits}),
  "per_channel": all(len(inits[n.input[3]].dims) == 1 and inits[n.input[3]].dims[0] == inits[n.input[1]].dims[1]
                     for n in mm if n.input[1] in inits)}))
"""
    out = subprocess.run([str(stage_python("onnx")), "-c", code, str(full_bundle / "bundle" / "encoder.int8.onnx")],
                         capture_output=True, text=True, check=True, env={"PYTHONPATH": str(INCLUDE)})
    r = json.loads(out.stdout)
    assert "ConvInteger" not in r["ops"] and r["matmuls"] >= 23  # 19 Linear layers + 4 pointwise convs
    assert r["weight_types"] == [3]  # onnx.TensorProto.INT8: the u8 x s8 (VNNI) path, not QUInt8
    assert r["per_channel"]


@pytest.mark.parametrize("recipe", list(INT8_RECIPES))
def test_quantize_without_the_model_copy_gives_the_stock_bytes(exported, tmp_path, recipe):
    """quantize skips onnxruntime's deepcopy of the fp32 model (4.2 GB at 1.1B) and quantizes every channel at once
    (per_channel_at_once: onnxruntime's loop took ~70 s at 1.1B); the int8 files are byte for byte what the stock
    quantizer makes, so a change in onnxruntime that breaks either shortcut fails here."""
    frugal, stock = tmp_path / "frugal" / "bundle", tmp_path / "stock" / "bundle"
    for b in (frugal, stock):
        shutil.copytree(exported / "bundle", b)
    a = last_json(run_cli("onnx", "quantize", "--bundle", str(frugal), "--int8-recipe", recipe))
    run_cli("onnx", "quantize", "--bundle", str(stock), "--int8-recipe", recipe, "--stock-quantizer")
    assert a["recipe"] == recipe
    for name in ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"):
        assert (frugal / name).read_bytes() == (stock / name).read_bytes(), name


def test_per_channel_quantization_at_once_gives_onnxruntimes_bytes():
    """quantize.per_channel_params (every channel in one numpy pass) against onnxruntime's own per-channel loop,
    on weights with the awkward channels too: all zeros, constant, one huge value, denormal-small; int8 symmetric and
    7-bit, uint8 asymmetric; either axis. Bit for bit (the int8 files' byte test above holds the whole path)."""
    code = """
import json, numpy as np, sys
sys.path.insert(0, sys.argv[1])
from onnx import TensorProto
from onnxruntime.quantization.quant_utils import quantize_data
from nemo2sherpa.quantize import per_channel_params
rng = np.random.default_rng(7)
w = rng.standard_normal((48, 40)).astype(np.float32)
w[:, 0] = 0; w[:, 1] = 0.25; w[3, 2] = 1e4; w[:, 3] = 1e-39; w[:, 4] = -2.0
bad = []
for qtype, symmetric, reduce in ((TensorProto.INT8, True, False), (TensorProto.INT8, True, True),
                                 (TensorProto.UINT8, False, False)):
    for axis in (0, 1):
        q, zero, scale = per_channel_params(w, axis, qtype, symmetric, reduce)
        for i in range(w.shape[axis]):
            z, s, d = quantize_data(w.take(i, axis).flatten(), qtype, symmetric, reduce_range=reduce)
            ok = (np.array_equal(np.asarray(d).reshape(-1), q.take(i, axis).reshape(-1)) and z == zero[i]
                  and np.float32(s) == scale[i] and scale.dtype == np.float32)
            if not ok:
                bad.append([int(qtype), symmetric, reduce, axis, i])
print(json.dumps({"bad": bad[:5], "n": len(bad)}))
"""
    proc = subprocess.run([str(stage_python("onnx")), "-c", code, str(INCLUDE)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"bad": [], "n": 0}


def test_the_7bit_recipe_keeps_weights_within_plus_minus_63(exported, tmp_path):
    """For CPUs without VNNI: 7-bit weights, so two u8 x s8 products summed in 16 bits cannot saturate."""
    b = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", b)
    run_cli("onnx", "quantize", "--bundle", str(b), "--int8-recipe", "matmul-qint8-7bit")
    code = """
import json, sys, onnx
from onnx import numpy_helper
m = onnx.load(sys.argv[1])
inits = {t.name: t for t in m.graph.initializer}
w = [numpy_helper.to_array(inits[n.input[1]]) for n in m.graph.node if n.op_type == "MatMulInteger" and n.input[1] in inits]
print(json.dumps({"n": len(w), "max": max(int(abs(x.astype(int)).max()) for x in w)}))
"""
    out = subprocess.run([str(stage_python("onnx")), "-c", code, str(b / "encoder.int8.onnx")], capture_output=True,
                         text=True, check=True, env={"PYTHONPATH": str(INCLUDE)})
    r = json.loads(out.stdout)
    assert r["n"] >= 23 and r["max"] <= 64  # [-64, 63]: 7 bits


def test_sherpa_onnx_recipe_is_the_upstream_scripts_byte_for_byte(exported, tmp_path):
    """On a single-file fp32 bundle, as the upstream scripts quantize (the fixture's encoder, in the big models'
    layout, is folded back into one file first: onnxruntime writes an external-weights input's int8 output in
    another serialisation)."""
    b = tmp_path / "bundle"
    shutil.copytree(exported / "bundle", b)
    _in_onnx_venv("single-file", str(b / "encoder.onnx"))
    assert not (b / "encoder.weights").exists()
    r = last_json(run_cli("onnx", "quantize", "--bundle", str(b), "--int8-recipe", "sherpa-onnx", "--stock-quantizer"))
    assert r["integer_ops"]["encoder.int8.onnx"].get("ConvInteger", 0) > 0  # every op type, convs included
    _in_onnx_venv("upstream", str(exported / "bundle"), str(tmp_path / "upstream"))
    for name in ("encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"):
        assert (b / name).read_bytes() == (tmp_path / "upstream" / name).read_bytes(), name


def test_an_unknown_recipe_is_refused_before_any_work(exported, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([str(stage_python("onnx")), "-m", "nemo2sherpa", "convert", str(exported), str(out),
                           "--int8-recipe", "int4"], capture_output=True, text=True, env={"PYTHONPATH": str(INCLUDE)})
    assert proc.returncode == 2 and "invalid choice: 'int4'" in proc.stderr and not out.exists()
    import sys

    sys.path.insert(0, str(INCLUDE))
    from nemo2sherpa.errors import InputError
    from nemo2sherpa.pipeline import make_plan

    with pytest.raises(InputError, match="int8 recipe 'int4' is unknown: choose one of matmul-qint8, matmul-qint8-7bit, sherpa-onnx"):
        make_plan(tmp_path / "ws", "x.nemo", variants=["int8"], lengths=[1.0], int8_recipe="int4")
