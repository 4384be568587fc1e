"""`make up` for real: the stack on loopback, a run triggered and read through the REST API v2, the bundle
report plugin, and a headless-Chromium screenshot of the run's grid page (saved under test-artifacts/)."""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

import pytest

from browser import Browser
from conftest import FIXTURE, ROOT
from nemo2sherpa.pipeline import STEP
from nemo2sherpa.variants import VARIANTS
from nemo2sherpa.workspace import run_segment
from s3server import S3Server, free_port

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


@contextmanager
def running_stack(tmp_path, **extra: str):
    """`scripts/stack.py up` (what `make up` runs) on free loopback ports; `down` whatever happens."""
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path / "airflow"), "NEMO2SHERPA_UI_PORT": str(free_port()),
           "NEMO2SHERPA_S3_PORT": str(free_port()), "NEMO2SHERPA_S3_ROOT": str(tmp_path / "s3"),
           "NEMO2SHERPA_UI_PASSWORD": secrets.token_urlsafe(12), "NEMO2SHERPA_S3_SECRET": secrets.token_urlsafe(16),
           **extra}
    script = [sys.executable, str(ROOT / "scripts" / "stack.py")]
    ports = [int(env[k]) for k in ("NEMO2SHERPA_UI_PORT", "NEMO2SHERPA_S3_PORT", "NEMO2SHERPA_REDIS_PORT") if k in env]
    try:
        up = subprocess.run([*script, "up"], env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        for port in ports:  # every server the stack started listens on loopback only
            assert listening_hosts(port) == {"127.0.0.1"}, (port, listening_hosts(port))
        base = f"http://127.0.0.1:{env['NEMO2SHERPA_UI_PORT']}"
        yield env, base, Api(base, token(base, env["NEMO2SHERPA_UI_PASSWORD"]))
    finally:
        subprocess.run([*script, "down"], env=env, capture_output=True, timeout=120)
        for port in ports:
            assert not listening_hosts(port), f"port {port} still listening after `down`"


def token(base: str, password: str) -> str:
    """A JWT from /auth/token (the simple auth manager's user and password the stack set up)."""
    req = urllib.request.Request(f"{base}/auth/token", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"username": "airflow", "password": password}).encode())
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)["access_token"]


def trigger(api: Api, conf: dict) -> str:
    """Wait for the DAG to be parsed, unpause it, trigger a run with conf: its run_id."""
    deadline = time.monotonic() + 180  # the dag-processor parses the DAG files
    while True:
        try:
            api.call("GET", f"/api/v2/dags/{DAG}")
            break
        except urllib.error.HTTPError as e:
            assert e.code == 404 and time.monotonic() < deadline, f"DAG never appeared: {e}"
            time.sleep(2)
    api.call("PATCH", f"/api/v2/dags/{DAG}", {"is_paused": False})
    return api.call("POST", f"/api/v2/dags/{DAG}/dagRuns", {"logical_date": None, "conf": conf})["dag_run_id"]


