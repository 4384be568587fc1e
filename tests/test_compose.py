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
    conn_id = re.search(r'"aws_conn_id": Param\("([^"]+)"', dag_src).group(1)
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
