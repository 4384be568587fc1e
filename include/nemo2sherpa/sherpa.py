"""sherpa-onnx, always probed in a child process: it exits the process on bad metadata."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .variants import BPE_VOCAB, TOKENS, variant_files

GREEDY = "greedy_search"
BEAM = "modified_beam_search"  # the decoding hotwords need
HOTWORDS_SCORE = 1.5  # sherpa-onnx's default boost per hotword token


def recognizer(bundle: Path, variant: str, threads: int = 2, provider: str = "cpu", method: str = GREEDY,
               hotwords: Path | None = None, hotwords_score: float = HOTWORDS_SCORE, bpe: bool = False):
    """sherpa-onnx's offline NeMo transducer recognizer over one variant of the bundle: greedy search, or modified
    beam search, with a hotwords file (one phrase per line) biased through the bundle's bpe.vocab (`bpe`: the vocab
    loaded without a file, for hotwords given per stream)."""
    import sherpa_onnx

    enc, dec, join = variant_files(Path(bundle), variant)
    biasing = dict(modeling_unit="bpe", bpe_vocab=str(Path(bundle) / BPE_VOCAB), hotwords_file=str(hotwords or ""),
                   hotwords_score=hotwords_score) if hotwords or bpe else {}
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


def _decode(rec, wavs: list[Path], hotwords: str | None = None) -> dict[str, Any]:
    """Each file through a recognizer (per-stream hotwords: phrases joined by '/'): texts, tokens, timestamps, and the
    seconds it took."""
    from .audio import read_wav

    t0 = time.monotonic()
    texts, tokens, stamps = [], [], []
    for w in wavs:
        samples, rate = read_wav(Path(w))
        st = rec.create_stream() if hotwords is None else rec.create_stream(hotwords=hotwords)
        st.accept_waveform(rate, samples)
        rec.decode_stream(st)
        texts.append(st.result.text.strip())
        tokens.append(list(st.result.tokens))
        stamps.append([round(float(t), 4) for t in st.result.timestamps])
    return {"texts": texts, "tokens": tokens, "timestamps": stamps, "decode_s": round(time.monotonic() - t0, 3)}


def decode_files(bundle: Path, variant: str, wavs: list[Path], threads: int = 2, method: str = GREEDY,
                 hotwords: Path | None = None, hotwords_score: float = HOTWORDS_SCORE) -> dict[str, Any]:
    """In-process decode (call it from a child process only): each file's text and token timestamps."""
    import sherpa_onnx

    t0 = time.monotonic()
    rec = recognizer(bundle, variant, threads, method=method, hotwords=hotwords, hotwords_score=hotwords_score)
    out = {"variant": variant, "load_s": round(time.monotonic() - t0, 3), **_decode(rec, wavs)}
    if method != GREEDY or hotwords:  # the greedy record stays as it was
        out.update(method=method, hotwords=str(hotwords) if hotwords else None, runtime=sherpa_onnx.__version__)
    return out


def check_files(bundle: Path, variant: str, wavs: list[Path], threads: int = 2, decoy: list[str] | None = None,
                parts: tuple[str, ...] = ("greedy", "beam")) -> dict[str, Any]:
    """What validate asks of sherpa-onnx (call it from a child process only): greedy search ("greedy"), and modified
    beam search without and (given `decoy` phrases) with hotwords through bpe.vocab, per stream, on one recognizer
    ("beam": the hotwords need no model load of their own)."""
    import sherpa_onnx

    from .child import own_peak_rss

    out: dict[str, Any] = {}
    if "greedy" in parts:
        t0 = time.monotonic()
        rec = recognizer(bundle, variant, threads)
        out["greedy"] = {"variant": variant, "load_s": round(time.monotonic() - t0, 3), **_decode(rec, wavs),
                         "peak_rss_bytes": own_peak_rss()}
        del rec  # one model in memory at a time (4 GB at 1.1B)
    if "beam" in parts:
        t0 = time.monotonic()
        rec = recognizer(bundle, variant, threads, method=BEAM, bpe=bool(decoy))
        out["beam"] = {"variant": variant, "load_s": round(time.monotonic() - t0, 3), "method": BEAM, "hotwords": None,
                       "runtime": sherpa_onnx.__version__, **_decode(rec, wavs)}
        if decoy:
            out["hotwords"] = {"variant": variant, "method": BEAM, "phrases": decoy,
                               "runtime": sherpa_onnx.__version__, **_decode(rec, wavs, hotwords="/".join(decoy))}
    return out


def decode_in_subprocess(bundle: Path, variant: str, wavs: list[Path], threads: int = 2,
                         timeout: float = 600, method: str = GREEDY, hotwords: Path | None = None,
                         hotwords_score: float = HOTWORDS_SCORE) -> dict[str, Any]:
    """Run sherpa-onnx on a bundle in a child process; report the child's death instead of dying."""
    extra = ["--method", method] + (["--hotwords", str(hotwords), "--hotwords-score", str(hotwords_score)]
                                    if hotwords else [])
    return _child(["sherpa-decode", "--bundle", str(bundle), "--variant", variant, "--threads", str(threads), *extra,
                   *[str(w) for w in wavs]], variant, timeout)


def check_in_subprocess(bundle: Path, variant: str, wavs: list[Path], decoy: list[str] | None,
                        parts: tuple[str, ...] = ("greedy", "beam"), threads: int = 2,
                        timeout: float = 3600) -> dict[str, Any]:
    """check_files in a child process: {"greedy", "beam", "hotwords"} as asked, each with "ok"; the child's death (a
    model sherpa-onnx refuses exits the process) reported in each."""
    out = _child(["sherpa-check", "--bundle", str(bundle), "--variant", variant, "--threads", str(threads),
                  "--decoy", json.dumps(decoy or []), "--parts", ",".join(parts), *[str(w) for w in wavs]], variant,
                 timeout)
    names = [p for p in ("greedy", "beam", "hotwords") if p in parts or (p == "hotwords" and "beam" in parts and decoy)]
    if not out["ok"]:
        return {k: dict(out) for k in names}
    return {k: {**x, "ok": True} for k, x in out.items() if isinstance(x, dict)}


def _child(args: list[str], variant: str, timeout: float) -> dict[str, Any]:
    from .child import run_module

    proc = run_module(args, capture_output=True, timeout=timeout)
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-6:]
        return {"variant": variant, "ok": False, "exit_code": proc.returncode, "error": " | ".join(tail)}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["ok"] = True
    return out
