"""Stage, compat (ONNX venv, after validate): which sherpa-onnx runtimes decode this bundle as validated.

Every runtime of runtimes.RUNTIMES decodes every variant on the evaluation clips; each is compared token for
token (and timestamp for timestamp, to the 10 ms the runtimes print) with the newest sherpa-onnx Python wheel,
whose output validate gated (validation.json). A runtime inside the stated range that decodes otherwise fails
the stage (GateFailed, naming runtime, variant and clip); one outside it is recorded with how it fails. Writes
compatibility.json beside the bundle and re-renders VALIDATION.md with the matrix.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from .errors import GateFailed
from .runtimes import RUNTIMES, SUPPORTED_RANGE, Runtime, decode, install
from .variants import TOKENS, variant_paths

log = logging.getLogger("nemo2sherpa.compat")
COMPATIBILITY = "compatibility.json"


# The statuses a runtime inside the range may have: the same output on every clip; the same on every clip the
# model knows; differences only, on a set with no clip the model knows (nothing there to hold a runtime to).
PROVEN = ("agrees", "agrees where known")  # a runtime shown to decode the bundle as validated
AGREE = (*PROVEN, "unknown audio only")


def _compare(ref: dict[str, Any], got: dict[str, Any], clips: list[str], known: set[str]) -> dict[str, Any]:
    """A runtime's output against the reference's, clip by clip: the clips that differ, with an example. On audio
    the model does not know (not in `known`: validate.known_clips) runtimes part at near-ties of the logits
    (measured: sherpa-onnx 1.12.26 and 2.0.1 on a model trained on other sentences); a difference there is
    recorded, one on a clip the model knows is the runtime's."""
    if not got["ok"]:
        return {"status": "fails", "error": got["error"], "exit_code": got.get("exit_code")}
    differ = [i for i in range(len(clips)) if got["tokens"][i] != ref["tokens"][i] or len(got["timestamps"][i]) !=
              len(ref["timestamps"][i]) or any(abs(a - b) > 0.011 for a, b in zip(got["timestamps"][i],
                                                                                  ref["timestamps"][i]))]
    on_known = [i for i in differ if clips[i] in known]
    status = "differs" if on_known else "agrees" if not differ else "agrees where known" if known else \
        "unknown audio only"
    out: dict[str, Any] = {"status": status, "clips": len(clips), "differing": [clips[i] for i in differ],
                           "known_clips": len(known)}
    if differ:
        i = (on_known or differ)[0]
        out["example"] = {"clip": clips[i], "text": got["texts"][i], "reference": ref["texts"][i]}
    return out


def check_runtimes(bundle: Path, reference_dir: Path, variants: list[str], runtimes: tuple[Runtime, ...] = RUNTIMES,
                   cache: Path | None = None, report: bool = True) -> dict[str, Any]:
    """The runtime matrix over a validated bundle: compatibility.json (and VALIDATION.md re-rendered with it);
    GateFailed when a runtime inside the range decodes otherwise than the reference."""
    import sherpa_onnx

    from .venvs import default_cache

    bundle = Path(bundle)
    validated = json.loads((bundle / "validation.json").read_text())
    clips = [c["clip"] for c in validated["clips"]]
    known = set(validated["known_clips"])
    wavs = [Path(c["path"]) for c in json.loads((Path(reference_dir) / "export.json").read_text())["clips"]]
    feat_dim = int(validated["model"]["feat_dim"])
    rows = []
    for rt in runtimes:
        t0 = time.monotonic()
        how = install(rt, Path(cache or default_cache()))
        row: dict[str, Any] = {"runtime": rt.name, "kind": rt.kind, "version": rt.version, "supported": rt.supported,
                               "note": rt.note, "variants": {}}
        for v in variants:
            enc, dec, join = (str(p) for p in variant_paths(bundle, v))
            files = {"encoder": enc, "decoder": dec, "joiner": join, "tokens": str(bundle / TOKENS), "variant": v}
            row["variants"][v] = _compare(validated["variants"][v]["sherpa"], decode(rt, how, files, wavs, feat_dim),
                                          clips, known)
        row["seconds"] = round(time.monotonic() - t0, 1)
        statuses = {x["status"] for x in row["variants"].values()}
        row["status"] = next(s for s in ("fails", "differs", "unknown audio only", "agrees where known", "agrees")
                             if s in statuses)
        log.info("%-44s %-8s %s (%.1f s)%s", rt.name, row["status"], "in range" if rt.supported else "outside range",
                 row["seconds"], "".join(f"; {v}: {x.get('example') or x.get('error', '')}"
                                         for v, x in row["variants"].items() if "example" in x or "error" in x))
        rows.append(row)
    result = {"reference": f"sherpa-onnx (Python) {sherpa_onnx.__version__}", "supported_range": SUPPORTED_RANGE,
              "clips": clips, "variants": variants, "runtimes": rows,
              "known_clips": sorted(known), "passed": all(r["status"] in AGREE for r in rows if r["supported"])}
    (bundle / COMPATIBILITY).write_text(json.dumps(result, indent=2) + "\n")
    if report:
        from .report import render_markdown

        (bundle / "VALIDATION.md").write_text(render_markdown(validated, result))
    bad = [r for r in rows if r["supported"] and r["status"] not in AGREE]
    if bad:
        raise GateFailed("runtimes inside the stated range (" + SUPPORTED_RANGE + ") decode this bundle otherwise "
                         "than the reference: " + "; ".join(
                             f"{r['runtime']} {v}: {x.get('example') or x.get('error')}" for r in bad
                             for v, x in r["variants"].items() if x["status"] not in AGREE))
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The stage's small manifest (XCom): the range and each runtime's status."""
    return {"passed": result["passed"], "supported_range": result["supported_range"],
            "runtimes": {r["runtime"]: r["status"] for r in result["runtimes"]}}
