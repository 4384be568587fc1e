"""The Hugging Face source against a loopback server that speaks the Hub's download protocol.

huggingface_hub is pointed at it through its own setting (HF_ENDPOINT): pinned revision recorded as the
commit sha, a multi-hundred-MB file whose first transfer breaks mid-body and resumes with a Range
request, sha256 checked against the Hub's LFS metadata, and each refusal with its fix.
"""

from __future__ import annotations

import hashlib

import pytest

from conftest import last_json, run_cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"
SIZE = 300 << 20


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    p = tmp_path_factory.mktemp("hub") / "parakeet-tdt-test.nemo"
    with open(p, "wb") as f:
        for i in range(SIZE >> 20):
            f.write(hashlib.sha256(str(i).encode()).digest() * (1 << 15))  # 1 MiB, varied content
    return p


@pytest.fixture()
def hub(fake_hub, big_file):
    fake_hub.add_repo("acme/parakeet-tdt-test", {"parakeet-tdt-test.nemo": big_file, "README.md": big_file},
                      COMMIT, revisions=("main", "v1"))
    fake_hub.add_repo("acme/no-checkpoint", {"README.md": big_file}, "f" * 40)
    fake_hub.add_repo("acme/corrupt", {"m.nemo": big_file}, "e" * 40, corrupt=True)
    return fake_hub


def test_hub_download_resumes_and_checks_sha256(hub, big_file, tmp_path):
    hub.drop_after = 100 << 20  # the first transfer of the file breaks after 100 MiB
    d = tmp_path / "dl"
    proc = run_cli("download", "source", "--source", "acme/parakeet-tdt-test", "--revision", "v1",
                   "--download-dir", str(d))
    m = last_json(proc)
    progress = [x for x in proc.stderr.splitlines() if "downloading parakeet-tdt-test.nemo:" in x]
    assert progress and all("MB/s" in x for x in progress)  # the task log shows the download moving
    assert m["kind"] == "hub" and m["revision"] == COMMIT  # a branch/tag is recorded as its commit sha
    assert m["size"] == SIZE and m["sha256"] == hashlib.sha256(big_file.read_bytes()).hexdigest()
    gets = [r for r in hub.requests if r["method"] == "GET" and r["path"].endswith(".nemo")]
    assert gets[0]["range"] is None and gets[0]["sent"] == 100 << 20
    assert gets[1]["range"] == f"bytes={100 << 20}-"  # resumed where it broke, not from zero
    assert sum(g["sent"] for g in gets) == SIZE
    assert not [p for p in d.rglob("*.incomplete")]
    assert all("README" not in r["path"] for r in hub.requests if r["method"] == "GET")  # only the .nemo


@pytest.mark.parametrize("source, revision, message", [
    ("acme/missing", "main", "no such Hugging Face repo"),
    ("acme/parakeet-tdt-test", "no-such-branch", "revision 'no-such-branch' not found"),
    ("acme/no-checkpoint", "main", "has no .nemo file"),
    ("acme/corrupt", "main", "the download is corrupt"),  # transient: exit 4, a retry downloads again
])
def test_hub_refusals_name_the_cause_and_leave_nothing(hub, tmp_path, source, revision, message):
    d = tmp_path / "dl"
    proc = run_cli("download", "source", "--source", source, "--revision", revision, "--download-dir", str(d),
                   check=False)
    transient = source == "acme/corrupt"
    assert proc.returncode == (4 if transient else 2), proc.stderr[-2000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("nemo2sherpa: transient error" if transient else "nemo2sherpa: error:") and message in last
    assert not [p for p in (d.rglob("*.nemo") if d.exists() else []) if p.is_file()]
    # The refusal is the loopback Hub's answer, not a failure to reach any Hub.
    assert any(r["path"].startswith(f"/api/models/{source}/revision/") for r in hub.requests), hub.requests


def test_a_registry_pin_is_the_revision_converted(hub, tmp_path, monkeypatch):
    """A registry entry's `revision` is used when the run names none: the repo here has no `main`, so only the
    pin resolves it."""
    hub.add_repo("acme/pinned", {"pinned.nemo": hub.repos["acme/parakeet-tdt-test"].files["parakeet-tdt-test.nemo"]},
                 "a" * 40, revisions=("v1.0",))
    reg = tmp_path / "models.toml"
    reg.write_text('["pinned-tdt"]\nrepo_id = "acme/pinned"\nrevision = "v1.0"\n')
    monkeypatch.setenv("NEMO2SHERPA_REGISTRY", str(reg))
    r = last_json(run_cli("download", "upstream", "--source", "pinned-tdt"))
    assert r["revision"] == "a" * 40 and r["repo_id"] == "acme/pinned"
    assert any(q["path"] == "/api/models/acme/pinned/revision/v1.0" for q in hub.requests)
    # Without the pin, the same model resolves `main`, which this repo does not have.
    reg.write_text('["pinned-tdt"]\nrepo_id = "acme/pinned"\n')
    proc = run_cli("download", "upstream", "--source", "pinned-tdt", check=False)
    assert proc.returncode == 2 and "revision 'main' not found" in proc.stderr.strip().splitlines()[-1]
