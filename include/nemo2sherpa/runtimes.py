"""The sherpa-onnx runtimes users ship, declared once: how each is installed and how it decodes a bundle.

Each runtime decodes wav files with one variant of a bundle (greedy search, the NeMo transducer model type) and
answers per file with sherpa-onnx's own result: text, tokens, timestamps. Installed on first use into the venv
cache and reused:
- python: the sherpa-onnx wheel (PyPI) at a version, in a venv of its own (venvs.ensure_requirements);
- cli: `sherpa-onnx-offline` from the sherpa-onnx-bin wheel (PyPI);
- node: sherpa-onnx-node (npm) with its prebuilt addon, run by clients/decode.js;
- c-api: libsherpa-onnx-c-api.so from the sherpa-onnx wheel, through the Rust client (capi.py).

`supported` says whether a runtime is inside the range the bundle states: one inside that decodes otherwise than
the reference fails the compatibility stage; one outside is measured and recorded, which is how the boundary
is shown (benchmarks/runtime_boundary.py scans every published wheel; the pair here is re-measured on every run).
A runtime that cannot be installed is an error naming it, never a silent skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import PermanentError, TransientError

CLIENTS = Path(__file__).resolve().parent / "clients"
NUMPY = "numpy==2.4.6"  # the sherpa-decode command's one dependency besides sherpa-onnx


@dataclass(frozen=True)
class Runtime:
    """One sherpa-onnx runtime at one version."""

    kind: str  # python | cli | node | c-api
    version: str
    supported: bool = True  # inside the range the bundle states
    note: str = ""

    @property
    def name(self) -> str:
        """How reports name it: the package users install."""
        return {"python": "sherpa-onnx (Python)", "cli": "sherpa-onnx-offline (sherpa-onnx-bin)",
                "node": "sherpa-onnx-node (npm)", "c-api": "C API from Rust"}[self.kind] + f" {self.version}"


# The boundary, measured on every published sherpa-onnx release (benchmarks/results/runtime-boundary.md): 1.12.13
# is the newest that decodes a TDT bundle wrongly (a word dropped where the model emits a token with duration 0:
# "blood pressure table" for "blood pressure is stable"), 1.12.14 the oldest that decodes it right; both are CLI
# releases (sherpa-onnx-bin), the Python wheels on PyPI jump from 1.10.46 (wrong: durations ignored, "the
# paatitient repports") to 1.12.26 (right). Each edge is re-measured on every bundle.
OLDEST_RIGHT, NEWEST_WRONG = "1.12.14", "1.12.13"
OLDEST_WHEEL, NEWEST_WRONG_WHEEL = "1.12.26", "1.10.46"
RUNTIMES: tuple[Runtime, ...] = (
    Runtime("python", OLDEST_WHEEL, note="the oldest sherpa-onnx wheel on PyPI that decodes TDT right"),
    Runtime("python", NEWEST_WRONG_WHEEL, supported=False, note="the newest wheel on PyPI that decodes TDT wrongly"),
    Runtime("cli", "2.0.1"),
    Runtime("cli", OLDEST_RIGHT, note="the oldest release that decodes TDT right"),
    Runtime("cli", NEWEST_WRONG, supported=False, note="the newest release that decodes TDT wrongly"),
    Runtime("node", "1.13.8", note="the newest sherpa-onnx-node on npm"),
    Runtime("c-api", "2.0.1", note="as the sherpa-onnx crate and sherpa-rs reach it"),
)
SUPPORTED_RANGE = f"sherpa-onnx >= {OLDEST_RIGHT}"


def _run(cmd: list[str], what: str, **kw) -> subprocess.CompletedProcess:
    """An install command; its failure an error naming the runtime: transient where the registry did not answer."""
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-600:]
        network = re.search(r"(?i)timed? ?out|ETIMEDOUT|ENOTFOUND|ECONNRESET|EAI_AGAIN|connection|network|503|502",
                            tail)
        cls = TransientError if network else PermanentError
        raise cls(f"{what} could not be installed ({' '.join(cmd[:3])} ... exit {proc.returncode}): {tail}")
    return proc


def _wheel_venv(requirement: str, cache: Path) -> Path:
    from .venvs import ensure_requirements

    try:
        return ensure_requirements([requirement, NUMPY], cache)
    except subprocess.CalledProcessError as e:
        raise PermanentError(f"{requirement} could not be installed from the package index (uv exit {e.returncode}"
                             f"); the runtime matrix needs it: check the index, or the version") from None


def install(rt: Runtime, cache: Path) -> dict[str, Any]:
    """What running `rt` needs, installed (cached): {'cmd': argv prefix, 'env': extra environment}."""
    if rt.kind == "python":
        venv = _wheel_venv(f"sherpa-onnx=={rt.version}", cache)
        return {"cmd": [str(venv / "bin" / "python"), "-m", "nemo2sherpa", "sherpa-decode"],
                "env": {"PYTHONPATH": str(Path(__file__).resolve().parents[1])}}
    if rt.kind == "cli":
        venv = _wheel_venv(f"sherpa-onnx-bin=={rt.version}", cache)
        return {"cmd": [str(venv / "bin" / "sherpa-onnx-offline")], "env": {}}
    if rt.kind == "node":
        return {"cmd": [_node(), str(CLIENTS / "decode.js")], "env": {"NODE_PATH": str(_npm(rt.version, cache))}}
    from .capi import build_client

    lib = Path(_wheel_venv(f"sherpa-onnx=={rt.version}", cache)).glob("lib/python*/site-packages/sherpa_onnx")
    pkg = next(lib, None)
    if pkg is None or not (pkg / "include" / "sherpa-onnx" / "c-api" / "c-api.h").exists():
        raise PermanentError(f"the sherpa-onnx {rt.version} wheel ships no C API header: pick a newer version")
    return {"cmd": [str(build_client(pkg / "include" / "sherpa-onnx" / "c-api" / "c-api.h", pkg / "lib", cache))],
            "env": {}}


def _node() -> str:
    node = shutil.which("node")
    if not node:
        raise PermanentError("sherpa-onnx-node needs Node.js (node and npm on PATH; Node 20 or newer)")
    return node


def _npm(version: str, cache: Path) -> Path:
    """sherpa-onnx-node@version installed under the cache (its node_modules folder)."""
    npm = shutil.which("npm")
    if not npm:
        raise PermanentError("sherpa-onnx-node needs npm on PATH (it comes with Node.js)")
    home = Path(cache) / f"node-sherpa-onnx-node-{version}"
    modules = home / "node_modules"
    if (modules / "sherpa-onnx-node" / "package.json").exists():
        return modules
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "package.json").write_text(json.dumps({"private": True, "dependencies": {"sherpa-onnx-node": version}}))
    try:
        _run([npm, "install", "--no-audit", "--no-fund", "--loglevel=error"], f"sherpa-onnx-node {version} (npm)",
             cwd=home)
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    return modules


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def decode(rt: Runtime, how: dict[str, Any], files: dict[str, str], wavs: list[Path],
           feat_dim: int, threads: int = 2, timeout: float = 900) -> dict[str, Any]:
    """One runtime decoding `wavs` with one variant's files ({'encoder', 'decoder', 'joiner', 'tokens'}): per file
    text, tokens and timestamps; {'ok': False, 'error': ...} when it exits or says nothing."""
    if rt.kind == "python":
        args = ["--bundle", str(Path(files["tokens"]).parent), "--variant", files["variant"], "--threads",
                str(threads)]
    elif rt.kind == "cli":
        args = [f"--encoder={files['encoder']}", f"--decoder={files['decoder']}", f"--joiner={files['joiner']}",
                f"--tokens={files['tokens']}", "--model-type=nemo_transducer", f"--num-threads={threads}",
                f"--feat-dim={feat_dim}", "--decoding-method=greedy_search"]
    elif rt.kind == "node":
        args = [files["encoder"], files["decoder"], files["joiner"], files["tokens"], str(feat_dim), str(threads)]
    else:
        args = ["--encoder", files["encoder"], "--decoder", files["decoder"], "--joiner", files["joiner"],
                "--tokens", files["tokens"], "--threads", str(threads), "--feature-dim", str(feat_dim)]
    proc = subprocess.run(how["cmd"] + args + [str(w) for w in wavs], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **how["env"]})
    # The results, one JSON object a line, in order; older CLIs (1.12.x) print them on stderr.
    results = _json_lines(proc.stdout) or (_json_lines(proc.stderr) if rt.kind == "cli" else [])
    if rt.kind == "python" and results:
        one = results[-1]
        results = [{"text": t, "tokens": k, "timestamps": s}
                   for t, k, s in zip(one.get("texts", []), one.get("tokens", []), one.get("timestamps", []))]
    else:
        results = [r for r in results if "text" in r]
    if proc.returncode != 0 or len(results) != len(wavs):
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-4:]
        return {"ok": False, "exit_code": proc.returncode, "error": " | ".join(tail)[-600:],
                "decoded": len(results)}
    return {"ok": True, "texts": [r["text"].strip() for r in results], "tokens": [list(r["tokens"]) for r in results],
            "timestamps": [[round(float(x), 2) for x in r["timestamps"]] for r in results]}
