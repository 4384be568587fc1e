"""Stage 3, validate (ONNX venv): prove the split bundle is sherpa-onnx-loadable and equals NeMo.

Gates: structure (onnx.checker, I/O names/dtypes/ranks, dims from the spec), tokens.txt,
numeric parity of every module vs the PyTorch reference tensors saved at export, greedy
decoding parity vs NeMo's tokens, metadata (in `full` mode), and sherpa-onnx end to end in a
child process (in `full` mode). Any failed gate raises GateFailed after the report is written.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .decode import GreedyDecoder, Sessions, variant_files
from .errors import GateFailed
from .metadata import REQUIRED_KEYS, expected_metadata, read_metadata
from .modelspec import ModelSpec

log = logging.getLogger("nemo2sherpa.validate")

FP32_TOL = 1e-4
INT8_TOL = None  # reported, gated by WER drift (issue 3), not by max abs diff


class Report:
    def __init__(self) -> None:
        self.gates: list[dict[str, Any]] = []

    def gate(self, name: str, ok: bool, value: Any = None, threshold: Any = None, detail: str = "") -> bool:
        self.gates.append({"gate": name, "passed": bool(ok), "value": value, "threshold": threshold, "detail": detail})
        (log.info if ok else log.error)("%-34s %-4s value=%s threshold=%s %s", name, "PASS" if ok else "FAIL",
                                         value, threshold, detail)
        return ok

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [g for g in self.gates if not g["passed"]]


def _dtype(t: str) -> str:
    return t.replace("tensor(", "").replace(")", "")


def check_structure(bundle: Path, variant: str, spec: ModelSpec, r: Report) -> Sessions | None:
    """Structure gates; returns the variant's loaded sessions (for the parity gates) if all passed."""
    import onnx

    ok = True
    for p in variant_files(bundle, variant):
        if not p.exists():
            r.gate(f"{variant}: {p.name} present", False, detail="file missing")
            return None
        try:
            onnx.checker.check_model(str(p))
        except Exception as e:  # noqa: BLE001 - checker raises several types
            ok &= r.gate(f"{variant}: onnx.checker {p.name}", False, detail=str(e)[:300])
    sessions = Sessions.load(bundle, variant)
    enc, dec, join = sessions.encoder, sessions.decoder, sessions.joiner
    want = {
        "encoder": (enc, [("float", 3), ("int64", 1)], 2),
        "decoder": (dec, [("int32", 2), ("int32", 1), ("float", 3), ("float", 3)], 4),
        "joiner": (join, [("float", 3), ("float", 3)], 1),
    }
    for name, (s, ins, n_out) in want.items():
        got = [(_dtype(i.type), len(i.shape)) for i in s.get_inputs()]
        ok &= r.gate(f"{variant}: {name} inputs", got == ins, value=got, threshold=ins)
        ok &= r.gate(f"{variant}: {name} outputs", len(s.get_outputs()) == n_out, value=len(s.get_outputs()), threshold=n_out)
    feat = enc.get_inputs()[0].shape[1]
    ok &= r.gate(f"{variant}: encoder feat_dim", feat == spec.feat_dim, value=feat, threshold=spec.feat_dim)
    states = [i.shape for i in dec.get_inputs()[2:]]
    sdims = [(s[0], s[2]) for s in states]
    want_s = [(spec.pred_rnn_layers, spec.pred_hidden)] * 2
    ok &= r.gate(f"{variant}: decoder state dims", sdims == want_s, value=sdims, threshold=want_s)
    # Joiner output width, measured by running it (the graph's dims may be symbolic).
    D = enc.get_outputs()[0].shape[1]
    H = dec.get_outputs()[0].shape[1]
    D = D if isinstance(D, int) else spec.enc_hidden
    H = H if isinstance(H, int) else spec.pred_hidden
    out = join.run(None, {join.get_inputs()[0].name: np.zeros((1, D, 1), np.float32),
                          join.get_inputs()[1].name: np.zeros((1, H, 1), np.float32)})[0]
    want_v = spec.joiner_output_dim
    ok &= r.gate(f"{variant}: joiner output dim", out.shape[-1] == want_v, value=int(out.shape[-1]), threshold=want_v,
                 detail=f"vocab {spec.vocab_size} + blank + {len(spec.durations)} durations")
    return sessions if ok else None


