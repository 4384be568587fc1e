"""publish against a real S3 server (rclone serve s3 on 127.0.0.1)."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import INCLUDE
from s3server import S3Server

from nemo2sherpa.errors import PERMANENT, TRANSIENT, PermanentError, failure_kind
from nemo2sherpa.publish import (MANIFEST, ChangedAfterValidation, PublishError, bundle_key, publish_bundle,
                                 verify_download)
from nemo2sherpa.records import Source


def test_publish_uploads_with_sha256_and_manifest_last(full_bundle, s3, tmp_path):
    src = Source(kind="local", name="tiny-tdt", revision="sha256-abc", path=Path("/x"))
    key = bundle_key("bundles", "tiny-tdt", "sha256-abc")
    out = publish_bundle(s3.client(), full_bundle / "bundle", "nemo2sherpa", key, src)
    assert out.objects[-2].endswith(f"{key}/manifest.json")
    assert out.objects[-1] == "s3://nemo2sherpa/bundles/tiny-tdt/latest.json"  # the model's pointer, after it
    c = s3.client()
    listed = {o["Key"].rsplit("/", 1)[1] for o in c.list_objects_v2(Bucket="nemo2sherpa", Prefix=key)["Contents"]}
    assert {"encoder.onnx", "encoder.weights", "encoder.int8.onnx", "tokens.txt", "manifest.json"} <= listed  # big layout
    # Objects are files on the server's disk: download fresh and check every sha256.
    dl = tmp_path / "dl"
    dl.mkdir()
    for name in listed:
        c.download_file("nemo2sherpa", f"{key}/{name}", str(dl / name))
    assert set(verify_download(dl)) == listed - {"manifest.json"}
    manifest = json.loads((dl / "manifest.json").read_text())
    head = c.head_object(Bucket="nemo2sherpa", Key=f"{key}/encoder.onnx")
    want = next(f["sha256"] for f in manifest["files"] if f["name"] == "encoder.onnx")
    assert {k.lower(): v for k, v in head["Metadata"].items()}["sha256"] == want
    # A tampered file is caught.
    (dl / "tokens.txt").write_text("tampered\n")
    with pytest.raises(RuntimeError, match="tokens.txt"):
        verify_download(dl)


def _validated(bundle, names) -> dict[str, str]:
    """Write validation.json's `files` record for these files, as validate does; returns their sha256s."""
    import hashlib

    files = [{"name": n, "size": (bundle / n).stat().st_size,
              "sha256": hashlib.sha256((bundle / n).read_bytes()).hexdigest()} for n in names]
    (bundle / "validation.json").write_text(json.dumps({"passed": True, "files": files}))
    return {f["name"]: f["sha256"] for f in files}


