"""Shared fixtures: the real stage venvs (the DAG's own), a converted tiny bundle, a real S3 server."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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
# The long-recording gate (gates.LONG_RECORDING) off by default here, as a deployment would set it: the `validated`
# fixture and the DAG test that read it turn it on.
os.environ["NEMO2SHERPA_LONG_RECORDING_S"] = "none"

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


# The test knob (variants.single_file_max): a graph over this many bytes keeps its weights in a .weights file beside
# it. The tiny fixture's fp32 encoder (~6 MB) then lies on disk as every registry model over 2 GB does.
BIG_LAYOUT = "100000"


@contextmanager
def big_layout() -> Iterator[None]:
    """Child processes started meanwhile write the big models' layout (the test knob)."""
    old = os.environ.get("NEMO2SHERPA_SINGLE_FILE_MAX")
    os.environ["NEMO2SHERPA_SINGLE_FILE_MAX"] = BIG_LAYOUT
    try:
        yield
    finally:
        if old is None:
            del os.environ["NEMO2SHERPA_SINGLE_FILE_MAX"]
        else:
            os.environ["NEMO2SHERPA_SINGLE_FILE_MAX"] = old


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """export of the tiny fixture in the big models' layout: <dir>/bundle (fp32 ONNX, its encoder's weights in
    encoder.weights, tokens) and <dir>/reference. Every stage test that starts from it (quantize, metadata,
    validate, the runtime matrix, package, publish) reads that layout."""
    d = tmp_path_factory.mktemp("exported")
    with big_layout():
        run_cli("nemo", "export", "--nemo", str(FIXTURE), "--bundle", str(d / "bundle"), "--reference",
                str(d / "reference"))
    assert (d / "bundle" / "encoder.weights").exists()
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


LONG_RECORDING_S = 540  # the `validated` fixture's long-recording gate: 9 minutes, past NeMo's old table (488 s)


@pytest.fixture(scope="session")
def validated(full_bundle, source_manifest, tmp_path_factory):
    """The full fixture bundle (fp32 + int8), validated, with its reference, and the long-recording gate on 9 minutes:
    what compat, package and publish run after (the runtime matrix's tests add compatibility.json to it)."""
    d = tmp_path_factory.mktemp("validated")
    shutil.copytree(full_bundle / "bundle", d / "bundle")
    shutil.copytree(full_bundle / "reference", d / "reference")
    run_cli("onnx", "validate", "--bundle", str(d / "bundle"), "--reference", str(d / "reference"), "--variants",
            "fp32,int8", "--source-json", str(source_manifest), "--report", str(d / "bundle" / "validation.json"),
            "--long-recording-s", str(LONG_RECORDING_S))
    return d


@pytest.fixture()
def fake_hub(tmp_path, monkeypatch):
    """The loopback Hub (tests/hubserver.py), with huggingface_hub pointed at it through HF_ENDPOINT; tests add
    their repos. Stopped when the test ends, whatever happened."""
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        # It speaks LFS, not Xet: huggingface_hub uploads through Xet whenever hf_xet is importable (the real Hub
        # takes both), so a client publishing here is told not to, in child processes and in this one.
        import huggingface_hub.constants

        monkeypatch.setenv("HF_HUB_DISABLE_XET", "1")
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_DISABLE_XET", True)
        yield hub


@pytest.fixture()
def s3(tmp_path):
    with S3Server(tmp_path / "s3", log=tmp_path / "rclone.log") as server:
        yield server


@pytest.fixture()
def task_logs(capfd, caplog):
    """What an in-process DAG run (dag.test) logged since the last call: this process's output and its log records.
    Both, since Airflow's log handler writes to whichever sys.stdout was current when it was first configured in this
    process (an earlier test's capture, not this test's), while its records still reach the root logger."""
    import logging

    caplog.set_level(logging.INFO)

    def read() -> str:
        text = "".join(capfd.readouterr()) + caplog.text
        caplog.clear()
        return text

    return read


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
