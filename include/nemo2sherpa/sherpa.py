"""sherpa-onnx, always probed in a child process: it exits the process on bad metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .decode import variant_files
from .variants import BPE_VOCAB, TOKENS

GREEDY = "greedy_search"
BEAM = "modified_beam_search"  # the decoding hotwords need
HOTWORDS_SCORE = 1.5  # sherpa-onnx's default boost per hotword token


def recognizer(bundle: Path, variant: str, threads: int = 2, provider: str = "cpu", method: str = GREEDY,
               hotwords: Path | None = None, hotwords_score: float = HOTWORDS_SCORE):
    """sherpa-onnx's offline NeMo transducer recognizer over one variant of the bundle: greedy search, or modified
    beam search, with a hotwords file (one phrase per line) biased through the bundle's bpe.vocab."""
    import sherpa_onnx

    enc, dec, join = variant_files(Path(bundle), variant)
    biasing = dict(modeling_unit="bpe", bpe_vocab=str(Path(bundle) / BPE_VOCAB), hotwords_file=str(hotwords),
                   hotwords_score=hotwords_score) if hotwords else {}
    return sherpa_onnx.OfflineRecognizer.from_transducer(
        encoder=str(enc),
        decoder=str(dec),
        joiner=str(join),
        tokens=str(Path(bundle) / TOKENS),
        num_threads=threads,
        sample_rate=16000,
        feature_dim=80,  # overridden by the encoder's feat_dim metadata
        decoding_method=method,
        model_type="nemo_transducer",  # the default "transducer" is the k2/icefall kind
        provider=provider,
        debug=False,
        **biasing,
    )


def decode_files(bundle: Path, variant: str, wavs: list[Path], threads: int = 2, method: str = GREEDY,
                 hotwords: Path | None = None, hotwords_score: float = HOTWORDS_SCORE) -> dict[str, Any]:
    """In-process decode (call it from a child process only): each file's text and token timestamps."""
    import sherpa_onnx

    from .audio import read_wav

    t0 = time.monotonic()
    rec = recognizer(bundle, variant, threads, method=method, hotwords=hotwords, hotwords_score=hotwords_score)
    load_s = time.monotonic() - t0
    texts, tokens, stamps = [], [], []
    for w in wavs:
        samples, rate = read_wav(Path(w))
        st = rec.create_stream()
        st.accept_waveform(rate, samples)
        rec.decode_stream(st)
        texts.append(st.result.text.strip())
        tokens.append(list(st.result.tokens))
        stamps.append([round(float(t), 4) for t in st.result.timestamps])
    out = {"variant": variant, "load_s": round(load_s, 3), "texts": texts, "tokens": tokens, "timestamps": stamps}
    if method != GREEDY or hotwords:  # the greedy record stays as it was
        out.update(method=method, hotwords=str(hotwords) if hotwords else None, runtime=sherpa_onnx.__version__)
    return out


def decode_in_subprocess(bundle: Path, variant: str, wavs: list[Path], threads: int = 2,
                         timeout: float = 600, method: str = GREEDY, hotwords: Path | None = None,
                         hotwords_score: float = HOTWORDS_SCORE) -> dict[str, Any]:
    """Run sherpa-onnx on a bundle in a child process; report the child's death instead of dying."""
    from .child import run_module

    extra = ["--method", method] + (["--hotwords", str(hotwords), "--hotwords-score", str(hotwords_score)]
                                    if hotwords else [])
    proc = run_module(["sherpa-decode", "--bundle", str(bundle), "--variant", variant, "--threads", str(threads),
                       *extra, *[str(w) for w in wavs]], capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"variant": variant, "ok": False, "exit_code": proc.returncode, "error": " | ".join(tail)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ok"] = True
    return out