def test_publish_uploads_the_validated_bytes_or_nothing(full_bundle, s3, tmp_path, caplog):
    """Model files go up under the digests validate recorded, checked against the local file during the
    upload; a file that changed after validation is refused: its object deleted, no manifest."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(full_bundle / "bundle", bundle)
    want = _validated(bundle, ["encoder.onnx", "joiner.int8.onnx", "tokens.txt"])
    c = s3.client()
    src = Source(kind="local", name="tiny-tdt", revision="r")
    with caplog.at_level(logging.INFO, logger="nemo2sherpa.publish"):
        out = publish_bundle(c, bundle, "nemo2sherpa", "v/ok", src)
    assert {f.name: f.sha256 for f in out.files if f.name in want} == want
    assert sorted(out.validated) == sorted(want)
    uploaded = [r.getMessage() for r in caplog.records if r.getMessage().startswith("uploaded ")]
    assert {m.split()[1] for m in uploaded if m.endswith("(= validated)")} == set(want)

    tokens = (bundle / "tokens.txt").read_bytes()
    (bundle / "tokens.txt").write_bytes(tokens[:-2] + bytes([tokens[-2] ^ 1]) + tokens[-1:])  # same size
    changed = r"tokens.txt is not the file validate passed \(sha256 .*run validate again"
    with pytest.raises(ChangedAfterValidation, match=changed) as err:
        publish_bundle(c, bundle, "nemo2sherpa", "v/bitflip", src)
    assert failure_kind(err.value) == PERMANENT  # no retry: the same bytes would be refused again
    names = {o["Key"] for o in c.list_objects_v2(Bucket="nemo2sherpa", Prefix="v/bitflip/").get("Contents", [])}
    assert "v/bitflip/encoder.onnx" in names and "v/bitflip/tokens.txt" not in names  # its metadata would lie
    assert not any(n.endswith(MANIFEST) for n in names)

    (bundle / "tokens.txt").write_bytes(tokens + b"x 9\n")  # a size change is seen before anything moves
    with pytest.raises(ChangedAfterValidation, match=r"tokens.txt is not the file validate passed \(\d+ bytes, validated"):
        publish_bundle(c, bundle, "nemo2sherpa", "v/grown", src)
    assert c.list_objects_v2(Bucket="nemo2sherpa", Prefix="v/grown/").get("KeyCount", 0) == 0


def test_wrong_credentials_give_a_clear_error(full_bundle, s3):
    import boto3

    bad = boto3.client("s3", endpoint_url=s3.endpoint, aws_access_key_id=s3.key, aws_secret_access_key="wrong",
                       region_name="us-east-1")
    with pytest.raises(PermanentError, match="refused access.*check the connection's keys"):
        publish_bundle(bad, full_bundle / "bundle", "nemo2sherpa", "k", Source(kind="local", name="x", revision="x"))


def test_missing_bucket_without_create_is_a_clear_error(full_bundle, s3):
    with pytest.raises(PermanentError, match="does not exist: create it, or let publish create it .*create_bucket"):
        publish_bundle(s3.client(), full_bundle / "bundle", "nobucket", "k", Source(kind="local", name="x", revision="x"), create_bucket=False)


def test_a_rerun_uploads_only_what_is_missing_or_different(full_bundle, s3, tmp_path):
    """After a publish that died half way, the next run skips objects whose sha256 already matches."""
    import shutil

    bundle = tmp_path / "bundle"
    shutil.copytree(full_bundle / "bundle", bundle)
    src = Source(kind="local", name="tiny-tdt", revision="sha256-abc", path=Path("/x"))
    c = s3.client()
    first = publish_bundle(c, bundle, "nemo2sherpa", "re/run", src)
    assert first.skipped == []
    c.delete_object(Bucket="nemo2sherpa", Key="re/run/manifest.json")  # as if killed before the manifest
    c.delete_object(Bucket="nemo2sherpa", Key="re/run/joiner.onnx")  # ... and before this file
    c.put_object(Bucket="nemo2sherpa", Key="re/run/tokens.txt", Body=b"stale", Metadata={"sha256": "0" * 64})
    second = publish_bundle(c, bundle, "nemo2sherpa", "re/run", src)
    names = [f.name for f in second.files]
    assert set(names) - set(second.skipped) == {"joiner.onnx", "tokens.txt"}
    assert c.get_object(Bucket="nemo2sherpa", Key="re/run/tokens.txt")["Body"].read() == (bundle / "tokens.txt").read_bytes()
    assert second.objects[-2].endswith("re/run/manifest.json")
    latest = json.loads(c.get_object(Bucket="nemo2sherpa", Key="re/latest.json")["Body"].read())
    assert latest["bundle"] == "s3://nemo2sherpa/re/run/" and latest["revision"] == "sha256-abc"


def test_upload_progress_is_logged_with_rate(s3, tmp_path, caplog):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with open(bundle / "encoder.weights", "wb") as f:
        f.truncate(80 << 20)  # a big file (sparse zeros): progress lines every 10%
    (bundle / "tokens.txt").write_text("a 0\n<blk> 1\n")  # a small one: no progress lines
    with caplog.at_level(logging.INFO, logger="nemo2sherpa.publish"):
        publish_bundle(s3.client(), bundle, "nemo2sherpa", "progress/run", Source(kind="local", name="p", revision="r"))
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("uploading ")]
    assert 5 <= len(lines) <= 10 and all("encoder.weights" in x and "MB/s" in x for x in lines)
    assert "100%" in lines[-1]


def test_a_failed_publish_leaves_no_manifest_and_no_open_uploads(s3, tmp_path):
    """An upload that dies mid-file: no manifest, its multipart upload aborted; an upload left open by a run
    that was killed (no handler ran) is aborted by the next run, which then completes the bundle."""
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with open(bundle / "encoder.weights", "wb") as f:
        f.truncate(80 << 20)
    (bundle / "tokens.txt").write_text("a 0\n<blk> 1\n")
    c = s3.client()
    c.create_bucket(Bucket="faults")
    key = "m/rev-p1"

    class DiesMidUpload:  # the real client, except that the big upload breaks after its first part
        def __getattr__(self, name):
            return getattr(c, name)

        def upload_file(self, filename, bucket, obj, **kw):
            if obj.endswith("encoder.weights"):
                u = c.create_multipart_upload(Bucket=bucket, Key=obj)
                c.upload_part(Bucket=bucket, Key=obj, UploadId=u["UploadId"], PartNumber=1, Body=b"0" * (5 << 20))
                raise ConnectionError("S3 went away mid-upload")
            return c.upload_file(filename, bucket, obj, **kw)

    def open_uploads():
        return c.list_multipart_uploads(Bucket="faults", Prefix=f"{key}/").get("Uploads", [])

    with pytest.raises(PublishError, match=r"stopped answering .*\(S3 went away mid-upload\).* no manifest.json") as err:
        publish_bundle(DiesMidUpload(), bundle, "faults", key, Source(kind="local", name="m", revision="rev"))
    assert failure_kind(err.value) == TRANSIENT  # the task retries: the store may be back
    assert open_uploads() == []
    names = [o["Key"] for o in c.list_objects_v2(Bucket="faults").get("Contents", [])]
    assert not [n for n in names if n.endswith(("manifest.json", "latest.json"))]

    killed = c.create_multipart_upload(Bucket="faults", Key=f"{key}/encoder.weights")  # as a SIGKILL leaves it
    c.upload_part(Bucket="faults", Key=f"{key}/encoder.weights", UploadId=killed["UploadId"], PartNumber=1,
                  Body=b"0" * (5 << 20))
    out = publish_bundle(c, bundle, "faults", key, Source(kind="local", name="m", revision="rev"))
    assert out.aborted == [f"{key}/encoder.weights"] and open_uploads() == []
    assert out.objects[-2].endswith(f"{key}/manifest.json")


def _big_bundle(path, mb: int = 256):
    """A bundle with one multipart-sized file of real (non-sparse, non-constant) bytes and a small one."""
    path.mkdir()
    block = os.urandom(1 << 20)
    with open(path / "encoder.weights", "wb") as f:
        for i in range(mb):
            f.write(block[i:] + block[:i])
    (path / "tokens.txt").write_text("a 0\n<blk> 1\n")
    return path


def _converged(c, bucket: str, key: str, bundle) -> None:
    """The bundle as a reader sees it: a manifest whose sha256s are the local files', no open uploads."""
    from nemo2sherpa.source import sha256_file

    manifest = json.loads(c.get_object(Bucket=bucket, Key=f"{key}/{MANIFEST}")["Body"].read())
    assert {f["name"]: f["sha256"] for f in manifest["files"]} == {
        n: sha256_file(bundle / n) for n in ("encoder.weights", "tokens.txt")}
    for f in manifest["files"]:
        meta = c.head_object(Bucket=bucket, Key=f"{key}/{f['name']}")["Metadata"]
        assert {k.lower(): v for k, v in meta.items()}["sha256"] == f["sha256"]  # rclone capitalises keys
    assert c.list_multipart_uploads(Bucket=bucket, Prefix=f"{key}/").get("Uploads", []) == []


