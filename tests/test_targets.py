"""The publish target interface (nemo2sherpa.targets): the S3 target implements it, and any target is published to
through the function the DAG's publish task calls (publish_to), which logs the run's summary whatever the target."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

import pytest

from nemo2sherpa import PIPELINE_VERSION
from nemo2sherpa.errors import InputError
from nemo2sherpa.publish import S3Target, bundle_key
from nemo2sherpa.records import FileDigest, Manifest, RecordError, RunFigures, Source, ValidationSummary
from nemo2sherpa.report import Figure
from nemo2sherpa.targets import (KINDS, MANIFEST, Download, PublishResult, Target, TargetOptions, open_targets,
                                 publish_all, publish_to, published_state, published_xcom, target_url)
from nemo2sherpa.variants import BASE, VARIANT_FILES


class MemoryTarget:
    """A Target over a dict: what a second target implements, with none of a store's faults."""

    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}

    def where(self, model: str, revision: str) -> str:
        return f"mem://{model}/{revision}/"

    def manifest(self, model: str, revision: str) -> Manifest | None:
        raw = self.read(f"{self.where(model, revision)}{MANIFEST}")
        return Manifest.from_json(json.loads(raw)) if raw else None

    def read(self, uri: str) -> bytes | None:
        return self.objects.get(uri)

    def download(self, uri: str, model: str, variant: str, expires_s: int) -> Download:
        return Download(name=f"{model}-{variant}", url=f"{uri}{variant}")

    def publish(self, bundle: Path, source: Source, variants: list[str], run_id: str,
                summary: RunFigures | None = None, force: bool = False) -> PublishResult:
        uri = self.where(source.name, source.revision)
        existing = None if force else self.manifest(source.name, source.revision)
        if existing is not None and published_state(existing, variants) is None:
            return PublishResult(uri, f"{uri}{MANIFEST}", [], skipped=True, announce=existing.run_id == run_id)
        files = [FileDigest(name=p.name, size=p.stat().st_size, sha256=hashlib.sha256(p.read_bytes()).hexdigest())
                 for p in sorted(bundle.iterdir())]
        for f in files:
            self.objects[f"{uri}{f.name}"] = (bundle / f.name).read_bytes()
        manifest = Manifest(format="test/1", run_id=run_id, files=files, summary=(summary or RunFigures()).to_json())
        self.objects[f"{uri}{MANIFEST}"] = json.dumps(manifest.to_json()).encode()
        return PublishResult(uri, f"{uri}{MANIFEST}", [f"{uri}{f.name}" for f in files] + [f"{uri}{MANIFEST}"],
                             skipped=False, announce=True, files=files)


def test_targets_implement_the_interface():
    assert isinstance(S3Target(client=None, bucket="b"), Target)
    assert isinstance(MemoryTarget(), Target)
    assert not isinstance(object(), Target)


def test_every_kind_opens_from_its_url_and_from_a_runs_params(tmp_path):
    """targets.KINDS, the one place a kind is declared: each opens from its URL (and from the DAGs' params) through the
    client its caller hands over, with the run's options, into a Target; a URL of no kind, or one its kind refuses,
    is refused naming it and the forms there are, before any client is made."""
    params = {"bucket": "models", "prefix": "asr/parakeet", "hub_namespace": "acme"}
    made: list[str] = []
    clients = {name: (lambda name=name: made.append(name) or f"client-{name}") for name in KINDS}
    options = TargetOptions(create_bucket=False, private=True, reference=tmp_path)
    opened = open_targets({name: kind.url_from(params) for name, kind in KINDS.items()}, clients, options)
    assert list(opened) == list(KINDS) == made and all(isinstance(t, Target) for t in opened.values())
    s3, hub = opened["s3"], opened["hub"]
    assert (s3.client, s3.bucket, s3.prefix, s3.create_bucket) == ("client-s3", "models", "asr/parakeet", False)
    assert (hub.api, hub.namespace, hub.private, hub.reference) == ("client-hub", "acme", True, tmp_path)
    assert s3.where("m", "r") == f"s3://models/asr/parakeet/m/r-{PIPELINE_VERSION}/"
    made.clear()
    # the report plugin opens the target a published URI lives in
    assert target_url("hf://acme/sherpa-onnx-nemo-m/README.md") == "hf://acme" == KINDS["hub"].url_from(params)
    assert target_url(s3.where("m", "r") + "manifest.json") == "s3://models"
    for bad in ("ftp://acme", "hf://acme/extra", "hf://", "s3://"):
        with pytest.raises(InputError, match=f"{bad}"):
            open_targets({"s3": "s3://fine", "x": bad}, clients)
        assert not made, bad


