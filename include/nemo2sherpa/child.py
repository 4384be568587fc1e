"""`python -m nemo2sherpa ...` in a child process that imports this same library."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[1]


def _cmd(args: list[str], python: str | Path) -> list[str]:
    return [str(python), "-m", "nemo2sherpa", *args]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(INCLUDE)}


def run_module(args: list[str], python: str | Path = sys.executable, **kw) -> subprocess.CompletedProcess:
    """`python -m nemo2sherpa <args>` in a child process (text mode), the project's include/ on its path."""
    return subprocess.run(_cmd(args, python), text=True, env=_env(), **kw)


def run_measured(cmd: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, dict]:
    """Run cmd with stdout captured (stderr passes through); also its wall time and peak RSS.

    The peak comes from wait4(): the largest resident set of the child and of any process it waited for
    (a stage's own children, such as the sherpa-onnx decoder), in bytes. Linux carries the parent's own
    high-water mark into a child at exec, so the figure is the child's only when the parent is small (the
    pipeline's step runners are); a child of a large process reports its own_peak_rss() instead.
    """
    with tempfile.TemporaryFile("w+") as out:
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, text=True, env=env, stdout=out)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        wall = time.monotonic() - t0
        out.seek(0)
        stdout = out.read()
    done = subprocess.CompletedProcess(proc.args, proc.returncode, stdout, None)
    return done, {"wall_s": round(wall, 2), "peak_rss_bytes": usage.ru_maxrss * 1024}


def run_module_measured(args: list[str], python: str | Path = sys.executable) -> tuple[subprocess.CompletedProcess, dict]:
    """run_module, measured (see run_measured)."""
    return run_measured(_cmd(args, python), env=_env())


def own_peak_rss() -> int:
    """This process's peak resident set (VmHWM) in bytes: its own, unlike wait4's, which starts at its parent's."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")
