"""Break a copy of a bundle on purpose, one way at a time, to show a validation gate firing.

Runs in the ONNX stage venv (it needs onnx and numpy):  python tests/break_bundle.py BUNDLE ACTION [ARGS]

  meta KEY VALUE          set an encoder metadata value (fp32 and int8 encoders)
  joiner-bias DELTA OUT   add DELTA to the blank logit's bias of joiner.onnx, save as OUT (a file name)
  joiner-drop             drop the joiner's last output (one duration logit fewer)
  noise FILE STD          add seeded Gaussian noise to the largest weight matrix of FILE (encoder.onnx, ...)
  shuffle-tokens          rotate the pieces of tokens.txt (ids unchanged, text wrong: another tokenizer's file)
  swap-bpe-vocab          swap two pieces of bpe.vocab (hotwords would be split into the wrong ids)
  path-choice MARGIN      (on a reference folder) make NeMo's last decision on clip 0 another token, ahead of
                          the ONNX graphs' choice there by MARGIN in NeMo's logits: a tie when tiny, else a mismatch
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "include"))
from nemo2sherpa.metadata import read_metadata, write_metadata  # noqa: E402


def _joiner_width(model: onnx.ModelProto) -> int:
    dims = model.graph.output[0].type.tensor_type.shape.dim
    if dims and dims[-1].dim_value:
        return dims[-1].dim_value
    biases = [i for i in model.graph.initializer if len(i.dims) == 1]
    return max(int(i.dims[0]) for i in biases)


def _replace(model: onnx.ModelProto, init, arr: np.ndarray) -> None:
    init.CopyFrom(numpy_helper.from_array(arr.astype(numpy_helper.to_array(init).dtype), init.name))


def main(bundle: Path, action: str, *args: str) -> None:
    if action == "meta":
        for name in ("encoder.onnx", "encoder.int8.onnx"):
            if (bundle / name).exists():
                m = read_metadata(bundle / name)
                m[args[0]] = args[1]
                write_metadata(bundle / name, m)
    elif action == "joiner-bias":
        model = onnx.load(str(bundle / "joiner.onnx"))
        width = _joiner_width(model)
        blank = len((bundle / "tokens.txt").read_text().splitlines()) - 1
        bias = next(i for i in model.graph.initializer if list(i.dims) == [width])
        arr = numpy_helper.to_array(bias).copy()
        arr[blank] += float(args[0])
        _replace(model, bias, arr)
        onnx.save(model, str(bundle / args[1]))
    elif action == "joiner-drop":
        model = onnx.load(str(bundle / "joiner.onnx"))
        width = _joiner_width(model)
        for init in model.graph.initializer:
            if width in init.dims:
                axis = list(init.dims).index(width)
                _replace(model, init, np.delete(numpy_helper.to_array(init), width - 1, axis=axis))
        for out in model.graph.output:
            out.type.tensor_type.shape.dim[-1].dim_param = "joiner_dim"
        onnx.save(model, str(bundle / "joiner.onnx"))
    elif action == "noise":
        model = onnx.load(str(bundle / args[0]))
        mats = [i for i in model.graph.initializer if len(i.dims) >= 2 and i.data_type == onnx.TensorProto.FLOAT]
        big = max(mats, key=lambda i: int(np.prod(i.dims)))
        arr = numpy_helper.to_array(big)
        _replace(model, big, arr + np.random.default_rng(0).normal(0, float(args[1]), arr.shape))
        onnx.save(model, str(bundle / args[0]))
    elif action == "shuffle-tokens":
        lines = (bundle / "tokens.txt").read_text(encoding="utf-8").splitlines()
        pieces = [line.rsplit(" ", 1)[0] for line in lines[:-1]]
        pieces = pieces[7:] + pieces[:7]
        body = [f"{p} {i}" for i, p in enumerate(pieces)] + [lines[-1]]
        (bundle / "tokens.txt").write_text("\n".join(body) + "\n", encoding="utf-8")
    elif action == "path-choice":
        ref = dict(np.load(bundle / "reference.npz"))
        path, top, topv = ref["clip0_path"], ref["clip0_path_top"], ref["clip0_path_topv"]
        t, k, d = path[-1]  # NeMo's last decision; its runner-up token now ahead of k by MARGIN
        top[-1, :2], topv[-1, :2] = (top[-1, 1], k), (topv[-1, 0] + float(args[0]), topv[-1, 0])
        path[-1] = (t, top[-1, 0], d)
        np.savez(bundle / "reference.npz", **ref)
    elif action == "swap-bpe-vocab":
        lines = (bundle / "bpe.vocab").read_text(encoding="utf-8").splitlines()
        a, b = lines[5].split("\t"), lines[9].split("\t")
        lines[5], lines[9] = f"{b[0]}\t{a[1]}", f"{a[0]}\t{b[1]}"
        (bundle / "bpe.vocab").write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        raise SystemExit(f"unknown action {action!r}\n{__doc__}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], *sys.argv[3:])
