"""The scheduled refresh: converts only the registry models whose upstream commit is not published yet."""

from __future__ import annotations

import hashlib
import json
import time

from conftest import BIG_LAYOUT, ROOT
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


def test_refresh_triggers_conversions_only_for_what_changed(airflow_db, s3, fake_hub, tmp_path, monkeypatch, task_logs):
    from sqlalchemy import select

    from airflow.dag_processing.dagbag import DagBag
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    registry = load_registry()
    small = tmp_path / "model.nemo"
    small.write_bytes(b"not read by the refresh: it only asks which commit a revision is")
    both = ["encoder.onnx", "decoder.onnx", "joiner.onnx", "encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"]
    for name, entry in registry.items():
        fake_hub.add_repo(entry.repo_id, {"model.nemo": small, "README.md": small}, _sha(name))
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
    logs = task_logs()
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


def test_refresh_repairs_a_bundle_without_a_variant_and_names_what_it_could_not_check(
        airflow_db, s3, fake_hub, tmp_path, monkeypatch, task_logs):
    """The loop closes, on S3 and on the Hub: a model published with fp32 only; the refresh asks for fp32 + int8 and
    triggers its conversion; that run adds int8 to the published bundle (the fp32 objects untouched, the manifest
    rewritten last; on the Hub one commit to the int8 repo, none to the fp32 one); the next refresh finds it up to
    date. A registry model whose repo is gone fails its own mapped task
    at once (a permanent error: no retry), the others are still decided, and the run's state is failed."""
    from airflow.dag_processing.dagbag import DagBag

    from conftest import FIXTURE

    commit = _sha("tiny-tdt")
    fake_hub.add_repo("acme/tiny-tdt", {"tiny-tdt.nemo": FIXTURE}, commit)
    reg = tmp_path / "models.toml"
    reg.write_text('["tiny-tdt"]\nrepo_id = "acme/tiny-tdt"\n\n["gone-tdt"]\nrepo_id = "acme/gone-tdt"\n')
    monkeypatch.setenv("NEMO2SHERPA_REGISTRY", str(reg))
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", s3.airflow_conn())
    monkeypatch.setenv("NEMO2SHERPA_SINGLE_FILE_MAX", BIG_LAYOUT)  # fp32 in the big models' layout
    token = "hf_" + "publ1sh" * 5  # a write token of acme's member: the Hub target publishes there too
    fake_hub.add_token(token, user="alice", orgs=("acme",), write=True)
    monkeypatch.setenv("AIRFLOW_VAR_HF_TOKEN", token)
    both = {"targets": ["s3", "hub"], "hub_namespace": "acme"}
    hub_fp32, hub_int8 = "acme/sherpa-onnx-nemo-tiny-tdt", "acme/sherpa-onnx-nemo-tiny-tdt-int8"
    load_registry.cache_clear()  # the DAG files read the registry when they are parsed, here in this process
    try:
        bag = DagBag(dag_folder=str(ROOT / "dags"))
        convert, refresh = bag.dags["parakeet_tdt_to_sherpa_onnx"], bag.dags["nemo2sherpa_refresh"]
        c = s3.client()
        first = convert.test(run_conf={"source": "tiny-tdt", "bucket": "repair", "variants": ["fp32"],
                                       "benchmark_lengths": [1], **both})
        assert first.state == "success", [(ti.task_id, ti.state) for ti in first.get_task_instances()]
        assert [x["repo"] for x in fake_hub.commits] == [hub_fp32]  # the big layout on the Hub: encoder.weights
        assert {"encoder.onnx", "encoder.weights", "decoder.onnx", "joiner.onnx"} <= set(fake_hub.repos[hub_fp32].files)
        key = f"{bundle_key('bundles', 'tiny-tdt', commit)}"
        fp32_before = {n: c.head_object(Bucket="repair", Key=f"{key}/{n}")["LastModified"]
                       for n in ("encoder.onnx", "encoder.weights", "decoder.onnx", "joiner.onnx", "tokens.txt")}
        task_logs()

        dr = refresh.test(run_conf={"bucket": "repair", "variants": ["fp32", "int8"], **both})
        logs = task_logs()
        states = {(ti.task_id, ti.map_index): ti for ti in dr.get_task_instances()}
        assert dr.state == "failed"  # a model went unchecked: the run says so
        gone = next(ti for (t, i), ti in states.items() if t == "upstream_revision" and ti.state == "failed")
        assert gone.try_number == 1  # a repo that is gone is permanent: failed at once, no retry
        assert "gone-tdt" in logs and "could not check" in logs and "not checked: gone-tdt" in logs
        assert "tiny-tdt" in logs and "s3: published without int8; hub: published without int8" in logs
        assert states[("decide", -1)].state == "success" and states[("all_checked", -1)].state == "failed"
        conf = dr.get_task_instance("decide").xcom_pull(task_ids="decide")[0]
        assert conf["source"] == "tiny-tdt" and conf["variants"] == ["fp32", "int8"] and not conf["force"]
        assert conf["targets"] == ["s3", "hub"] and conf["hub_namespace"] == "acme"

        second = convert.test(run_conf={**conf, "benchmark_lengths": [1]})  # the run the refresh triggered
        logs = task_logs()
        assert second.state == "success", [(ti.task_id, ti.state) for ti in second.get_task_instances()]
        assert "published without int8: adding to it" in logs
        manifest = json.loads(c.get_object(Bucket="repair", Key=f"{key}/manifest.json")["Body"].read())
        names = {f["name"] for f in manifest["files"]}
        assert {"encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx", "encoder.onnx", "encoder.weights"} <= names
        assert manifest["variants"]["fp32"] == ["encoder.onnx", "encoder.weights", "decoder.onnx", "joiner.onnx"]
        assert {"encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"} <= set(manifest["added"])
        assert "encoder.onnx" not in manifest["added"]
        assert {n: c.head_object(Bucket="repair", Key=f"{key}/{n}")["LastModified"] for n in fp32_before} == fp32_before
        assert [x["repo"] for x in fake_hub.commits] == [hub_fp32, hub_int8]  # the fp32 repo held its bytes already
        assert {"encoder.int8.onnx", "decoder.int8.onnx", "joiner.int8.onnx"} <= set(fake_hub.repos[hub_int8].files)

        again = refresh.test(run_conf={"bucket": "repair", "variants": ["fp32", "int8"], **both})
        logs = task_logs()
        assert "tiny-tdt" in logs and "up to date" in logs and "published without" not in logs
        assert again.get_task_instance("decide").xcom_pull(task_ids="decide") == []
    finally:
        monkeypatch.delenv("NEMO2SHERPA_REGISTRY")
        load_registry.cache_clear()
