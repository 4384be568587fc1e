"""`make up` / `make down`: a local Airflow stack a person can click, plus the S3 server.

Separate processes, all on 127.0.0.1: api-server (UI on :8080), scheduler and triggerer with
--skip-serve-logs, dag-processor, and `rclone serve s3` holding the bundles under .demo/s3.
LocalExecutor with parallelism 4. Login airflow / airflow by default (NEMO2SHERPA_UI_USER,
NEMO2SHERPA_UI_PASSWORD). `down` stops everything `up` started, by the pid file.

NEMO2SHERPA_EXECUTOR=celery (`make up-celery`) is the scale-out shape on one machine: CeleryExecutor, a
Redis broker (Debian's redis-server) on loopback, and two workers, one on the `default` queue and one
on the `gpu` queue (where the DAG sends its benchmark), each with its own workspace mirror directory,
as if on different hosts. With NEMO2SHERPA_WORKSPACE=s3://<bucket>/<prefix> the workers hand files on
through the S3 server instead of a shared folder (the bucket is created here).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "scripts"), str(ROOT / "include")]
from nemo2sherpa import workspace  # noqa: E402
from s3server import S3Server, airflow_env  # noqa: E402

HOME = Path(os.environ.get("AIRFLOW_HOME", ROOT / ".airflow"))
STATE = HOME / "stack.json"
PORT = int(os.environ.get("NEMO2SHERPA_UI_PORT", "8080"))
S3_PORT = int(os.environ.get("NEMO2SHERPA_S3_PORT", "9100"))
USER = os.environ.get("NEMO2SHERPA_UI_USER", "airflow")
PASSWORD = os.environ.get("NEMO2SHERPA_UI_PASSWORD", "airflow")
S3_KEY = os.environ.get("NEMO2SHERPA_S3_KEY", "nemo2sherpa")
S3_SECRET = os.environ.get("NEMO2SHERPA_S3_SECRET", "nemo2sherpa-secret")
S3_ROOT = Path(os.environ.get("NEMO2SHERPA_S3_ROOT", ROOT / ".demo" / "s3"))
EXECUTOR = os.environ.get("NEMO2SHERPA_EXECUTOR", "local")
REDIS_PORT = int(os.environ.get("NEMO2SHERPA_REDIS_PORT", "6379"))
WORKERS = {"worker-default": "default", "worker-gpu": "gpu"}  # Celery worker -> the queue it serves


def env(s3: S3Server) -> dict[str, str]:
    pw_file = HOME / "passwords.json"
    pw_file.write_text(json.dumps({USER: PASSWORD}))
    celery = {} if EXECUTOR != "celery" else dict(
        AIRFLOW__CORE__EXECUTOR="CeleryExecutor",
        AIRFLOW__CELERY__BROKER_URL=f"redis://127.0.0.1:{REDIS_PORT}/0",
        AIRFLOW__CELERY__RESULT_BACKEND=f"db+sqlite:///{HOME / 'celery-results.db'}",
        AIRFLOW__CELERY__WORKER_CONCURRENCY="2",
    )
    return airflow_env(**{
        "AIRFLOW_HOME": str(HOME),
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(pw_file),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{PORT}/execution/",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{PORT}",
        "AIRFLOW_CONN_AWS_DEFAULT": s3.airflow_conn(),
        **celery,  # overrides the executor
    })


def up() -> int:
    if STATE.exists():
        print(f"already up ({STATE}); run `make down` first", file=sys.stderr)
        return 1
    if EXECUTOR not in ("local", "celery"):
        print(f"NEMO2SHERPA_EXECUTOR={EXECUTOR!r}: use local or celery", file=sys.stderr)
        return 2
    redis = shutil.which("redis-server")
    if EXECUTOR == "celery" and not redis:
        print("the celery stack needs Debian's redis-server: apt-get install -y redis-server", file=sys.stderr)
        return 1
    HOME.mkdir(parents=True, exist_ok=True)
    logs = HOME / "stack-logs"
    logs.mkdir(exist_ok=True)
    s3 = S3Server(S3_ROOT, port=S3_PORT, key=S3_KEY, secret=S3_SECRET, log=logs / "s3.log").start()
    pids = {"s3": s3.proc.pid}
    try:
        return _start(s3, pids, logs, redis)
    except BaseException:
        down_now(pids)  # nothing half-started stays behind
        STATE.unlink(missing_ok=True)
        raise


def _start(s3: S3Server, pids: dict[str, int], logs: Path, redis: str | None) -> int:
    s3.ensure_bucket("nemo2sherpa")
    ws = os.environ.get("NEMO2SHERPA_WORKSPACE", "")
    if workspace.is_remote(ws):
        s3.ensure_bucket(workspace.split(ws)[0])
    if EXECUTOR == "celery":
        with open(logs / "redis.log", "ab") as log:
            pids["redis"] = subprocess.Popen([redis, "--bind", "127.0.0.1", "--port", str(REDIS_PORT), "--save", "",
                                              "--appendonly", "no"], stdout=log, stderr=subprocess.STDOUT,
                                             start_new_session=True).pid
    e = env(s3)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=e, check=True, stdout=subprocess.DEVNULL)
    commands = {
        "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(PORT)],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }
    envs = {name: e for name in commands}
    if EXECUTOR == "celery":
        for name, queue in WORKERS.items():
            commands[name] = [airflow, "celery", "worker", "--queues", queue, "--celery-hostname",
                              f"{queue}@127.0.0.1", "--skip-serve-logs", "--without-mingle", "--without-gossip"]
            # Its own mirror of an object-store workspace, as on another host (a shared folder is used as is).
            envs[name] = {**e, "NEMO2SHERPA_WORKSPACE_CACHE": str(HOME / f"mirror-{queue}")}
    for name, cmd in commands.items():
        with open(logs / f"{name}.log", "ab") as log:
            pids[name] = subprocess.Popen(cmd, env=envs[name], stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True).pid
    STATE.write_text(json.dumps({"pids": pids, "s3": s3.endpoint}))
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/api/v2/monitor/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(1)
    else:
        down()
        print(f"api-server did not answer on 127.0.0.1:{PORT} within 180 s; see {logs}", file=sys.stderr)
        return 1
    print(f"Airflow UI: http://127.0.0.1:{PORT}  (login {USER} / {PASSWORD})")
    print(f"S3 server:  {s3.endpoint}  (connection aws_default; bucket nemo2sherpa; files in {s3.root})")
    print(f"logs: {logs}; stop everything with `make down`")
    return 0


def down() -> int:
    if not STATE.exists():
        print("nothing to stop")
        return 0
    pids = json.loads(STATE.read_text())["pids"]
    down_now(pids)
    STATE.unlink()
    print("stopped: " + ", ".join(pids))
    return 0


def down_now(pids: dict[str, int]) -> None:
    """SIGTERM each process group, wait up to 20 s, SIGKILL what is left."""
    for name, pid in pids.items():
        try:
            os.killpg(pid, signal.SIGTERM)
        except ProcessLookupError:
            continue
    deadline = time.monotonic() + 20
    for name, pid in pids.items():
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
                time.sleep(0.2)
            except ProcessLookupError:
                break
        else:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


if __name__ == "__main__":
    sys.exit({"up": up, "down": down}[sys.argv[1]]())
