"""s3:// inputs: a checkpoint and an evaluation set in the user's bucket, read from a real S3 server (rclone) with
the credentials of the environment, as `convert` and the DAG's source task read them."""

from __future__ import annotations

import hashlib
import json

import pytest

from conftest import FIXTURE, last_json, run_cli
from nemo2sherpa.audio import load_clips
from test_evalset import resampled_stereo


@pytest.fixture()
def bucket(s3, tmp_path, monkeypatch):
    """A bucket holding the fixture checkpoint, the built-in clips (32 kHz stereo) with a texts.tsv under a prefix,
    and a manifest in another prefix that names them by relative key; boto3 pointed at it through AWS_*."""
    for k, v in {"AWS_ACCESS_KEY_ID": s3.key, "AWS_SECRET_ACCESS_KEY": s3.secret, "AWS_ENDPOINT_URL": s3.endpoint,
                 "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3.ensure_bucket("inputs")
    c = s3.client()
    c.upload_file(str(FIXTURE), "inputs", "models/tiny-tdt.nemo")
    up = tmp_path / "upload"
    up.mkdir()
    for clip in load_clips():
        resampled_stereo(clip.path, up / f"{clip.name}.wav")
        c.upload_file(str(up / f"{clip.name}.wav"), "inputs", f"sets/folder/{clip.name}.wav")
    c.put_object(Bucket="inputs", Key="sets/folder/texts.tsv",
                 Body="".join(f"{clip.name}\t{clip.text}\n" for clip in load_clips()).encode())
    c.put_object(Bucket="inputs", Key="sets/folder/deeper/ignored.wav", Body=b"not read: a sub-prefix")
    lines = [json.dumps({"audio_filepath": f"../folder/{clip.name}.wav", "text": clip.text}) for clip in load_clips()]
    c.put_object(Bucket="inputs", Key="sets/m/manifest.jsonl", Body="\n".join(lines).encode())
    return c


def source(tmp_path, src: str, eval_set: str | None = None, check: bool = True):
    extra = ["--eval-set", eval_set, "--eval-dir", str(tmp_path / "eval")] if eval_set else []
    return run_cli("download", "source", "--source", src, "--download-dir", str(tmp_path / "dl"), *extra, check=check)


@pytest.mark.parametrize("eval_set", ["s3://inputs/sets/folder", "s3://inputs/sets/m/manifest.jsonl"])
def test_a_checkpoint_and_an_evaluation_set_from_the_users_bucket(bucket, eval_set, tmp_path):
    m = last_json(source(tmp_path, "s3://inputs/models/tiny-tdt.nemo", eval_set))
    digest = hashlib.sha256(FIXTURE.read_bytes()).hexdigest()
    assert m["kind"] == "s3" and m["url"] == "s3://inputs/models/tiny-tdt.nemo" and m["name"] == "tiny-tdt"
    assert m["sha256"] == digest and m["revision"] == f"sha256-{digest[:16]}"  # its content is its revision
    assert (tmp_path / "dl" / "tiny-tdt.nemo").read_bytes() == FIXTURE.read_bytes()
    e = m["eval_set"]
    assert e["source"] == eval_set and len(e["clips"]) == 4  # the sub-prefix's object is not part of the set
    assert [c["from"] for c in e["clips"]] == [f"s3://inputs/sets/folder/{c.name}.wav" for c in load_clips()]
    assert [c.text for c in load_clips(tmp_path / "eval")] == [c.text for c in load_clips()]
    assert not (tmp_path / "eval.s3").exists() and not (tmp_path / "eval.partial").exists()  # raw download gone
    # The same set read locally has the same sha256: it names the audio and texts, not where they came from.
    local = tmp_path / "local"
    local.mkdir()
    for c in load_clips():
        resampled_stereo(c.path, local / f"{c.name}.wav")
    (local / "texts.tsv").write_text("".join(f"{c.name}\t{c.text}\n" for c in load_clips()))
    assert last_json(source(tmp_path / "l", str(FIXTURE), str(local)))["eval_set"]["sha256"] == e["sha256"]


@pytest.mark.parametrize("case", ["no such checkpoint", "missing clip", "wrong secret", "not a .nemo", "local path",
                                  "another bucket", "above the root"])
def test_a_bad_s3_input_is_one_clear_error_and_no_partial_output(case, bucket, tmp_path, monkeypatch):
    """Each is one line naming the problem and the fix, exit 2, nothing left. An s3:// manifest reads objects of its
    own bucket only: not the worker's disk, not another bucket the run's credentials may reach (its clips would be
    published in the archives' test_wavs/), nothing above the bucket's root."""
    src, eval_set = "s3://inputs/models/tiny-tdt.nemo", None
    entry = {"local path": str(load_clips()[0].path), "another bucket": "s3://private/secret.wav",
             "above the root": "../../../x.wav"}
    if case in entry:
        bucket.create_bucket(Bucket="private")
        bucket.put_object(Bucket="private", Key="secret.wav", Body=load_clips()[0].path.read_bytes())
        bucket.put_object(Bucket="inputs", Key="sets/m/manifest.jsonl",
                          Body=json.dumps({"audio_filepath": entry[case], "text": "x"}).encode())
        eval_set = "s3://inputs/sets/m/manifest.jsonl"
        want = {"local path": "names a local path", "another bucket": "names audio in another bucket (s3://private/",
                "above the root": "leaves the bucket's root"}[case]
    elif case == "no such checkpoint":
        src, want = "s3://inputs/models/absent.nemo", "s3://inputs/models/absent.nemo: no such object"
    elif case == "missing clip":
        bucket.put_object(Bucket="inputs", Key="sets/m/manifest.jsonl",
                          Body=json.dumps({"audio_filepath": "gone.wav", "text": "x"}).encode())
        eval_set, want = "s3://inputs/sets/m/manifest.jsonl", "missing, first s3://inputs/sets/m/gone.wav"
    elif case == "wrong secret":
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        want = "refused access"
    else:
        src, want = "s3://inputs/sets/m/manifest.jsonl", "not a .nemo object"
    proc = source(tmp_path, src, eval_set, check=False)
    assert proc.returncode == 2, proc.stderr[-2000:]  # permanent: not retried
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nemo2sherpa: error: ") and want in last, last
    left = [p.name for p in (tmp_path / "dl").iterdir()] if (tmp_path / "dl").exists() else []
    assert not [n for n in left if n.endswith(".partial")] and not (tmp_path / "eval").exists()


def test_an_s3_endpoint_that_does_not_answer_is_transient(bucket, s3, tmp_path, monkeypatch):
    s3.stop()
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    proc = source(tmp_path, "s3://inputs/models/tiny-tdt.nemo", check=False)
    assert proc.returncode == 4, proc.stderr[-2000:]  # transient: a retry may pass
    assert "the S3 endpoint did not answer" in proc.stderr