def test_s3_down_mid_upload_fails_clean_then_a_rerun_completes(tmp_path, caplog):
    """The real server is killed while the big file is in flight: botocore retries, then one clear error, no
    manifest; with the server back, the re-run publishes the identical bundle."""
    bundle = _big_bundle(tmp_path / "bundle")
    server = S3Server(tmp_path / "s3", log=tmp_path / "rclone.log").start()
    try:
        c = server.client()
        key = "down/rev-p1"

        class KillServerAtFirstProgress(logging.Handler):
            def emit(self, record):
                if record.getMessage().startswith("uploading encoder.weights") and server.proc:
                    server.proc.kill()  # SIGKILL: the store vanishes mid-file, no goodbye

        killer = KillServerAtFirstProgress()
        logging.getLogger("nemo2sherpa.publish").addHandler(killer)
        try:
            with caplog.at_level(logging.INFO, logger="nemo2sherpa.publish"):
                with pytest.raises(PublishError) as err:
                    publish_bundle(c, bundle, "faults", key, Source(kind="local", name="m", revision="rev"))
        finally:
            logging.getLogger("nemo2sherpa.publish").removeHandler(killer)
        msg = str(err.value)
        assert f"the S3 endpoint {server.endpoint} stopped answering" in msg and "no manifest.json" in msg
        assert "bring the S3 server back" in msg and "retry the task" in msg
        server.proc.wait(10)
        server.start()  # same port, same files on disk
        names = [o["Key"] for o in c.list_objects_v2(Bucket="faults").get("Contents", [])]
        assert f"{key}/{MANIFEST}" not in names
        out = publish_bundle(c, bundle, "faults", key, Source(kind="local", name="m", revision="rev"))
        assert out.uri == f"s3://faults/{key}/"
        _converged(c, "faults", key, bundle)
    finally:
        server.stop()


