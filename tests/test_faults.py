"""Safe by default (README, Faults): untrusted checkpoints and manifests stay contained, step processes hold no
credential they do not need, errors are classified once, and publish converges whichever write failed."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from conftest import FIXTURE, INCLUDE, run_cli
from nemo2sherpa.child import step_environment
from nemo2sherpa.errors import PERMANENT, TRANSIENT, VERDICT, GateFailed, InputError, TransientError, failure_kind
from nemo2sherpa.publish import LATEST, MANIFEST, PREFIX_PATTERN, bundle_key, latest_key, publish_run
from nemo2sherpa.records import Source
from nemo2sherpa.workspace import run_segment


class _Calls:
    """An object whose __reduce__ makes unpickling call os.system: what a hostile model_weights.ckpt holds."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _hostile_nemo(tmp_path: Path) -> tuple[Path, Path]:
    """The trained fixture with its model_weights.ckpt replaced by a pickle that touches a file when loaded."""
    marker = tmp_path / "code-ran"
    out = tmp_path / "hostile.nemo"
    with tarfile.open(FIXTURE) as src, tarfile.open(out, "w") as dst:
        for m in src.getmembers():
            if m.name.endswith("model_weights.ckpt"):
                data = pickle.dumps({"weight": _Calls(f"touch {marker}")})
                m.size = len(data)
                dst.addfile(m, __import__("io").BytesIO(data))
            else:
                dst.addfile(m, src.extractfile(m) if m.isfile() else None)
    return out, marker


def test_a_checkpoint_whose_weights_run_code_is_refused_naming_the_file(tmp_path, monkeypatch):
    """Weights-only loading, whatever the worker's environment asks for (TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD makes torch
    run such a pickle when the caller does not say otherwise): bad input, exit 2, nothing ran."""
    nemo, marker = _hostile_nemo(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    proc = run_cli("nemo", "export", "--nemo", str(nemo), "--bundle", str(tmp_path / "b"), "--reference",
                   str(tmp_path / "r"), check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nemo2sherpa: error: hostile.nemo: model_weights.ckpt is not weights only"), last
    assert not marker.exists() and not (tmp_path / "b").exists() and not (tmp_path / "r").exists()


def test_convert_runs_each_step_without_the_workers_credentials(tmp_path, monkeypatch):
    """`make convert` with an Airflow connection, a variable and cloud keys in the shell: the source step (which
    reads the inputs) holds the cloud keys, no step holds Airflow's settings, and export (which loads the untrusted
    checkpoint) holds nothing; each says so in its log. The hostile checkpoint is refused there, permanent."""
    nemo, marker = _hostile_nemo(tmp_path)
    monkeypatch.setenv("AIRFLOW_CONN_SECRET_STORE", "aws://k:s3cr3t@")
    monkeypatch.setenv("AIRFLOW_VAR_HF_TOKEN", "hf_should_not_travel")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "s3cr3t")
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    proc = subprocess.run([sys.executable, "-m", "nemo2sherpa", "convert", str(nemo), str(tmp_path / "out")],
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(INCLUDE)})
    assert proc.returncode == 2, proc.stderr[-3000:]
    log = proc.stderr
    assert "step source: credentials and Airflow settings in its environment: AWS_SECRET_ACCESS_KEY" in log
    assert "step export: holds no credential, Airflow connection or variable" in log
    assert "model_weights.ckpt is not weights only" in log and not marker.exists()
    assert not (tmp_path / "out").exists() and not (tmp_path / ".out.work").exists()


def test_the_step_environment_keeps_the_basics_and_drops_the_rest():
    worker = {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "HTTPS_PROXY": "http://p", "NEMO2SHERPA_X": "1",
              "AIRFLOW_CONN_AWS_DEFAULT": "aws://a:b@", "AIRFLOW_VAR_HF_TOKEN": "t", "AIRFLOW__CORE__FERNET_KEY": "f",
              "AWS_SECRET_ACCESS_KEY": "s", "HF_TOKEN": "h", "HF_ENDPOINT": "http://hub",
              "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD": "1"}
    env = step_environment(worker)
    assert env == {"PATH": "/bin", "HOME": "/h", "LC_ALL": "C", "HTTPS_PROXY": "http://p", "NEMO2SHERPA_X": "1",
                   "TORCH_FORCE_WEIGHTS_ONLY_LOAD": "1"}
    source = step_environment(worker, reads_inputs=True, credentials={"AWS_ACCESS_KEY_ID": "run's"})
    assert source["AWS_ACCESS_KEY_ID"] == "run's" and source["HF_ENDPOINT"] == "http://hub"
    assert "AWS_SECRET_ACCESS_KEY" not in source and "AIRFLOW_CONN_AWS_DEFAULT" not in source


