"""sherpa-onnx, always probed in a child process: it exits the process on bad metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .decode import variant_files


def recognizer(bundle: Path, variant: str, threads: int = 2, provider: str = "cpu"):
    """sherpa-onnx's offline NeMo transducer recognizer over one variant of the bundle (greedy search)."""
    import sherpa_onnx

    enc, dec, join = variant_files(Path(bundle), variant)
    return sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(enc),
        decoder=str(dec),
        joiner=str(join),
        tokens=str(Path(bundle) / "tokens.txt"),
        num_threads=threads,
        sample_rate=16000,
        feature_dim=80,  # overridden by the encoder's feat_dim metadata
        decoding_method="greedy_search",
        model_type="nemo_transducer",  # the default "transducer" is the k2/icefall kind
        provider=provider,
        debug=False,
    )


def decode_files(bundle: Path, variant: str, wavs: list[Path], threads: int = 2) -> dict[str, Any]:
    """In-process decode (call it from a child process only)."""
    from .audio import read_wav

    t0 = time.monotonic()
    rec = recognizer(bundle, variant, threads)
    load_s = time.monotonic() - t0
    texts = []
    for w in wavs:
        samples, rate = read_wav(Path(w))
        st = rec.create_stream()
        st.accept_waveform(rate, samples)
        rec.decode_stream(st)
        texts.append(st.result.text.strip())
    return {"variant": variant, "load_s": round(load_s, 3), "texts": texts}


def decode_in_subprocess(bundle: Path, variant: str, wavs: list[Path], threads: int = 2,
                         timeout: float = 600) -> dict[str, Any]:
    """Run sherpa-onnx on a bundle in a child process; report the child's death instead of dying."""
    from .child import run_module

    proc = run_module(["sherpa-decode", "--bundle", str(bundle), "--variant", variant, "--threads", str(threads),
                       *[str(w) for w in wavs]], capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"variant": variant, "ok": False, "exit_code": proc.returncode, "error": " | ".join(tail)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ok"] = True
    return out