def check_tokens(bundle: Path, spec: ModelSpec, r: Report) -> bool:
    lines = (bundle / "tokens.txt").read_text(encoding="utf-8").splitlines()
    ok = r.gate("tokens.txt count == vocab+1", len(lines) == spec.vocab_size + 1, value=len(lines),
                threshold=spec.vocab_size + 1)
    last = lines[-1].split() if lines else []
    ok &= r.gate("tokens.txt <blk> last", last == ["<blk>", str(spec.vocab_size)], value=" ".join(last),
                 threshold=f"<blk> {spec.vocab_size}")
    ids = [int(line.rsplit(" ", 1)[1]) for line in lines if " " in line]
    ok &= r.gate("tokens.txt ids 0..vocab", ids == list(range(len(lines))), value=f"{len(ids)} ids")
    return ok


def numeric_parity(dec: GreedyDecoder, variant: str, spec: ModelSpec, ref: dict[str, np.ndarray], r: Report,
                   tol: float | None) -> dict[str, float]:
    diffs: dict[str, float] = {}
    # Encoder, batch 2 with unequal odd lengths (falls back to one at a time if the graph is batch-1).
    feats, lens = ref["enc_in_features"], ref["enc_in_lengths"]
    try:
        enc, enc_len = dec.encode(feats, lens)
        batched = True
    except Exception:  # noqa: BLE001
        outs = [dec.encode(feats[i : i + 1], lens[i : i + 1]) for i in range(len(lens))]
        enc, enc_len, batched = np.concatenate([o[0] for o in outs]), np.concatenate([o[1] for o in outs]), False
    valid = [slice(0, int(n)) for n in ref["enc_out_lengths"]]
    diffs["encoder"] = max(float(np.abs(enc[i, :, v] - ref["enc_out"][i, :, v]).max()) for i, v in enumerate(valid))
    len_ok = np.array_equal(enc_len, ref["enc_out_lengths"])
    r.gate(f"{variant}: encoder lengths", len_ok, value=enc_len.tolist(), threshold=ref["enc_out_lengths"].tolist(),
           detail="batch 2" if batched else "batch 1 only")
    # Decoder, step by step with state.
    state = dec.zero_state(spec.pred_rnn_layers, spec.pred_hidden)
    d = 0.0
    for i, tok in enumerate(ref["dec_tokens"]):
        out, state = dec.predict(int(tok), state)
        d = max(d, float(np.abs(out - ref["dec_out"][i : i + 1]).max()),
                float(np.abs(state[0] - ref["dec_state_h"][i]).max()), float(np.abs(state[1] - ref["dec_state_c"][i]).max()))
    diffs["decoder"] = d
    # Joiner on a T x U grid.
    out = dec.joint(ref["joint_enc"], ref["joint_dec"])
    diffs["joiner"] = float(np.abs(out - ref["joint_out"]).max())
    for k, v in diffs.items():
        r.gate(f"{variant}: {k} max abs diff", tol is None or v <= tol, value=float(f"{v:.3g}"), threshold=tol)
    return diffs


def decoding_parity(dec: GreedyDecoder, spec: ModelSpec, ref: dict[str, np.ndarray],
                    clips: list[dict[str, Any]]) -> dict[str, Any]:
    exact, total_tokens, agree = 0, 0, 0
    per_clip = []
    for i, c in enumerate(clips):
        hyp = dec.decode_features(ref[f"clip{i}_features"], spec.pred_rnn_layers, spec.pred_hidden)
        want = ref[f"clip{i}_tokens"].tolist()
        same = hyp == want
        exact += same
        total_tokens += max(len(want), len(hyp))
        agree += sum(a == b for a, b in zip(hyp, want))
        per_clip.append({"clip": c["name"], "exact": same, "onnx_tokens": hyp})
    return {"clips": len(clips), "exact_clips": exact,
            "token_match_rate": round(agree / total_tokens, 4) if total_tokens else 1.0, "per_clip": per_clip}


