"""Which published sherpa-onnx releases load and decode our bundles, per layout: every version on the index, measured.

Builds the trained fixture's bundle (`convert`) in the big models' layout (NEMO2SHERPA_SINGLE_FILE_MAX, the test knob:
the fp32 encoder's weights in `encoder.weights`, as at 1.1B; the int8 encoder one self-contained file, as at 1.1B),
then decodes the four built-in clips (which the fixture transcribes right) with every sherpa-onnx Python wheel on
the index (`pip index versions sherpa-onnx`), every sherpa-onnx-bin CLI release the wheels skip, sherpa-onnx-node
(its native addon pinned to the same release) and the C API at each layout's edge, and compares tokens with the
newest wheel. A release that cannot load
a layout is tried again from the model's folder (its working directory: releases that hand onnxruntime the model as
bytes resolve external weights against it). Writes benchmarks/results/runtime-boundary.{json,md}; the ranges in
runtimes.RANGES come from it.

    .venv/bin/python benchmarks/runtime_boundary.py        # ~5 min with a warm cache, ~4 GB of wheels
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "include"))

from nemo2sherpa.audio import load_clips  # noqa: E402
from nemo2sherpa.child import run_module  # noqa: E402
from nemo2sherpa.errors import PermanentError, TransientError  # noqa: E402
from nemo2sherpa.runtimes import Graphs, Runtime, decode, install, node_native_package, version_key  # noqa: E402
from nemo2sherpa.variants import layout  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "runtime-boundary"
VARIANTS = ("fp32", "int8")  # with the knob: fp32 in the external-weights layout, int8 a single file


def versions(package: str) -> list[str]:
    """Every version of a package on the index, newest first."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package], capture_output=True,
                         text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("Available versions:"))
    return [v.strip() for v in line.split(":", 1)[1].split(",") if re.match(r"^\d+\.\d+\.\d+$", v.strip())]


def npm_versions(package: str) -> list[str]:
    """Every version of an npm package, newest first."""
    out = subprocess.run(["npm", "view", package, "versions", "--json"], capture_output=True, text=True).stdout
    return sorted((v for v in json.loads(out) if re.match(r"^\d+\.\d+\.\d+$", v)), key=version_key, reverse=True)


def measure(rt: Runtime, bundle: Path, wavs: list[Path], cache: Path, ref: dict, variants=VARIANTS) -> dict:
    """One runtime on the bundle's variants: agrees / differs (with an example) / fails (with the error)."""
    t0 = time.monotonic()
    try:
        how = install(rt, cache)
    except (PermanentError, TransientError) as e:
        return {"runtime": rt.name, "kind": rt.kind, "version": rt.version, "from_folder": rt.from_folder,
                "status": "not installable", "error": str(e)[:300], "variants": {}}
    row = {"runtime": rt.name, "kind": rt.kind, "version": rt.version, "from_folder": rt.from_folder, "variants": {}}
    for v in variants:
        got = decode(rt, how, Graphs.of(bundle, v), wavs, 80)
        lay = layout(bundle, v).name
        if not got["ok"]:
            row["variants"][v] = {"layout": lay, "status": "fails", "error": got["error"][-300:]}
            continue
        differ = [i for i in range(len(wavs)) if got["tokens"][i] != ref[v]["tokens"][i]]
        row["variants"][v] = {"layout": lay, "status": "differs" if differ else "agrees", "differing": len(differ),
                              "example": got["texts"][differ[0]] if differ else None}
    statuses = {x["status"] for x in row["variants"].values()}
    row["status"] = next(s for s in ("fails", "differs", "agrees") if s in statuses)
    row["seconds"] = round(time.monotonic() - t0, 1)
    print(f"{rt.name:<62} " + "; ".join(f"{v} ({x['layout']}): {x['status']} {x.get('example') or x.get('error', '')}"
                                        [:110] for v, x in row["variants"].items()), flush=True)
    return row


def edges(rows: list[dict], lay: str, kinds: set[str], from_folder: bool = False) -> dict:
    """The oldest release that decodes a layout as the reference does and the newest that does not (fails or
    differs), among the given kinds of runtime."""
    got = [(r["version"], x["status"]) for r in rows if r["kind"] in kinds and r["from_folder"] == from_folder
           for x in r["variants"].values() if x["layout"] == lay]
    right = sorted({v for v, s in got if s == "agrees"}, key=version_key)
    wrong = sorted({v for v, s in got if s != "agrees"}, key=version_key)
    return {"oldest_right": right[0] if right else None, "newest_wrong": wrong[-1] if wrong else None,
            "wrong_above_oldest_right": [v for v in wrong if right and version_key(v) > version_key(right[0])]}


def around(versions_: list[str], edge: str | None) -> list[str]:
    """The newest release below an edge and the oldest at or above it, among the given versions."""
    if edge is None:
        return []
    below = [v for v in versions_ if version_key(v) < version_key(edge)]
    above = [v for v in versions_ if version_key(v) >= version_key(edge)]
    return ([max(below, key=version_key)] if below else []) + ([min(above, key=version_key)] if above else [])


