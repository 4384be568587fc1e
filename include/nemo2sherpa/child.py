"""`python -m nemo2sherpa ...` in a child process that imports this same library."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

INCLUDE = Path(__file__).resolve().parents[1]


def run_module(args: list[str], python: str | Path = sys.executable, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([str(python), "-m", "nemo2sherpa", *args], text=True,
                          env={**os.environ, "PYTHONPATH": str(INCLUDE)}, **kw)