@pytest.mark.parametrize("error, kind", [
    (ValueError("a bug"), PERMANENT), (json.JSONDecodeError("bad", "x", 0), PERMANENT),
    (pickle.UnpicklingError("Weights only load failed"), PERMANENT), (MemoryError(), PERMANENT),
    (InputError("bad input"), PERMANENT), (GateFailed("a gate"), VERDICT), (TransientError("503"), TRANSIENT),
    (ConnectionRefusedError(), TRANSIENT), (TimeoutError(), TRANSIENT)])
def test_errors_are_classified_once_and_what_nobody_classified_is_permanent(error, kind):
    assert failure_kind(error) == kind
    try:  # and through a chain: the outermost classified error decides, else a network fault in it
        try:
            raise error
        except BaseException as inner:
            raise RuntimeError("while doing something") from inner
    except RuntimeError as outer:
        assert failure_kind(outer) == kind


def test_a_network_library_fault_is_transient_by_its_declared_name():
    from botocore.exceptions import EndpointConnectionError, ReadTimeoutError

    assert failure_kind(EndpointConnectionError(endpoint_url="http://x")) == TRANSIENT
    assert failure_kind(ReadTimeoutError(endpoint_url="http://x")) == TRANSIENT


def test_an_unclassified_error_in_a_command_is_one_line_exit_2_naming_it(tmp_path):
    (tmp_path / "bundle").mkdir()
    proc = subprocess.run([sys.executable, "-m", "nemo2sherpa", "metadata", "--bundle", str(tmp_path / "bundle"),
                           "--reference", str(tmp_path / "none")], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(INCLUDE)})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("nemo2sherpa: error in metadata: FileNotFoundError: ")


@pytest.mark.parametrize("run_id", ["..", ".", "a/../..", "../../etc", "manual__2026-12-04T16:00:00+00:00", ""])
def test_a_run_id_is_one_safe_folder_name(run_id):
    seg = run_segment(run_id)
    assert seg and "/" not in seg and "." not in seg and not seg.startswith("-")
    assert run_segment(run_id + "x") != seg  # distinct ids stay distinct


@pytest.mark.parametrize("prefix, ok", [("bundles", True), ("team/asr/v1.2", True), ("", True), ("..", False),
                                        ("a/../b", False), ("a//b", False), ("./a", False), ("a/.", False)])
def test_a_key_prefix_has_no_dot_or_empty_segments(prefix, ok):
    import re

    assert bool(re.match(PREFIX_PATTERN, prefix)) == ok
    if ok:
        assert bundle_key(prefix, "m", "r").endswith("m/r-" + bundle_key("", "m", "r").split("-", 1)[1])
    else:
        with pytest.raises(InputError, match="fix the prefix"):
            bundle_key(prefix, "m", "r")


def test_the_form_bounds_what_a_run_may_ask_for():
    from airflow.dag_processing.dagbag import DagBag

    from conftest import ROOT

    dags = DagBag(dag_folder=str(ROOT / "dags")).dags
    params = dags["parakeet_tdt_to_sherpa_onnx"].params
    for name, bad in (("eval_max_clips", 100000), ("benchmark_lengths", [3600]), ("benchmark_lengths", [1] * 9),
                      ("prefix", "a/../b"), ("aws_conn_id", "some_other_connection")):
        with pytest.raises(Exception):
            params[name].resolve(bad)
    # The refresh DAG reads and passes on a connection too: the same declared list bounds it.
    refresh = dags["nemo2sherpa_refresh"].params
    assert refresh.get_param("aws_conn_id").schema["enum"] == params.get_param("aws_conn_id").schema["enum"]
    with pytest.raises(Exception):
        refresh["aws_conn_id"].resolve("some_other_connection")


