"""Hotwords (sherpa-onnx's contextual biasing) for a bundle: its bpe.vocab, checked; a user's phrase list, checked.

sherpa-onnx biases modified beam search toward the phrases of a hotwords file (one per line, an optional
` :score` after the phrase), for NeMo transducers TDT included since 1.12.24, given `modeling_unit="bpe"` and
`bpe_vocab=bpe.vocab`: one line per SentencePiece id in id order, `piece<TAB>score`, the pieces those of
tokens.txt. The runtime splits each phrase into pieces with simple-sentencepiece over bpe.vocab (the highest
total piece score), not by replaying the tokenizer's BPE merges; where the two splits differ, the boost goes
to a path the model does not emit. `check_phrases` shows each phrase's split both ways (the runtime's through
simple-sentencepiece, the version sherpa-onnx builds in; the tokenizer's through sentencepiece and the
checkpoint's own tokenizer model) and flags the phrases that differ.
"""

from __future__ import annotations

import re
import tarfile
from pathlib import Path, PurePosixPath
from typing import Any

from .errors import InputError
from .variants import BPE_VOCAB

SCORE = re.compile(r"\s+:\s*(-?[0-9.]+)\s*$")  # a hotwords line's optional per-phrase boost


def read_bpe_vocab(path: Path) -> list[tuple[str, float]]:
    """bpe.vocab's (piece, score) per id; ValueError naming the first line that is not `piece<TAB>number`."""
    out = []
    for i, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines()):
        piece, tab, score = line.partition("\t")
        try:
            out.append((piece, float(score)))
        except ValueError:
            raise ValueError(f"{path.name} line {i + 1} is not 'piece<TAB>score': {line!r}") from None
        if not tab or not piece:
            raise ValueError(f"{path.name} line {i + 1} is not 'piece<TAB>score': {line!r}")
    return out


def vocab_problems(bundle: Path, tokens: list[str]) -> list[str]:
    """What is wrong with the bundle's bpe.vocab against tokens.txt (without its <blk>): nothing, ideally."""
    path = Path(bundle) / BPE_VOCAB
    if not path.exists():
        return [f"{BPE_VOCAB} missing"]
    try:
        vocab = read_bpe_vocab(path)
    except ValueError as e:
        return [str(e)]
    pieces = [p for p, _ in vocab]
    if len(pieces) != len(tokens):
        return [f"{len(pieces)} pieces, tokens.txt has {len(tokens)} (without <blk>)"]
    wrong = [i for i, (a, b) in enumerate(zip(pieces, tokens)) if a != b]
    return [f"id {i}: {pieces[i]!r} in {BPE_VOCAB}, {tokens[i]!r} in tokens.txt" for i in wrong[:3]] + (
        [f"... {len(wrong)} ids differ"] if len(wrong) > 3 else [])


def collapsed(greedy: str, beam: str) -> bool:
    """Beam search output that lost the transcript: empty, or under half the words, where greedy found 2 or more
    (the upstream failure: modified beam search on Parakeet-TDT returning nothing or one word)."""
    g, b = len(greedy.split()), len(beam.split())
    return g >= 2 and 2 * b < g or g >= 1 and b == 0


def read_phrases(path: Path) -> list[str]:
    """A hotwords file's phrases (blank lines and each line's ` :score` left out)."""
    return [SCORE.sub("", line).strip() for line in Path(path).read_text(encoding="utf-8").splitlines()
            if line.strip()]


def decoy_phrases(bundle: Path, spoken: list[str], n: int = 5) -> list[str]:
    """n words nobody said, made of the model's own pieces: word-initial pieces of 4+ letters first, then a
    word-initial piece joined to a continuation piece (5+ letters), none a word of the `spoken` texts, the last of
    bpe.vocab first (BPE's latest merges). A list that must change nothing."""
    said = {w.lower() for t in spoken for w in t.split()}
    pieces = [p for p, _ in reversed(read_bpe_vocab(Path(bundle) / BPE_VOCAB))]
    starts = [p[1:] for p in pieces if p.startswith("\u2581") and p[1:].isalpha()]
    rests = [p for p in pieces if not p.startswith("\u2581") and p.isalpha() and len(p) >= 2]
    singles = [w for w in starts if len(w) >= 4]
    heads = [a for a in starts if len(a) >= 2] or [""]
    pairs = [heads[i % len(heads)] + b for i, b in enumerate(rests) if len(heads[i % len(heads)] + b) >= 5]
    out: list[str] = []
    for word in singles + pairs:
        if word.lower() not in said and word not in out:
            out.append(word)
        if len(out) == n:
            break
    return out


def tokenizer_model(nemo: Path, dest: Path) -> Path:
    """The checkpoint's own SentencePiece model, copied out of the .nemo (members checked as export does)."""
    from .modelspec import safe_nemo_members

    found = [m for m in safe_nemo_members(nemo) if PurePosixPath(m.name).name.endswith("tokenizer.model")]
    if len(found) != 1:
        raise InputError(f"{nemo} holds {len(found)} SentencePiece tokenizer models (want 1): hotword pieces can be "
                         f"checked only for a model with one SentencePiece tokenizer")
    with tarfile.open(nemo, "r:*") as tf:
        data = tf.extractfile(found[0])
        Path(dest).write_bytes(data.read() if data else b"")
    return Path(dest)


def check_phrases(bundle: Path, phrases: list[str], tokenizer: Path) -> list[dict[str, Any]]:
    """Each phrase as the runtime splits it (simple-sentencepiece over bpe.vocab) and as the tokenizer does; `same`
    is False where they differ (the boost goes to a path the model does not emit), `unknown` lists the characters
    no piece covers."""
    import sentencepiece
    from ssentencepiece import Ssentencepiece

    runtime = Ssentencepiece(str(Path(bundle) / BPE_VOCAB))
    own = sentencepiece.SentencePieceProcessor(model_file=str(tokenizer))
    pieces = {p for p, _ in read_bpe_vocab(Path(bundle) / BPE_VOCAB)}
    known = set("".join(pieces).replace("\u2581", ""))
    out = []
    for phrase in phrases:
        got, want = runtime.encode(phrase, out_type=str), own.encode(phrase, out_type=str)
        out.append({"phrase": phrase, "runtime": got, "tokenizer": want, "same": got == want,
                    "unknown": sorted({c for c in phrase if not c.isspace() and c not in known})})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """The check as text: one line per phrase, flagged where the splits differ or a character is not covered."""
    lines = []
    for r in rows:
        flag = "ok  " if r["same"] and not r["unknown"] else "DIFF"
        lines.append(f"{flag} {r['phrase']!r}: runtime {' '.join(r['runtime'])} | tokenizer {' '.join(r['tokenizer'])}"
                     + (f" | not covered: {''.join(r['unknown'])}" if r["unknown"] else ""))
    bad = sum(1 for r in rows if not r["same"] or r["unknown"])
    lines.append(f"{len(rows)} phrases, {bad} the runtime would bias along another path than the model emits")
    return "\n".join(lines)
