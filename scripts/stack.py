"""`make up` / `make down`: a local Airflow stack a person can click, plus the S3 server.

Separate processes, all on 127.0.0.1: api-server (UI on :8080), scheduler and triggerer with
--skip-serve-logs, dag-processor, and `rclone serve s3` holding the bundles under .demo/s3.
LocalExecutor with parallelism 4. Login airflow / airflow by default (NEMO2SHERPA_UI_USER,
NEMO2SHERPA_UI_PASSWORD). `down` stops everything `up` started, by the pid file.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
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


def env(s3: S3Server) -> dict[str, str]:
    pw_file = HOME / "passwords.json"
    pw_file.write_text(json.dumps({USER: PASSWORD}))
    return airflow_env(
        AIRFLOW_HOME=str(HOME),
        AIRFLOW__CORE__EXECUTOR="LocalExecutor",
        AIRFLOW__CORE__PARALLELISM="4",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{USER}:admin",
        AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(pw_file),
        AIRFLOW__CORE__EXECUTION_API_SERVER_URL=f"http://127.0.0.1:{PORT}/execution/",
        AIRFLOW__API__BASE_URL=f"http://127.0.0.1:{PORT}",
        AIRFLOW_CONN_AWS_DEFAULT=s3.airflow_conn(),
    )


def up() -> int:
    if STATE.exists():
        print(f"already up ({STATE}); run `make down` first", file=sys.stderr)
        return 1
    HOME.mkdir(parents=True, exist_ok=True)
    logs = HOME / "stack-logs"
    logs.mkdir(exist_ok=True)
    s3 = S3Server(S3_ROOT, port=S3_PORT, key=S3_KEY, secret=S3_SECRET, log=logs / "s3.log").start()
    s3.ensure_bucket("nemo2sherpa")
    pids = {"s3": s3.proc.pid}
    e = env(s3)
    airflow = str(Path(sys.executable).parent / "airflow")
    subprocess.run([airflow, "db", "migrate"], env=e, check=True, stdout=subprocess.DEVNULL)
    commands = {
        "api-server": [airflow, "api-server", "--host", "127.0.0.1", "--port", str(PORT)],
        "scheduler": [airflow, "scheduler", "--skip-serve-logs"],
        "dag-processor": [airflow, "dag-processor"],
        "triggerer": [airflow, "triggerer", "--skip-serve-logs"],
    }
    for name, cmd in commands.items():
        with open(logs / f"{name}.log", "ab") as log:
            pids[name] = subprocess.Popen(cmd, env=e, stdout=log, stderr=subprocess.STDOUT, start_new_session=True).pid
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
    STATE.unlink()
    print("stopped: " + ", ".join(pids))
    return 0


if __name__ == "__main__":
    sys.exit({"up": up, "down": down}[sys.argv[1]]())
