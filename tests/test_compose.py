"""docker-compose.yaml cannot run here (no Docker engine): read it and check it matches the DAG."""

from __future__ import annotations

import json
import re

import pytest
import yaml

from conftest import ROOT


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "docker-compose.yaml").read_text())


def test_services(compose):
    s = compose["services"]
    for name in ("postgres", "redis", "minio", "minio-init", "airflow-apiserver", "airflow-scheduler",
                 "airflow-dag-processor", "airflow-triggerer", "airflow-worker", "airflow-worker-gpu"):
        assert name in s, name
    env = s["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    for port in s["airflow-apiserver"]["ports"] + s["minio"]["ports"]:
        assert port.startswith("127.0.0.1:"), port


def test_gpu_queue_matches_the_benchmark_task(compose):
    dag_src = (ROOT / "dags" / "parakeet_tdt_to_sherpa_onnx.py").read_text()
    default_queue = re.search(r'NEMO2SHERPA_BENCHMARK_QUEUE", "([^"]+)"', dag_src).group(1)
    gpu = compose["services"]["airflow-worker-gpu"]
    assert f"--queues {default_queue}" in gpu["command"]
    assert gpu["environment"]["NEMO2SHERPA_BENCHMARK_QUEUE"] == default_queue
    assert gpu["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "--queues default" in compose["services"]["airflow-worker"]["command"]


def test_connection_bucket_and_workspace_match_the_dag(compose):
    dag_src = (ROOT / "dags" / "parakeet_tdt_to_sherpa_onnx.py").read_text()
    declared = (ROOT / "include" / "nemo2sherpa" / "workspace.py").read_text()  # the DAGs' allowed connections
    conn_id = re.search(r'NEMO2SHERPA_S3_CONNECTIONS", "([^",]+)', declared).group(1)  # the first allowed: the default
    bucket = re.search(r'"bucket": Param\("([^"]+)"', dag_src).group(1)
    env = compose["services"]["airflow-worker"]["environment"]
    conn = json.loads(env[f"AIRFLOW_CONN_{conn_id.upper()}"].replace("${MINIO_ROOT_USER:-nemo2sherpa}", "u")
                      .replace("${MINIO_ROOT_PASSWORD:-nemo2sherpa-secret}", "p"))
    assert conn["conn_type"] == "aws" and conn["extra"]["endpoint_url"] == "http://minio:9000"
    assert f"local/{bucket}" in compose["services"]["minio-init"]["entrypoint"]
    # Every worker sees the one workspace volume the stages hand files through.
    for w in ("airflow-worker", "airflow-worker-gpu"):
        vols = compose["services"][w]["volumes"]
        assert "workspace:/opt/airflow/workspace" in vols
        assert compose["services"][w]["environment"]["NEMO2SHERPA_WORKSPACE"] == "/opt/airflow/workspace"


def dockerfile_problems(text: str) -> list[str]:
    """What the worker image lacks against the declarations it serves: the Airflow release of requirements.txt, every
    stage venv's requirement file, every runtime kind's toolchain (built by `runtimes-install`, or, for a kind the
    registries cannot give, its tools installed), and the venv cache the venvs are built into."""
    from nemo2sherpa.runtimes import KINDS
    from nemo2sherpa.venvs import REQ_DIR

    problems = []
    airflow = re.search(r"^apache-airflow==([\d.]+)$", (ROOT / "requirements.txt").read_text(), re.M).group(1)
    if not re.search(rf"^FROM apache/airflow:{re.escape(airflow)}-python3\.11\s*$", text, re.M):
        problems.append(f"FROM is not apache/airflow:{airflow}-python3.11 (requirements.txt's Airflow)")
    if "pip install --no-cache-dir -r /opt/nemo2sherpa/requirements.txt" not in text:
        problems.append("requirements.txt is not installed")
    for req in sorted(REQ_DIR.glob("*.txt")):
        if not re.search(rf"python -m nemo2sherpa venv {re.escape(req.stem)}(\s|$)", text):
            problems.append(f"the {req.stem} venv ({req.name}) is not built")
    if "python -m nemo2sherpa runtimes-install" not in text:
        problems.append("the runtime matrix (runtimes-install: wheels, Node.js, zig, clients) is not installed")
    for name, kind in KINDS.items():
        for tool in kind.tools if not kind.installable else ():
            if not re.search(rf"apt-get install[^\n]*\b{tool}\b", text):
                problems.append(f"{tool} for the {name} runtime ({kind.label}) is not installed")
    if "NEMO2SHERPA_VENV_CACHE=/opt/nemo2sherpa/venvs" not in text:
        problems.append("the venvs are not built into the cache the workers use")
    return problems


def test_the_worker_image_serves_every_venv_and_runtime(compose):
    """No Docker engine here: the Dockerfile is read and held to the declarations, and the compose builds it; the
    check itself fails when a venv or a runtime's tool goes missing from the image."""
    text = (ROOT / "Dockerfile").read_text()
    assert dockerfile_problems(text) == []
    common = compose["x-airflow-common"]
    assert common["build"] == {"context": ".", "dockerfile": "Dockerfile"}
    for service in ("airflow-worker", "airflow-worker-gpu", "airflow-scheduler"):
        env = compose["services"][service]["environment"]
        assert env["NEMO2SHERPA_VENV_CACHE"] == "/opt/nemo2sherpa/venvs"
        assert not any("venv-cache" in v for v in compose["services"][service].get("volumes", []))
    assert "the nemo venv (nemo.txt) is not built" in dockerfile_problems(text.replace("venv nemo ", "venv X "))
    assert "cargo for the rust runtime (C API from Rust) is not installed" in dockerfile_problems(
        text.replace("cargo rustc", "rustc"))
    assert any("runtimes-install" in p for p in dockerfile_problems(text.replace("runtimes-install", "")))
