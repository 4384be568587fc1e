"""Which published sherpa-onnx releases decode a TDT bundle right: every version on the package index, measured.

Builds the trained fixture's bundle (fp32 + int8, `convert`), then for every sherpa-onnx Python wheel on the index
(`pip index versions sherpa-onnx`) and every sherpa-onnx-bin CLI release the wheels skip, decodes the four
built-in clips (which the fixture transcribes right) and compares tokens and timestamps with the newest wheel.
Writes benchmarks/results/runtime-boundary.{json,md}; runtimes.OLDEST_RIGHT / NEWEST_WRONG come from it.

    .venv/bin/python benchmarks/runtime_boundary.py        # ~10 min, ~3 GB of wheels through the uv cache
"""

from __future__ import annotations

import json
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
from nemo2sherpa.runtimes import Runtime, decode, install  # noqa: E402
from nemo2sherpa.variants import TOKENS, variant_paths  # noqa: E402

OUT = ROOT / "benchmarks" / "results" / "runtime-boundary"


def versions(package: str) -> list[str]:
    """Every version of a package on the index, newest first."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", package], capture_output=True,
                         text=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("Available versions:"))
    return [v.strip() for v in line.split(":", 1)[1].split(",") if re.match(r"^\d+\.\d+\.\d+$", v.strip())]


def measure(rt: Runtime, bundle: Path, wavs: list[Path], cache: Path, ref: dict) -> dict:
    """One runtime on the bundle's variants: agrees / differs (with an example) / fails (with the error)."""
    t0 = time.monotonic()
    try:
        how = install(rt, cache)
    except (PermanentError, TransientError) as e:
        return {"runtime": rt.name, "status": "not installable", "error": str(e)[:300]}
    row = {"runtime": rt.name, "kind": rt.kind, "version": rt.version, "variants": {}}
    for v in ("fp32", "int8"):
        enc, dec, join = (str(p) for p in variant_paths(bundle, v))
        files = {"encoder": enc, "decoder": dec, "joiner": join, "tokens": str(bundle / TOKENS), "variant": v}
        got = decode(rt, how, files, wavs, 80)
        if not got["ok"]:
            row["variants"][v] = {"status": "fails", "error": got["error"][-300:]}
            continue
        differ = [i for i in range(len(wavs)) if got["tokens"][i] != ref[v]["tokens"][i]]
        row["variants"][v] = {"status": "differs" if differ else "agrees", "differing": len(differ),
                              "example": got["texts"][differ[0]] if differ else None}
    row["status"] = ("agrees" if all(x["status"] == "agrees" for x in row["variants"].values()) else
                     "fails" if any(x["status"] == "fails" for x in row["variants"].values()) else "differs")
    row["seconds"] = round(time.monotonic() - t0, 1)
    print(f"{rt.name:<44} {row['status']:<8} " + "; ".join(
        f"{v}: {x.get('example') or x.get('error', '')}"[:120] for v, x in row["variants"].items()
        if x["status"] != "agrees"), flush=True)
    return row


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        bundle = Path(tmp) / "bundle"
        proc = run_module(["convert", str(ROOT / "tests" / "fixtures" / "tiny-tdt.nemo"), str(bundle), "--lengths",
                           "1", "--eval-set", str(ROOT / "include" / "nemo2sherpa" / "data" / "clips"),
                           "--no-runtime-matrix"], capture_output=True)
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-2000:])
        val = json.loads((bundle / "validation.json").read_text())
        ref = {v: val["variants"][v]["sherpa"] for v in ("fp32", "int8")}
        wavs = [c.path for c in load_clips()]
        cache = ROOT / ".cache" / "runtime-boundary"
        wheels = versions("sherpa-onnx")
        rows = [measure(Runtime("python", v), bundle, wavs, cache, ref) for v in wheels]
        rows += [measure(Runtime("cli", v), bundle, wavs, cache, ref) for v in versions("sherpa-onnx-bin")
                 if v not in wheels and v.startswith("1.12.")]
    def key(v: str) -> tuple[int, ...]:
        return tuple(int(x) for x in v.split("."))

    def edges(kinds: set[str]) -> tuple[str | None, str | None]:
        right = sorted((r["version"] for r in rows if r.get("kind") in kinds and r["status"] == "agrees"), key=key)
        wrong = sorted((r["version"] for r in rows if r.get("kind") in kinds and r["status"] == "differs"), key=key)
        return (right[0] if right else None), (wrong[-1] if wrong else None)

    (oldest, newest_wrong), (wheel, wheel_wrong) = edges({"python", "cli"}), edges({"python"})
    result = {"reference": "sherpa-onnx (Python) " + wheels[0], "clips": [w.name for w in wavs], "runtimes": rows,
              "oldest_right": oldest, "newest_wrong": newest_wrong, "oldest_right_wheel": wheel,
              "newest_wrong_wheel": wheel_wrong}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    md = ["# sherpa-onnx releases on a TDT bundle (tiny trained fixture, 4 built-in clips, fp32 + int8)", "",
          f"Reference: {result['reference']}. Oldest release that decodes right: **{result['oldest_right']}**; "
          f"newest that decodes wrongly: **{result['newest_wrong']}** (Python wheels on PyPI: oldest right "
          f"{result['oldest_right_wheel']}, newest wrong {result['newest_wrong_wheel']}).", "",
          "| runtime | status | how |", "|---|---|---|"]
    md += [f"| {r['runtime']} | {r['status']} | " + "; ".join(
        f"{v}: {x.get('example') or x.get('error', '')}"[:140].replace("|", "/") for v, x in r.get("variants", {}).items()
        if x["status"] != "agrees") + (r.get("error", "")[:140] if "error" in r else "") + " |" for r in rows]
    OUT.with_suffix(".md").write_text("\n".join(md) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k.startswith(("oldest", "newest"))}))


if __name__ == "__main__":
    main()