def check_metadata(bundle: Path, variant: str, spec: ModelSpec, source: dict[str, Any], r: Report) -> bool:
    enc = variant_files(bundle, variant)[0]
    meta = read_metadata(enc)
    want = expected_metadata(spec, source)
    missing = [k for k in REQUIRED_KEYS if k not in meta]
    ok = r.gate(f"{variant}: metadata required keys", not missing, value=missing or "all present",
                threshold=list(REQUIRED_KEYS))
    for k in ("vocab_size", "subsampling_factor", "pred_rnn_layers", "pred_hidden", "feat_dim", "normalize_type"):
        ok &= r.gate(f"{variant}: metadata {k}", meta.get(k) == want[k], value=meta.get(k), threshold=want[k])
    has_tdt = "tdt" in meta.get("url", "")
    ok &= r.gate(f"{variant}: metadata url switches TDT", has_tdt == spec.is_tdt, value=meta.get("url"),
                 threshold="contains 'tdt'" if spec.is_tdt else "no 'tdt'")
    ok &= r.gate(f"{variant}: metadata normalize per_feature", meta.get("normalize_type") == "per_feature",
                 value=meta.get("normalize_type"), threshold="per_feature",
                 detail="sherpa-onnx implements only per_feature; anything else decodes garbage")
    return ok


def validate_bundle(bundle: Path, reference_dir: Path, variants: list[str], mode: str = "full",
                    source: dict[str, Any] | None = None, report_path: Path | None = None) -> dict[str, Any]:
    """mode: "pre" (after export: structure + parity) or "full" (after metadata: + metadata + sherpa-onnx)."""
    from .sherpa import decode_in_subprocess

    bundle, reference_dir = Path(bundle), Path(reference_dir)
    exp = json.loads((reference_dir / "export.json").read_text())
    spec = ModelSpec.from_dict(exp["spec"])
    ref = dict(np.load(reference_dir / "reference.npz"))
    source = source or {}
    r = Report()
    result: dict[str, Any] = {"mode": mode, "variants": {}}
    check_tokens(bundle, spec, r)
    if spec.is_tdt:
        want = list(range(len(spec.durations)))
        r.gate("TDT durations are 0..N-1", list(spec.durations) == want, value=list(spec.durations), threshold=want,
               detail="sherpa-onnx uses the duration index as the frame skip")
    for v in variants:
        vr: dict[str, Any] = {}
        sessions = check_structure(bundle, v, spec, r)
        if sessions is None:
            result["variants"][v] = vr
            continue
        dec = GreedyDecoder(sessions, spec.vocab_size, list(spec.durations))
        vr["max_abs_diff"] = numeric_parity(dec, v, spec, ref, r, FP32_TOL if v == "fp32" else INT8_TOL)
        vr["decoding"] = decoding_parity(dec, spec, ref, exp["clips"])
        d = vr["decoding"]
        if v == "fp32":
            r.gate("fp32: greedy tokens == NeMo", d["exact_clips"] == d["clips"], value=d["token_match_rate"],
                   threshold=1.0, detail=f"{d['exact_clips']}/{d['clips']} clips exact")
        else:
            log.info("%s: token match vs NeMo %.4f (%d/%d clips exact)", v, d["token_match_rate"], d["exact_clips"], d["clips"])
        if mode == "full":
            if check_metadata(bundle, v, spec, source, r):
                sh = decode_in_subprocess(bundle, v, [Path(c["path"]) for c in exp["clips"]])
                vr["sherpa"] = sh
                r.gate(f"{v}: sherpa-onnx loads and decodes", sh["ok"] and len(sh.get("texts", [])) == len(exp["clips"]),
                       value="ok" if sh["ok"] else f"exit {sh.get('exit_code')}", detail=sh.get("error", ""))
                for c, t in zip(exp["clips"], sh.get("texts", [])):
                    log.info("%s sherpa %-8s %r (NeMo %r)", v, c["name"], t, c["nemo_text"])
        result["variants"][v] = vr
    result["gates"] = r.gates
    result["passed"] = not r.failed
    if report_path:
        Path(report_path).write_text(json.dumps(result, indent=2, default=str))
    log.info("validation (%s): %d gates, %d failed", mode, len(r.gates), len(r.failed))
    if r.failed:
        raise GateFailed("; ".join(f"{g['gate']}: {g['value']} (want {g['threshold']}) {g['detail']}".strip()
                                   for g in r.failed))
    return result
