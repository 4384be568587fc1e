"""`make up` for real: the stack on loopback, a run triggered and read through the REST API v2, the bundle
report plugin, and a headless-Chromium screenshot of the run's grid page (saved under test-artifacts/)."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from browser import Browser
from conftest import FIXTURE, ROOT
from s3server import free_port

DAG = "parakeet_tdt_to_sherpa_onnx"
ARTIFACTS = ROOT / "test-artifacts"


def listening_hosts(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on port (from /proc/net/tcp*)."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, p = local.split(":")
            if state == "0A" and int(p, 16) == port:  # 0A = LISTEN
                hosts.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]) if len(addr) == 8 else addr)
    return hosts


class Api:
    def __init__(self, base: str, token: str) -> None:
        self.base, self.token = base, token

    def call(self, method: str, path: str, body=None, accept: str = "application/json"):
        req = urllib.request.Request(self.base + path, method=method,
                                     data=None if body is None else json.dumps(body).encode(),
                                     headers={"Authorization": f"Bearer {self.token}", "Accept": accept,
                                              "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            raw = r.read()
        return json.loads(raw) if accept == "application/json" else raw.decode()


@pytest.fixture()
def stack(tmp_path):
    """`scripts/stack.py up` (what `make up` runs) on free loopback ports; `down` whatever happens."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "NEMO2SHERPA_UI_PORT": str(free_port()),
           "NEMO2SHERPA_S3_PORT": str(free_port()), "NEMO2SHERPA_S3_ROOT": str(tmp_path / "s3"),
           "NEMO2SHERPA_UI_PASSWORD": secrets.token_urlsafe(12), "NEMO2SHERPA_S3_SECRET": secrets.token_urlsafe(16)}
    script = [sys.executable, str(ROOT / "scripts" / "stack.py")]
    try:
        up = subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        yield env
    finally:
        subprocess.run([*script, "down"], env=env, capture_output=True, timeout=120)
        for port in (env["NEMO2SHERPA_UI_PORT"], env["NEMO2SHERPA_S3_PORT"]):
            assert not listening_hosts(int(port)), f"port {port} still listening after `down`"


def test_make_up_stack_rest_run_report_and_screenshot(stack):
    port, s3_port = int(stack["NEMO2SHERPA_UI_PORT"]), int(stack["NEMO2SHERPA_S3_PORT"])
    assert listening_hosts(port) == {"127.0.0.1"} and listening_hosts(s3_port) == {"127.0.0.1"}
    base = f"http://127.0.0.1:{port}"

    # A token from /auth/token (the simple auth manager's user and password the stack set up).
    req = urllib.request.Request(f"{base}/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": "airflow",
                                                  "password": stack["NEMO2SHERPA_UI_PASSWORD"]}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        token = json.load(r)["access_token"]
    api = Api(base, token)
    with pytest.raises(urllib.error.HTTPError) as denied:  # the API is not open to anyone
        Api(base, "not-a-token").call("GET", f"/api/v2/dags/{DAG}")
    assert denied.value.code in (401, 403)

    deadline = time.monotonic() + 180  # the dag-processor parses the DAG files
    while True:
        try:
            api.call("GET", f"/api/v2/dags/{DAG}")
            break
        except urllib.error.HTTPError as e:
            assert e.code == 404 and time.monotonic() < deadline, f"DAG never appeared: {e}"
            time.sleep(2)
    plugins = api.call("GET", "/api/v2/plugins")["plugins"]
    assert any(p["name"] == "nemo2sherpa" and p["fastapi_apps"] and p["external_views"] for p in plugins), plugins
    api.call("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    conf = {"source": str(FIXTURE), "prefix": "stack-test", "benchmark_lengths": [1, 2]}
    run_id = api.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]
    run = f"/api/v2/dags/{DAG}/dagRuns/{quote(run_id, safe='')}"

    deadline = time.monotonic() + 600
    while (state := api.call("GET", run)["state"]) not in ("success", "failed"):
        assert time.monotonic() < deadline, "the run did not finish in 10 min"
        time.sleep(5)
    tis = {t["task_id"]: t for t in api.call("GET", f"{run}/taskInstances")["task_instances"]}
    assert state == "success", {k: t["state"] for k, t in tis.items()}
    assert {t["state"] for t in tis.values()} == {"success"} and len(tis) == 9

    # The publish task's log, read through the API: the summary is there, the S3 secret is not.
    content = api.call("GET", f"{run}/taskInstances/publish/logs/{tis['publish']['try_number']}")["content"]
    log = "\n".join(str(x.get("event", x)) if isinstance(x, dict) else str(x) for x in content)
    assert "published:" in log and "== nemo2sherpa: tiny-tdt @ sha256-" in log and "validation: passed" in log
    assert stack["NEMO2SHERPA_S3_SECRET"] not in log

    # The extra link on publish points at the plugin's report, which shows the published bundle.
    link = api.call("GET", f"{run}/taskInstances/publish/links")["extra_links"]["Bundle report"]
    assert link == f"{base}/nemo2sherpa/runs/{DAG}/{quote(run_id, safe='')}"
    report = api.call("GET", link.removeprefix(base), accept="text/html")
    manifest = json.loads(api.call("GET", link.removeprefix(base) + "/files/manifest.json", accept="text/plain"))
    enc = next(f for f in manifest["files"] if f["name"] == "encoder.int8.onnx")
    assert enc["sha256"] in report and "Validation: PASSED" in report and "benchmark.png" in report
    with pytest.raises(urllib.error.HTTPError) as refused:  # models are not served through the api-server
        api.call("GET", link.removeprefix(base) + "/files/encoder.onnx", accept="text/plain")
    assert refused.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(link, timeout=30)
    assert anonymous.value.code in (401, 403)

    # The run's grid page in headless Chromium, logged in with the same token as the UI's cookie.
    with Browser() as b:
        b.set_cookie(base, "_token", token)
        text = b.open(f"{base}/dags/{DAG}/runs/{quote(run_id, safe='')}", wait_for=["publish", "benchmark", "Bundle report"])
        assert "Success" in text or "success" in text
        shot = b.screenshot(ARTIFACTS / "stack-run-grid.png")
        b.open(link, wait_for=["nemo2sherpa bundle report", "Validation: PASSED", "encoder.int8.onnx"])
        report_shot = b.screenshot(ARTIFACTS / "stack-bundle-report.png")
    assert shot.stat().st_size > 20_000 and report_shot.stat().st_size > 20_000
