"""The runtime matrix (compat step): real sherpa-onnx wheels, the CLI, sherpa-onnx-node and the Rust C API client
decoding a validated bundle; a runtime inside the range that decodes otherwise fails; a runtime that cannot be
installed is an error naming it."""

from __future__ import annotations

import json
import shutil
import subprocess
import textwrap

import pytest

from conftest import INCLUDE, run_cli, stage_python


@pytest.fixture(scope="module")
def validated(full_bundle, source_manifest, tmp_path_factory):
    """The full fixture bundle (fp32 + int8), validated, with its reference: what compat runs after."""
    d = tmp_path_factory.mktemp("compat")
    shutil.copytree(full_bundle / "bundle", d / "bundle")
    shutil.copytree(full_bundle / "reference", d / "reference")
    run_cli("onnx", "validate", "--bundle", str(d / "bundle"), "--reference", str(d / "reference"), "--variants",
            "fp32,int8", "--source-json", str(source_manifest), "--report", str(d / "bundle" / "validation.json"))
    return d


def in_onnx_venv(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(stage_python("onnx")), "-c", f"import sys; sys.path.insert(0, {str(INCLUDE)!r})\n"
                           + textwrap.dedent(code)], capture_output=True, text=True, env=env)


def test_the_matrix_shows_the_range_and_the_release_that_decodes_tdt_wrongly(validated):
    out = json.loads(run_cli("onnx", "compat", "--bundle", str(validated / "bundle"), "--reference",
                             str(validated / "reference"), "--variants", "fp32,int8").stdout.strip().splitlines()[-1])
    assert out["passed"] and out["supported_range"] == "sherpa-onnx >= 1.12.14"
    c = json.loads((validated / "bundle" / "compatibility.json").read_text())
    assert c["reference"] == "sherpa-onnx (Python) 2.0.1" and c["known_clips"] == ["clip01", "clip02", "clip03",
                                                                                     "clip04"]
    rows = {r["runtime"]: r for r in c["runtimes"]}
    assert {r["kind"] for r in c["runtimes"]} == {"python", "cli", "node", "c-api"}
    for r in c["runtimes"]:
        if r["supported"]:  # the fixture's clips are ones it knows: every runtime in the range gives the same
            assert r["status"] == "agrees", r
    wrong = rows["sherpa-onnx (Python) 1.10.46"]  # outside the range: loads the bundle, decodes it wrongly
    assert not wrong["supported"] and wrong["status"] == "differs"
    ex = wrong["variants"]["fp32"]["example"]
    assert ex["text"] != ex["reference"] and len(ex["text"]) > len(ex["reference"])  # tokens repeated
    md = (validated / "bundle" / "VALIDATION.md").read_text()
    skip0 = rows["sherpa-onnx-offline (sherpa-onnx-bin) 1.12.13"]  # the newest release with the skip-0 bug
    assert not skip0["supported"] and skip0["status"] == "differs"
    assert "table" in skip0["variants"]["fp32"]["example"]["text"]  # "blood pressure table": a word dropped
    assert "Supported: **sherpa-onnx >= 1.12.14**" in md and "| C API from Rust 2.0.1 | yes |" in md


def test_a_runtime_inside_the_range_that_decodes_otherwise_fails_the_step(validated):
    proc = in_onnx_venv(f"""
        from pathlib import Path
        from nemo2sherpa.compat import check_runtimes
        from nemo2sherpa.errors import GateFailed
        from nemo2sherpa.runtimes import Runtime
        try:
            check_runtimes(Path({str(validated / 'bundle')!r}), Path({str(validated / 'reference')!r}), ["fp32"],
                           runtimes=(Runtime("python", "1.10.46"),), report=False)
        except GateFailed as e:
            print("GATE", e)
    """)
    assert "GATE runtimes inside the stated range" in proc.stdout and "1.10.46 fp32" in proc.stdout, proc.stderr


@pytest.mark.parametrize("case", ["no such wheel", "no node"])
def test_a_runtime_that_cannot_be_installed_is_an_error_naming_it(case, tmp_path):
    runtime, env, want = ('Runtime("python", "0.0.1")', None, "sherpa-onnx==0.0.1 could not be installed") \
        if case == "no such wheel" else ('Runtime("node", "1.13.8")', {"PATH": str(tmp_path)},
                                          "sherpa-onnx-node needs Node.js")
    proc = in_onnx_venv(f"""
        from pathlib import Path
        from nemo2sherpa.errors import PermanentError
        from nemo2sherpa.runtimes import Runtime, install
        try:
            install({runtime}, Path({str(tmp_path / 'cache')!r}))
        except PermanentError as e:
            print("ERROR", e)
    """, env=env)
    assert "ERROR " + want in proc.stdout, (proc.stdout, proc.stderr[-2000:])
