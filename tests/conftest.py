"""Shared fixtures: the real stage venvs (the DAG's own), a converted tiny bundle, a real S3 server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
INCLUDE = ROOT / "include"
FIXTURE = ROOT / "tests" / "fixtures" / "tiny-tdt.nemo"  # trained: it transcribes the clips
RNNT_FIXTURE = ROOT / "tests" / "fixtures" / "tiny-rnnt.nemo"
for p in (INCLUDE, ROOT / "scripts", ROOT / "plugins"):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))

# Airflow reads its config at import: set it before any test imports airflow.
os.environ.setdefault("AIRFLOW_HOME", str(ROOT / ".cache" / "airflow-test"))
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ.setdefault("NEMO2SHERPA_VENV_CACHE", str(ROOT / ".cache" / "venvs"))
os.environ["NEMO2SHERPA_WORKSPACE"] = str(ROOT / ".cache" / "test-workspace")  # test runs' files, not the demo's
os.environ["PATH"] = f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")

from nemo2sherpa import venvs  # noqa: E402
from nemo2sherpa.child import run_module  # noqa: E402
from s3server import S3Server  # noqa: E402

from hubserver import FakeHub  # noqa: E402


def stage_python(name: str) -> Path:
    return venvs.ensure(name) / "bin" / "python"


def run_cli(venv: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    proc = run_module(list(args), python=stage_python(venv), capture_output=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"nemo2sherpa {args[0]} exit {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def last_json(proc: subprocess.CompletedProcess) -> dict:
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def source_manifest(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("source")
    m = last_json(run_cli("download", "source", "--source", str(FIXTURE), "--download-dir", str(d)))
    path = d / "source.json"
    path.write_text(json.dumps(m))
    return path


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """export of the tiny fixture: <dir>/bundle (fp32 ONNX + tokens) and <dir>/reference."""
    d = tmp_path_factory.mktemp("exported")
    run_cli("nemo", "export", "--nemo", str(FIXTURE), "--bundle", str(d / "bundle"), "--reference", str(d / "reference"))
    return d


@pytest.fixture(scope="session")
def full_bundle(exported, source_manifest, tmp_path_factory) -> Path:
    """exported + quantized + metadata: a complete bundle (a copy: tests may not touch `exported`)."""
    d = tmp_path_factory.mktemp("full")
    shutil.copytree(exported / "bundle", d / "bundle")
    shutil.copytree(exported / "reference", d / "reference")
    run_cli("onnx", "quantize", "--bundle", str(d / "bundle"))
    run_cli("onnx", "metadata", "--bundle", str(d / "bundle"), "--reference", str(d / "reference"),
            "--source-json", str(source_manifest))
    return d


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch):
    """The loopback Hub (tests/hubserver.py), with huggingface_hub pointed at it through HF_ENDPOINT; tests add
    their repos. Stopped when the test ends, whatever happened."""
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield hub


@pytest.fixture()
def s3(tmp_path):
    with S3Server(tmp_path / "s3", log=tmp_path / "rclone.log") as server:
        yield server


@pytest.fixture(scope="session")
def airflow_db():
    """A migrated Airflow metadata DB (sqlite) under AIRFLOW_HOME."""
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], check=True, capture_output=True)
    return os.environ["AIRFLOW_HOME"]


@pytest.fixture(scope="session")
def family_checkpoints(tmp_path_factory) -> dict[str, Path]:
    """Tiny random-weight checkpoints of each Parakeet family's shape, built from NeMo configs now,
    plus the committed trained plain-RNNT fixture."""
    d = tmp_path_factory.mktemp("families")
    proc = subprocess.run([str(stage_python("nemo")), str(ROOT / "tests" / "fixtures" / "build_tiny_model.py"),
                           "--family", "all", "--out", str(d)], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    built = [json.loads(line)["family"] for line in proc.stdout.splitlines() if line.startswith("{")]
    return {**{f: d / f"{f}.nemo" for f in built}, "rnnt": RNNT_FIXTURE}
