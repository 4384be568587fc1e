"""The object-store workspace (nemo2sherpa.workspace) against the real local S3 server: two mirrors, as on
two hosts, hand files on through one prefix, and only what changed moves."""

from __future__ import annotations

import os

import pytest

from nemo2sherpa import workspace
from nemo2sherpa.errors import InputError


def test_two_mirrors_hand_files_on_through_the_store(s3, tmp_path, monkeypatch):
    c = s3.client()
    s3.ensure_bucket("wspace")
    url = "s3://wspace/runs/dag/run1"
    a, b = tmp_path / "host-a", tmp_path / "host-b"
    (a / "bundle").mkdir(parents=True)
    (a / "bundle" / "encoder.onnx").write_bytes(os.urandom(3 << 20))
    (a / "bundle" / "tokens.txt").write_text("a 0\n<blk> 1\n")

    assert workspace.push(c, url, a) == {"bytes": (3 << 20) + 12, "kept": 0}
    assert workspace.push(c, url, a) == {"bytes": 0, "kept": 2}  # nothing changed: nothing sent
    assert workspace.pull(c, url, b)["bytes"] == (3 << 20) + 12
    assert (b / "bundle" / "encoder.onnx").read_bytes() == (a / "bundle" / "encoder.onnx").read_bytes()
    assert workspace.pull(c, url, b) == {"bytes": 0, "kept": 2}

    # Host B runs the next step: a new file and a changed one go up; host A gets exactly those.
    (b / "bundle" / "benchmark.json").write_text("{}")
    (b / "bundle" / "tokens.txt").write_text("b 0\n<blk> 1\n")
    assert workspace.push(c, url, b) == {"bytes": 2 + 12, "kept": 1}
    assert workspace.pull(c, url, a) == {"bytes": 2 + 12, "kept": 1}
    assert (a / "bundle" / "tokens.txt").read_text() == "b 0\n<blk> 1\n" and (a / "bundle" / "benchmark.json").exists()
    keys = sorted(o["Key"] for o in c.list_objects_v2(Bucket="wspace")["Contents"])
    assert keys == [f"runs/dag/run1/bundle/{n}" for n in ("benchmark.json", "encoder.onnx", "tokens.txt")]


def test_each_worker_sees_the_plan_on_its_own_mirror(tmp_path, monkeypatch):
    monkeypatch.setenv("NEMO2SHERPA_WORKSPACE_CACHE", str(tmp_path / "mirror-b"))
    plan = {"ws": "/a/dag/run", "bundle": "/a/dag/run/bundle", "remote": "s3://ws/runs/dag/run",
            "run_key": "dag/run", "source": "/a/dag/runner.nemo", "lengths": [1.0]}
    src = {"path": "/a/dag/run/download/m.nemo", "name": "m"}
    with workspace.on_this_worker(plan, src) as (here, here_src, back):
        assert here["bundle"] == str(tmp_path / "mirror-b" / "dag" / "run" / "bundle")
        assert here["source"] == "/a/dag/runner.nemo"  # a sibling path that only shares a prefix stays
        assert here_src["path"] == str(tmp_path / "mirror-b" / "dag" / "run" / "download" / "m.nemo")
        assert back({"out": here["bundle"] + "/x"}) == {"out": "/a/dag/run/bundle/x"}  # XCom speaks the plan's terms
    local = {k: v for k, v in plan.items() if k != "remote"}
    with workspace.on_this_worker(local, src) as (here, here_src, _):  # shared-disk workspace: untouched
        assert here == local and here_src == src


def test_a_workspace_url_without_bucket_is_refused():
    with pytest.raises(InputError, match="names no bucket"):
        workspace.split("s3:///runs")
