"""The scheduled refresh: converts only the registry models whose upstream commit is not published yet."""

from __future__ import annotations

import hashlib
import json
import time

from conftest import ROOT
from nemo2sherpa import PIPELINE_VERSION
from nemo2sherpa.publish import bundle_key
from nemo2sherpa.registry import load_registry


def _sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def _publish_manifest(client, bucket, name, revision, files):
    key = f"{bundle_key('bundles', name, revision)}/manifest.json"
    body = {"format": "nemo2sherpa-bundle/1", "pipeline_version": PIPELINE_VERSION,
            "files": [{"name": f, "size": 1, "sha256": "0" * 64} for f in files]}
    client.put_object(Bucket=bucket, Key=key, Body=json.dumps(body).encode())


def test_refresh_triggers_conversions_only_for_what_changed(airflow_db, s3, fake_hub, tmp_path, monkeypatch, capfd):
    from sqlalchemy import select

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    registry = load_registry()
    small = tmp_path / "model.nemo"
    small.write_bytes(b"not read by the refresh: it only asks which commit a revision is")
    both = ["encoder.onnx", "decoder.onnx", "joiner.onnx", "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"]
    for name, entry in registry.items():
        fake_hub.add_repo(entry["repo_id"], {"model.nemo": small, "README.md": small}, _sha(name))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3.airflow_conn())
    c = s3.client()
    c.create_bucket(Bucket="refresh")
    _publish_manifest(c, "refresh", "parakeet-tdt-1.1b", _sha("parakeet-tdt-1.1b"), both)  # up to date
    _publish_manifest(c, "refresh", "parakeet-tdt-0.6b-v2", _sha("an older commit"), both)  # upstream moved
    _publish_manifest(c, "refresh", "parakeet-tdt-0.6b-v3", _sha("parakeet-tdt-0.6b-v3"), both[:3])  # no int8
    # parakeet-tdt_ctc-110m: never published.
    t0 = time.time()
    dag = DagBag(dag_folder=str(ROOT / "dags")).dags["nemo2sherpa_refresh"]
    dr = dag.test(run_conf={"bucket": "refresh"})
    wall = time.time() - t0
    logs = "".join(capfd.readouterr())
    assert dr.state == "success", [(ti.task_id, ti.map_index, ti.state) for ti in dr.get_task_instances()]
    assert "parakeet-tdt-1.1b" in logs and "up to date" in logs
    assert "published without int8" in logs and "not published yet" in logs
    with create_session() as session:
        runs = session.scalars(select(DagRun).where(DagRun.dag_id == "parakeet_tdt_to_sherpa_onnx")).all()
        triggered = {r.conf["source"]: r.conf for r in runs if r.conf and r.conf.get("bucket") == "refresh"
                     and r.queued_at and r.queued_at.timestamp() >= t0 - 1}
    assert sorted(triggered) == ["parakeet-tdt-0.6b-v2", "parakeet-tdt-0.6b-v3", "parakeet-tdt_ctc-110m"]
    for name, conf in triggered.items():
        assert conf["revision"] == _sha(name) and conf["variants"] == ["fp32", "int8"]
    print(f"refresh run with nothing heavy to do: {wall:.1f} s")