class _Store:
    """A boto3 client over the real S3 server that fails chosen writes once (as a 500 would) and records calls."""

    def __init__(self, client, fail: tuple[str, ...] = ()) -> None:
        self.client, self.fail, self.calls = client, set(fail), []

    def __getattr__(self, name):
        return getattr(self.client, name)

    def _write(self, op: str, key: str) -> None:
        self.calls.append((op, key))
        for suffix in list(self.fail):
            if key.endswith(suffix):
                from botocore.exceptions import ClientError

                self.fail.discard(suffix)
                raise ClientError({"Error": {"Code": "InternalError", "Message": "injected"}}, "PutObject")

    def put_object(self, **kw):
        self._write("put", kw["Key"])
        return self.client.put_object(**kw)

    def upload_file(self, filename, bucket, key, **kw):
        self._write("upload", key)
        return self.client.upload_file(filename, bucket, key, **kw)

    def delete_object(self, **kw):
        self.calls.append(("delete", kw["Key"]))
        return self.client.delete_object(**kw)


def _source(revision: str, date: str) -> Source:
    return Source(kind="hub", name="tiny-tdt", repo_id="acme/tiny-tdt", revision=revision, revision_date=date)


@pytest.mark.parametrize("failing", [MANIFEST, LATEST])
def test_a_publish_retry_converges_whichever_write_failed(full_bundle, s3, failing):
    """The store fails the manifest's write (or latest.json's) once: the task's retry ends with the bundle, its
    manifest and latest.json all in place, and says to announce the bundle (its asset event), since this run
    published it. Another run finding it complete announces nothing."""
    key = bundle_key("ci", "tiny-tdt", "c1")
    store = _Store(s3.client(), (failing,))
    args = (full_bundle / "bundle", "faults", key, _source("c1", "2026-11-01T00:00:00Z"), ["fp32", "int8"])
    with pytest.raises(TransientError):
        publish_run(store, *args, run_id="run-1")
    again = publish_run(store, *args, run_id="run-1")
    c = s3.client()
    manifest = json.loads(c.get_object(Bucket="faults", Key=f"{key}/{MANIFEST}")["Body"].read())
    latest = json.loads(c.get_object(Bucket="faults", Key=latest_key(key))["Body"].read())
    assert again.announce and manifest["run_id"] == "run-1" and latest["bundle"] == f"s3://faults/{key}/"
    assert again.skipped == (failing == LATEST)  # the manifest was there: only latest.json was missing
    assert publish_run(s3.client(), *args, run_id="run-2").announce is False


def test_a_republish_withdraws_the_manifest_before_replacing_files(full_bundle, s3):
    """force: the old manifest is removed before the first file is replaced, so it never vouches for bytes being
    overwritten; a publish that fails in between leaves no manifest at all, and its retry puts one back."""
    key = bundle_key("ci", "tiny-tdt", "c1")
    args = (full_bundle / "bundle", "faults", key, _source("c1", "2026-11-01T00:00:00Z"), ["fp32", "int8"])
    publish_run(s3.client(), *args, run_id="run-1")
    s3.client().delete_object(Bucket="faults", Key=f"{key}/tokens.txt")  # lost: the re-publish must upload it again
    store = _Store(s3.client(), ("tokens.txt",))
    with pytest.raises(TransientError):
        publish_run(store, *args, run_id="run-2", force=True)
    first_write = next(i for i, (op, _) in enumerate(store.calls) if op in ("put", "upload"))
    assert ("delete", f"{key}/{MANIFEST}") in store.calls[:first_write]
    c = s3.client()
    assert "Contents" not in c.list_objects_v2(Bucket="faults", Prefix=f"{key}/{MANIFEST}")
    publish_run(store, *args, run_id="run-2", force=True)
    assert json.loads(c.get_object(Bucket="faults", Key=f"{key}/{MANIFEST}")["Body"].read())["run_id"] == "run-2"


def test_latest_only_moves_to_a_newer_revision(full_bundle, s3):
    c = s3.client()
    b = full_bundle / "bundle"
    for rev, date in (("new", "2026-11-20T00:00:00Z"), ("old", "2026-11-01T00:00:00Z")):
        publish_run(c, b, "latest", bundle_key("ci", "tiny-tdt", rev), _source(rev, date), ["fp32"], run_id=rev)
    latest = json.loads(c.get_object(Bucket="latest", Key="ci/tiny-tdt/latest.json")["Body"].read())
    assert latest["revision"] == "new"  # publishing the older revision did not move it back
    publish_run(c, b, "latest", bundle_key("ci", "tiny-tdt", "newer"), _source("newer", "2026-12-01T00:00:00Z"),
                ["fp32"], run_id="newer")
    assert json.loads(c.get_object(Bucket="latest", Key="ci/tiny-tdt/latest.json")["Body"].read())["revision"] == "newer"
