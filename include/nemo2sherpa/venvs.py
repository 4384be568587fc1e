"""The stage venvs: requirement files beside this module, built exactly as Airflow builds them.

The DAG passes `requirements(name)` to `@task.virtualenv(venv_cache_path=...)`. The command
line (`make convert`, fixtures) calls `ensure(name)`, which creates the *same* cached venv:
same folder name (`venv-<md5[:8]>` of the hash data Airflow's PythonVirtualenvOperator uses),
same uv commands, same completion marker. A test checks the hash against the operator's.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQ_DIR = HERE / "requirements"


def default_cache() -> Path:
    """Where stage venvs are cached (NEMO2SHERPA_VENV_CACHE)."""
    return Path(os.environ.get("NEMO2SHERPA_VENV_CACHE", HERE.parents[1] / ".cache" / "venvs"))


def requirements(name: str) -> list[str]:
    """The pinned requirements of a stage venv (requirements/<name>.txt), sorted."""
    path = REQ_DIR / f"{name}.txt"
    if not path.exists():
        raise FileNotFoundError(f"no requirements file {path}")
    lines = [ln.split("#", 1)[0].strip() for ln in path.read_text().splitlines()]
    return sorted(ln for ln in lines if ln)


def hash_data(reqs: list[str]) -> tuple[str, str]:
    """Airflow 3.3 / standard provider 1.21: the dict _calculate_cache_hash() hashes (system_site_packages=False)."""
    d = {
        "requirements_list": sorted(reqs),
        "pip_install_options": None,
        "index_urls": None,
        "cache_key": os.environ.get("AIRFLOW_VAR_PYTHON_VIRTUALENV_OPERATOR_CACHE_KEY", ""),
        "python_version": None,
        "system_site_packages": False,
    }
    text = json.dumps(d, sort_keys=True)
    return hashlib.md5(text.encode()).hexdigest()[:8], text


def ensure(name: str, cache: Path | None = None) -> Path:
    """Return the venv for a requirements file, creating it (with uv) if needed."""
    return ensure_requirements(requirements(name), cache)


def ensure_requirements(reqs: list[str], cache: Path | None = None) -> Path:
    """Return the cached venv for a list of pinned requirements (as Airflow would name and build it)."""
    cache = Path(cache or default_cache())
    reqs = sorted(reqs)
    digest, text = hash_data(reqs)
    venv = cache / f"venv-{digest}"
    cache.mkdir(parents=True, exist_ok=True)
    with open(f"{venv}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = venv / "install_complete_marker.json"
        if marker.exists() and marker.read_text(encoding="utf8") == text:
            return venv
        shutil.rmtree(venv, ignore_errors=True)
        venv.mkdir(parents=True)
        try:
            (venv / "requirements.txt").write_text("\n".join(reqs))
            uv = shutil.which("uv")
            if not uv:
                raise RuntimeError("uv not on PATH: run from the project venv (make venv)")
            subprocess.run([uv, "venv", "--allow-existing", "--seed", "--python", "python", str(venv)], check=True)
            subprocess.run([uv, "pip", "install", "--python", f"{venv}/bin/python", "-r",
                            str(venv / "requirements.txt")], check=True)
            marker.write_text(text, encoding="utf8")
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
    return venv