def test_publish_all_publishes_to_each_target_and_hands_the_plugin_their_results(tmp_path, caplog):
    """publish_all, the publish step of the DAG and of convert: each target in turn, its time kept; the XCom the
    report plugin reads gives the first target's result, the bundle folder, and every target's by name."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "tokens.txt").write_text("a 0\n")
    src = Source(kind="local", name="m", revision="r")
    targets = {"one": MemoryTarget(), "two": MemoryTarget()}
    caplog.set_level(logging.INFO, logger="nemo2sherpa.targets")
    results = publish_all(targets, bundle, src, [BASE.name], "run-1", ValidationSummary(passed=True), {})
    assert list(results) == ["one", "two"] and all(r.wall_s is not None and r.wall_s >= 0 for r in results.values())
    assert all(t.read("mem://m/r/tokens.txt") == b"a 0\n" for t in targets.values())
    logged = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("published to one in ") for m in logged) and any(m.startswith("published to two in ")
                                                                             for m in logged)
    xcom = published_xcom(results, bundle)
    assert xcom == {**results["one"].to_json(), "bundle": str(bundle),
                    "targets": {"one": results["one"].to_json(), "two": results["two"].to_json()}}


def test_any_target_is_published_to_through_the_dags_function(tmp_path, caplog):
    """publish_to: the target publishes (the gates' figures in its manifest), the run's summary is logged (a record a line,
    in the task's own section) as the task's log shows it, and the record gives the XCom and the asset event."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    names = sorted([*VARIANT_FILES[BASE.name], "tokens.txt"])
    for n in names:
        (bundle / n).write_text(f"{n}\n")
    src = Source(kind="local", name="m", revision="r")
    gated = Figure("int8", "WER vs fp32 (worst length bucket)", 0.0, 3, "the clips the model knows", 0.05)
    reported = Figure("int8", "WER vs fp32", 0.1504, 5, "every clip")
    validated = ValidationSummary(passed=True, gates=3, token_match={BASE.name: 1.0, "int8": 0.97},
                                  figures=[gated.to_json(), reported.to_json()])
    bench = {BASE.name: {"1": 0.012}}
    target = MemoryTarget()

    caplog.set_level(logging.INFO, logger="nemo2sherpa.targets")
    result = publish_to(target, bundle, src, [BASE.name], "run-1", validated, bench)
    printed = [r.getMessage() for r in caplog.records if r.name == "nemo2sherpa.targets"]
    caplog.clear()
    assert printed[:len(names) + 3] == ["published:", *(f"  mem://m/r/{n}" for n in names),
                                        "  mem://m/r/manifest.json", f"local bundle folder: {bundle}"]
    assert printed[len(names) + 3] == f"== nemo2sherpa: m @ r (pipeline {PIPELINE_VERSION}) =="
    assert f"  {MANIFEST:<20} (written last)  mem://m/r/manifest.json" in printed
    assert f"sherpa-onnx CPU p50 {BASE.name}: 1 s clip 12.0 ms" in printed
    # the figures validate's gates held, with their limits, apart from those only reported: none reads as a failure
    at = printed.index(f"validation: passed, 3 gates; token match vs NeMo {BASE.name} 1.0, int8 0.97")
    assert printed[at + 1:at + 5] == [
        "  gated (on the clips the model knows; a figure over its limit fails the run):",
        "    int8: WER vs fp32 (worst length bucket) 0.0 (limit 0.05), 3 clips",
        "  reported only (on every clip, audio the model does not know included; no limit):",
        "    int8: WER vs fp32 0.1504, 5 clips"]
    assert target.manifest("m", "r").summary == {"validation": validated.to_json(), "benchmark_p50_s": bench}
    assert target.read("mem://m/r/tokens.txt") == (bundle / "tokens.txt").read_bytes()
    assert result.to_json() == {"uri": "mem://m/r/", "objects": result.objects, "skipped": False}
    assert result.asset_event(src) == ("mem://m/r", {"model": "m", "revision": "r",
                                                     "pipeline_version": PIPELINE_VERSION,
                                                     "manifest": "mem://m/r/manifest.json"})

    again = publish_to(target, bundle, src, [BASE.name], "run-2", validated, bench)
    up_to_date = f"mem://m/r/ already published with {BASE.name}: up to date; set force to redo"
    assert [r.getMessage() for r in caplog.records if r.name == "nemo2sherpa.targets"] == [up_to_date]
    assert again.skipped and not again.announce


def test_the_s3_target_answers_where_manifest_and_read(s3, tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "tokens.txt").write_text("a 0\n<blk> 1\n")
    target = S3Target(s3.client(), "targets", "ci")
    src = Source(kind="local", name="m", revision="r")
    result = target.publish(bundle, src, [], "run-1")
    uri = target.where("m", "r")
    assert result.uri == uri == f"s3://targets/{bundle_key('ci', 'm', 'r')}/" and result.announce
    assert result.manifest_uri == f"{uri}{MANIFEST}" and result.objects[-2] == result.manifest_uri
    assert target.manifest("m", "r").run_id == "run-1" and target.manifest("m", "other") is None
    assert target.read(f"{uri}tokens.txt") == (bundle / "tokens.txt").read_bytes()
    assert target.read(f"{uri}VALIDATION.md") is None
    with pytest.raises(InputError, match="not in bucket 'targets'"):
        target.read("s3://elsewhere/ci/m/tokens.txt")
    again = target.publish(bundle, src, [], "run-2")
    assert again.skipped and not again.announce and again.objects == ["s3://targets/ci/m/latest.json"]


def test_published_as_says_whether_a_target_holds_this_exact_bundle(tmp_path):
    """What the DAG's `unpublished` task asks each target: every variant of the plan, made the plan's way (the int8
    recipe), at this revision and pipeline version; else what differs."""
    from nemo2sherpa.pipeline import make_plan
    from nemo2sherpa.targets import published_as

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    for n in [*VARIANT_FILES["fp32"], *VARIANT_FILES["int8"], "tokens.txt"]:
        (bundle / n).write_text(n)
    src = Source(kind="local", name="m", revision="r")
    target = MemoryTarget()

    def plan(variants, recipe=None):
        return make_plan(tmp_path / "ws", "m", variants=variants, lengths=[1.0], int8_recipe=recipe, runtimes=["python"])

    assert published_as(target, src, plan(["fp32"])) == "not published yet at mem://m/r/"
    publish_to(target, bundle, src, ["fp32", "int8"], "run-1",
               ValidationSummary(passed=True, made={"int8_recipe": "matmul-qint8"}), {})
    assert published_as(target, src, plan(["fp32", "int8"], "matmul-qint8")) == \
        "already published at mem://m/r/ (run run-1)"
    assert published_as(target, src, plan(["fp32", "int8"], "sherpa-onnx")) == \
        "published at mem://m/r/ with another int8_recipe matmul-qint8 (this run: sherpa-onnx)"
    assert published_as(target, dataclasses.replace(src, revision="r2"), plan(["fp32"])) == \
        "not published yet at mem://m/r2/"
    target.objects = {k: v for k, v in target.objects.items() if "int8" not in k}
    manifest = target.manifest("m", "r")
    target.objects["mem://m/r/manifest.json"] = json.dumps(dataclasses.replace(
        manifest, files=[f for f in manifest.files if "int8" not in f.name]).to_json()).encode()
    assert published_as(target, src, plan(["fp32", "int8"], "matmul-qint8")) == \
        "published without int8 at mem://m/r/"


def test_validations_summary_is_a_record_with_the_made_variants_options_beside_the_rest():
    """What validate hands publish (records.ValidationSummary): its JSON keeps the published manifests' shape (each
    made variant's options, int8_recipe, as keys of their own, fp32's WER key by name) and reads back equal; a key
    nobody declared is refused by name."""
    summary = ValidationSummary(passed=False, gates=7, made={"int8_recipe": "sherpa-onnx"},
                                token_match={BASE.name: 1.0}, wer_vs_base={"int8": 0.02})
    data = summary.to_json()
    assert list(data)[:7] == ["passed", "gates", "mode", "thresholds", "max_abs_diff", "encoder_rel_err",
                              "int8_recipe"]
    assert data["int8_recipe"] == "sherpa-onnx" and data[f"wer_vs_{BASE.name}"] == {"int8": 0.02}
    assert ValidationSummary.from_json(json.loads(json.dumps(data))) == summary
    with pytest.raises(RecordError, match="unknown field.*int4_recipe"):
        ValidationSummary.from_json({**data, "int4_recipe": "x"})
    with pytest.raises(RecordError, match="gates"):
        ValidationSummary.from_json({**data, "gates": "seven"})