def build_bundle(out: Path) -> None:
    """The trained fixture converted in the big models' layout (the test knob), runtime matrix off."""
    os.environ["NEMO2SHERPA_SINGLE_FILE_MAX"] = "100000"  # the children inherit it
    try:
        proc = run_module(["convert", str(ROOT / "tests" / "fixtures" / "tiny-tdt.nemo"), str(out), "--lengths", "1",
                           "--eval-set", str(ROOT / "include" / "nemo2sherpa" / "data" / "clips"),
                           "--no-runtime-matrix"], capture_output=True)
    finally:
        del os.environ["NEMO2SHERPA_SINGLE_FILE_MAX"]
    if proc.returncode != 0:
        raise SystemExit(proc.stderr[-2000:])
    assert layout(out, "fp32").name == "external weights" and layout(out, "int8").name == "single file"


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        build_bundle(bundle)
        val = json.loads((bundle / "validation.json").read_text())
        ref = {v: val["variants"][v]["sherpa"] for v in VARIANTS}
        wavs = [c.path for c in load_clips()]
        cache = ROOT / ".cache" / "runtime-boundary"
        wheels = versions("sherpa-onnx")
        rows = [measure(Runtime("python", v), bundle, wavs, cache, ref) for v in wheels]
        rows += [measure(Runtime("cli", v), bundle, wavs, cache, ref) for v in versions("sherpa-onnx-bin")
                 if v not in wheels and v.startswith("1.12.")]
        ext = edges(rows, "external weights", {"python", "cli"})
        single = edges(rows, "single file", {"python", "cli"})
        native = set(npm_versions(node_native_package()))  # the addon's releases: the runtime is the addon's
        node_all = [v for v in npm_versions("sherpa-onnx-node") if v in native]
        node = {node_all[0], *around(node_all, ext["oldest_right"]), *around(node_all, single["oldest_right"])}
        rows += [measure(Runtime("node", v), bundle, wavs, cache, ref) for v in sorted(node, key=version_key)]
        capi = {wheels[0], *around(wheels, ext["oldest_right"])}
        rows += [measure(Runtime("c", v), bundle, wavs, cache, ref) for v in sorted(capi, key=version_key)]
        # Releases that decode the single-file layout right but cannot load external weights: again from the
        # model's folder (fp32 only: that is the layout in question).
        retry = [r for r in rows if r["variants"].get("int8", {}).get("status") == "agrees"
                 and r["variants"].get("fp32", {}).get("status") == "fails"]
        rows += [measure(Runtime(r["kind"], r["version"], from_folder=True), bundle, wavs, cache, ref, ("fp32",))
                 for r in retry]
    kinds = {"python", "cli", "node", "c"}
    layouts = {lay: {"every kind": edges(rows, lay, kinds), "python wheels": edges(rows, lay, {"python"})}
               for lay in ("single file", "external weights")}
    # Only the external-weights layout is retried from the model's folder: a single file loads from bytes anywhere.
    layouts["external weights"]["from the model's folder"] = edges(rows, "external weights", kinds, from_folder=True)
    result = {"reference": "sherpa-onnx (Python) " + wheels[0], "clips": [w.name for w in wavs], "runtimes": rows,
              "layouts": layouts}
    write(result)
    print(json.dumps(result["layouts"], indent=1))


def write(result: dict) -> None:
    """runtime-boundary.json and .md."""
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# sherpa-onnx releases on our bundles, per layout (tiny trained fixture, 4 built-in clips)", "",
          f"Reference: {result['reference']}. fp32 in the external-weights layout (`encoder.onnx` + `encoder.weights`, "
          "as every registry model over 2 GB ships), int8 one self-contained file (as every int8 bundle ships). Made "
          "by `.venv/bin/python benchmarks/runtime_boundary.py`.", "", "| layout | runtimes | oldest right | newest "
          "wrong |", "|---|---|---|---|"]
    for lay, by in result["layouts"].items():
        md += [f"| {lay} | {k} | {e['oldest_right']} | {e['newest_wrong']} |" for k, e in by.items()]
    md += ["", "| runtime | fp32 (external weights) | int8 (single file) |", "|---|---|---|"]
    for r in result["runtimes"]:
        cells = []
        for v in VARIANTS:
            x = r["variants"].get(v)
            cells.append("-" if x is None else x["status"] + (
                f": {x.get('example') or x.get('error', '')}"[:120].replace("|", "/") if x["status"] != "agrees" else ""))
        md.append(f"| {r['runtime']} | " + " | ".join(cells) + " |" if r["variants"] else
                  f"| {r['runtime']} | {r['status']}: {r.get('error', '')[:120]} | |")
    OUT.with_suffix(".md").write_text("\n".join(md) + "\n")


if __name__ == "__main__":
    main()