def wait_for(api: Api, run_id: str, published: bool = False) -> tuple[str, dict, dict[str, dict]]:
    """Poll a run to its end; it must succeed with every task (`published`: a run whose bundle was published
    already, every task after `unpublished` skipped): (run path, run, TIs by task id)."""
    run = f"/api/v2/dags/{DAG}/dagRuns/{quote(run_id, safe='')}"
    deadline = time.monotonic() + 600
    while (dr := api.call("GET", run))["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, "the run did not finish in 10 min"
        time.sleep(5)
    tis = {t["task_id"]: t for t in api.call("GET", f"{run}/taskInstances")["task_instances"]}
    assert dr["state"] == "success", {k: t["state"] for k, t in tis.items()}
    assert set(tis) == {"plan", "unpublished", *STEP, "publish"}
    first, *rest = STEP
    done = {"plan", first, "unpublished"} if published else set(tis)
    assert {k: t["state"] for k, t in tis.items()} == {k: "success" if k in done else "skipped" for k in tis}
    return run, dr, tis


def run_to_the_end(api: Api, conf: dict) -> tuple[str, str, dict[str, dict]]:
    run_id = trigger(api, conf)
    run, _, tis = wait_for(api, run_id)
    return run_id, run, tis


def log_text(api: Api, run: str, task: str, try_number: int = 1) -> str:
    content = api.call("GET", f"{run}/taskInstances/{task}/logs/{try_number}")["content"]
    return "\n".join(str(x.get("event", x)) if isinstance(x, dict) else str(x) for x in content)


def test_make_up_stack_rest_run_report_and_screenshot(tmp_path):
    with running_stack(tmp_path) as (stack, base, api):
        check_rest_run_report_and_screenshot(stack, base, api)


def check_rest_run_report_and_screenshot(stack: dict, base: str, api: Api) -> None:
    with pytest.raises(urllib.error.HTTPError) as denied:  # the API is not open to anyone
        Api(base, "not-a-token").call("GET", f"/api/v2/dags/{DAG}")
    assert denied.value.code in (401, 403)
    # Two runs of the same model, triggered together: the second waits for the first (max_active_runs=1), so
    # they never interleave in the workspace or the bucket; the second finds the bundle published right after
    # source, says where, and skips the rest. Every registered variant, end to end: built, validated, benchmarked
    # and published.
    conf = {"source": str(FIXTURE), "prefix": "stack-test", "benchmark_lengths": [1, 2], "variants": list(VARIANTS)}
    run_id, second_id = trigger(api, conf), trigger(api, conf)
    run, first, tis = wait_for(api, run_id)
    second_run, second, _ = wait_for(api, second_id, published=True)
    assert second["start_date"] >= first["end_date"], (first, second)
    said = log_text(api, second_run, "unpublished")
    assert "s3: already published at s3://nemo2sherpa/stack-test/tiny-tdt/sha256-" in said, said[-2000:]
    assert "the remaining tasks are skipped" in said
    plugins = api.call("GET", "/api/v2/plugins")["plugins"]
    assert any(p["name"] == "nemo2sherpa" and p["fastapi_apps"] and p["external_views"] for p in plugins), plugins

    # The publish task's log, read through the API: the summary is there, the S3 secret is not.
    log = log_text(api, run, "publish", tis["publish"]["try_number"])
    assert "published:" in log and "== nemo2sherpa: tiny-tdt @ sha256-" in log and "validation: passed" in log
    assert stack["NEMO2SHERPA_S3_SECRET"] not in log

    # The extra link on publish points at the plugin's report, which shows the published bundle.
    link = api.call("GET", f"{run}/taskInstances/publish/links")["extra_links"]["Bundle report"]
    assert link == f"{base}/nemo2sherpa/runs/{DAG}/{quote(run_id, safe='')}"
    report = api.call("GET", link.removeprefix(base), accept="text/html")
    manifest = json.loads(api.call("GET", link.removeprefix(base) + "/files/manifest.json", accept="text/plain"))
    enc = next(f for f in manifest["files"] if f["name"] == "encoder.int8.onnx")
    assert enc["sha256"] in report and "Validation: PASSED" in report and "benchmark.png" in report
    assert {"encoder.fp16.onnx", "decoder.fp16.onnx", "joiner.fp16.onnx"} <= {f["name"] for f in manifest["files"]}
    published = {f["name"] for f in manifest["files"]}
    validation = json.loads(api.call("GET", link.removeprefix(base) + "/files/validation.json", accept="text/plain"))
    bench = json.loads(api.call("GET", link.removeprefix(base) + "/files/benchmark.json", accept="text/plain"))
    for name, v in VARIANTS.items():
        assert set(v.files) <= published, name
        assert validation["variants"][name]["sherpa"]["ok"], name
        assert name in bench["cpu"] and name in bench["ort_cpu"], name
    assert validation["passed"] and {f["name"] for f in validation["files"]} <= published
    with pytest.raises(urllib.error.HTTPError) as refused:  # models are not served through the api-server
        api.call("GET", link.removeprefix(base) + "/files/encoder.onnx", accept="text/plain")
    assert refused.value.code == 404
    with pytest.raises(urllib.error.HTTPError) as anonymous:
        urllib.request.urlopen(link, timeout=30)
    assert anonymous.value.code in (401, 403)

    # The run's grid page in headless Chromium, logged in with the same token as the UI's cookie.
    with Browser() as b:
        b.set_cookie(base, "_token", api.token)
        text = b.open(f"{base}/dags/{DAG}/runs/{quote(run_id, safe='')}", wait_for=["publish", "benchmark", "Bundle report"])
        assert "Success" in text or "success" in text
        shot = b.screenshot(ARTIFACTS / "stack-run-grid.png")
        b.open(link, wait_for=["nemo2sherpa bundle report", "Validation: PASSED", "encoder.int8.onnx"])
        report_shot = b.screenshot(ARTIFACTS / "stack-bundle-report.png")
    assert shot.stat().st_size > 20_000 and report_shot.stat().st_size > 20_000
    check_report_as_a_person_reads_it(base, api, run, run_id, link, manifest)


def check_report_as_a_person_reads_it(base: str, api: Api, run: str, run_id: str, link: str, manifest: dict) -> None:
    """The report's top in a browser (verdict, gated figures apart from reported ones, runtimes by name, download
    links that work), the benchmark figure shown, the run page's tab filled by the report, a failed run's report
    naming its task and error; the publish summary in the publish task's own log section; no deprecation warning
    in any task's log."""
    with Browser() as b:
        b.set_cookie(base, "_token", api.token)
        text = b.open(link, wait_for=["PASSED", "gated (limit)", "reported only", "runtimes proven", "download"])
        top = text[:text.index("Where")]
        assert "WER vs fp32 (worst length bucket)" in top and "sherpa-onnx" in top and "link valid 60 min" in top
        fit = b.call("Runtime.evaluate", expression="[document.documentElement.scrollWidth, innerWidth, "
                     "document.querySelector(\"img[alt^='latency']\").naturalWidth]", returnByValue=True)
        page_width, window_width, figure_width = fit["result"]["value"]
        assert page_width <= window_width and figure_width > 500  # no sideways page; the benchmark figure loaded
        hrefs = b.call("Runtime.evaluate", expression="[...document.querySelectorAll('a')].map(a => [a.textContent, "
                       "a.href])", returnByValue=True)["result"]["value"]
        b.screenshot(ARTIFACTS / "stack-report-top.png")
        b.call("Runtime.evaluate", expression="document.querySelector(\"img[alt^='latency']\").scrollIntoView()")
        time.sleep(0.5)
        b.screenshot(ARTIFACTS / "stack-report-benchmark.png")
        # The run page's "Bundle report" tab: the report's frame fills the tab (the page's width, to its bottom).
        b.open(f"{base}/dags/{DAG}/runs/{quote(run_id, safe='')}/plugin/nemo2sherpa-report", wait_for=["Bundle report"])
        time.sleep(2)
        box = b.call("Runtime.evaluate", expression="(f => f && [f.getBoundingClientRect().width, "
                     "f.getBoundingClientRect().bottom, innerWidth, innerHeight])(document.querySelector('iframe'))",
                     returnByValue=True)["result"]["value"]
        assert box and box[0] >= 0.6 * box[2] and box[1] >= box[3] - 40, box
        b.screenshot(ARTIFACTS / "stack-report-tab.png")
    archives = {name: url for name, url in hrefs if ".tar" in name}
    assert len(archives) == len(VARIANTS), hrefs  # each variant's archive, presigned through the run's connection
    for name, url in archives.items():
        with urllib.request.urlopen(url, timeout=60) as r:  # a browser needs no credentials: the URL carries them
            assert hashlib.sha256(r.read()).hexdigest() == next(f["sha256"] for f in manifest["files"]
                                                                if f["name"] == name)

    # publish's summary is in its own section of the log, not in the collapsed "Post Execute" one.
    log = log_text(api, run, "publish")
    assert log.index("== nemo2sherpa: tiny-tdt") < log.index("Post Execute") if "Post Execute" in log else True
    for task in ("plan", *STEP, "publish"):
        said = log_text(api, run, task)
        assert "Variable.get from `airflow.models` is deprecated" not in said, task
        assert not re.search(r"Deprecat\w*.*(nemo2sherpa|dags/|plugins/)", said), (task, said[-3000:])

    # A run that fails: its report names the failed task and its error, and says nothing was published.
    bad = trigger(api, {"source": "/no/such/model.nemo", "prefix": "stack-test"})
    bad_run = f"/api/v2/dags/{DAG}/dagRuns/{quote(bad, safe='')}"
    deadline = time.monotonic() + 300
    while api.call("GET", bad_run)["state"] not in ("success", "failed"):
        assert time.monotonic() < deadline, "the failing run did not end in 5 min"
        time.sleep(3)
    assert api.call("GET", bad_run)["state"] == "failed"
    bad_link = f"{base}/nemo2sherpa/runs/{DAG}/{quote(bad, safe='')}"
    with Browser() as b:
        b.set_cookie(base, "_token", api.token)
        text = b.open(bad_link, wait_for=["FAILED", "task plan failed", "/no/such/model.nemo", "upstream_failed"])
        assert "Nothing was published by this run" in text
        b.screenshot(ARTIFACTS / "stack-report-failed-run.png")


def test_celery_routes_benchmark_to_the_gpu_worker_through_an_object_store_workspace(tmp_path):
    """`make up-celery`: CeleryExecutor, Redis on loopback, a `default` and a `gpu` worker, each with its own
    workspace mirror (as on two hosts) and the workspace an S3 prefix: the run succeeds only if the files
    really travel through the store; the benchmark task ran on the gpu worker and nowhere else."""
    home = tmp_path / "airflow"
    extra = {"NEMO2SHERPA_EXECUTOR": "celery", "NEMO2SHERPA_REDIS_PORT": str(free_port()),
             "NEMO2SHERPA_WORKSPACE": "s3://workspace/runs"}
    with running_stack(tmp_path, **extra) as (stack, base, api):
        run_id, run, tis = run_to_the_end(api, {"source": str(FIXTURE), "prefix": "celery", "benchmark_lengths": [1]})
        assert tis["benchmark"]["queue"] == "gpu"
        assert {t["queue"] for k, t in tis.items() if k != "benchmark"} == {"default"}
        logs = {q: (home / "stack-logs" / f"worker-{q}.log").read_text() for q in ("default", "gpu")}
        ran = {q: set(re.findall(r"task_id='([a-z_]+)'", text)) for q, text in logs.items()}
        assert ran["gpu"] == {"benchmark"}, ran
        assert ran["default"] == set(tis) - {"benchmark"}, ran

        run_key = f"{DAG}/{run_segment(run_id)}"
        s3 = S3Server(Path(stack["NEMO2SHERPA_S3_ROOT"]), port=int(stack["NEMO2SHERPA_S3_PORT"]),
                      secret=stack["NEMO2SHERPA_S3_SECRET"]).client()
        stored = {o["Key"].removeprefix(f"runs/{run_key}/")
                  for o in s3.list_objects_v2(Bucket="workspace", Prefix=f"runs/{run_key}/")["Contents"]}
        assert {"bundle/encoder.onnx", "bundle/encoder.int8.onnx", "bundle/validation.json",
                "bundle/benchmark.json", "reference/reference.npz"} <= stored, sorted(stored)
        mirrors = {q: home / f"mirror-{q}" / run_key for q in ("default", "gpu")}
        assert (mirrors["gpu"] / "bundle" / "encoder.int8.onnx").exists()  # pulled from the store for benchmark
        assert (mirrors["default"] / "bundle" / "benchmark.json").exists()  # pulled back for publish
        assert not (Path(os.environ["NEMO2SHERPA_WORKSPACE"]) / run_key).exists()  # no shared folder was used
        assert "workspace pull s3://workspace/runs/" in log_text(api, run, "benchmark")
        publish_log = log_text(api, run, "publish")
        pulled = re.search(r"workspace pull .*?: ([0-9.]+) MB fetched, (\d+) files already here", publish_log)
        assert pulled and float(pulled[1]) < 1 and int(pulled[2]) >= 10  # only the gpu worker's files came over
        manifest = json.loads(s3.get_object(Bucket="nemo2sherpa", Key=next(
            o["Key"] for o in s3.list_objects_v2(Bucket="nemo2sherpa", Prefix="celery/")["Contents"]
            if o["Key"].endswith("/manifest.json")))["Body"].read())
        assert "benchmark.json" in {f["name"] for f in manifest["files"]}