def test_a_publish_killed_mid_upload_then_rerun_converges(s3, tmp_path):
    """SIGKILL of the publishing process while the big file's parts are in flight (no handler runs): no
    manifest, an open multipart upload left on the server; the re-run aborts it and completes the bundle."""
    bundle = _big_bundle(tmp_path / "bundle")
    key = "killed/rev-p1"
    s3.ensure_bucket("faults")
    child = (
        "import logging, sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); sys.path.insert(0, sys.argv[2])\n"
        "logging.basicConfig(level=logging.INFO, stream=sys.stderr, format='%(message)s')\n"
        "from s3server import S3Server; from nemo2sherpa.publish import publish_bundle\n"
        "s = S3Server(Path('.'), port=int(sys.argv[3]), secret=sys.argv[4])\n"
        "publish_bundle(s.client(), Path(sys.argv[5]), 'faults', sys.argv[6], {'name': 'm', 'revision': 'rev'})\n")
    proc = subprocess.Popen([sys.executable, "-c", child, str(INCLUDE), str(INCLUDE.parent / "scripts"),
                             str(s3.port), s3.secret, str(bundle), key], stderr=subprocess.PIPE, text=True)
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if line.startswith("uploading encoder.weights"):  # parts are on the wire
            proc.send_signal(signal.SIGKILL)
            break
    proc.stderr.close()
    assert proc.wait() == -signal.SIGKILL, "".join(seen)
    c = s3.client()
    left = c.list_multipart_uploads(Bucket="faults", Prefix=f"{key}/").get("Uploads", [])
    assert [u["Key"] for u in left] == [f"{key}/encoder.weights"]
    assert f"{key}/{MANIFEST}" not in [o["Key"] for o in c.list_objects_v2(Bucket="faults").get("Contents", [])]
    out = publish_bundle(c, bundle, "faults", key, Source(kind="local", name="m", revision="rev"))
    assert out.aborted == [f"{key}/encoder.weights"]
    _converged(c, "faults", key, bundle)
