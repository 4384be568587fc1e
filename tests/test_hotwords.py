"""Hotwords through the bundle's bpe.vocab: a phrase list fixes what the model missed, a list of words nobody said
harms nothing, and a user's list is checked against the tokenizer before shipping."""

from __future__ import annotations

import json
import math
import random
import wave
from array import array

from conftest import FIXTURE, last_json, run_cli
from nemo2sherpa.audio import load_clips
from nemo2sherpa.hotwords import collapsed, read_bpe_vocab

BEAM = ["--method", "modified_beam_search"]


def with_noise(src, dst, snr_db: float, rng: random.Random) -> None:
    """dst: the 16-bit mono wav src with white Gaussian noise at snr_db (seeded), clipped to 16 bits."""
    with wave.open(str(src), "rb") as w:
        params, pcm = w.getparams(), array("h", w.readframes(w.getnframes()))
    assert params.nchannels == 1 and params.sampwidth == 2
    sigma = math.sqrt(sum(x * x for x in pcm) / len(pcm) / 10 ** (snr_db / 10))
    noisy = array("h", (max(-32768, min(32767, round(x + rng.gauss(0, sigma)))) for x in pcm))
    with wave.open(str(dst), "wb") as w:
        w.setparams(params)
        w.writeframes(noisy.tobytes())


def decode(bundle, wavs, *extra: str) -> list[str]:
    return last_json(run_cli("onnx", "sherpa-decode", "--bundle", str(bundle), *extra, *map(str, wavs)))["texts"]


def test_the_bundle_carries_the_tokenizers_own_bpe_vocab(exported, tmp_path):
    import tarfile

    bundle = exported / "bundle"
    vocab = read_bpe_vocab(bundle / "bpe.vocab")
    tokens = [line.rsplit(" ", 1)[0] for line in (bundle / "tokens.txt").read_text().splitlines()]
    assert [p for p, _ in vocab] == tokens[:-1] and tokens[-1] == "<blk>"  # <blk> only in tokens.txt
    with tarfile.open(FIXTURE) as tf:  # the checkpoint's SentencePiece vocabulary, piece and score, id by id
        member = next(m for m in tf.getmembers() if m.name.endswith("tokenizer.vocab"))
        own = [line.split("\t") for line in tf.extractfile(member).read().decode().splitlines()]
    assert [(p, float(s)) for p, s in own] == vocab


def test_a_hotword_fixes_a_word_the_model_missed_and_unspoken_words_change_nothing(full_bundle, tmp_path):
    """The trained tiny model under seeded noise loses words; listing the words it lost gets them back, on at
    least one clip; a list of words nobody said leaves every clean transcript that was right as it was."""
    bundle = full_bundle / "bundle"
    clips = load_clips()
    rng = random.Random(0)
    noisy = []
    for c in clips:
        for snr_db in (6, 4, 3, 2, 1, 0, -1):
            path = tmp_path / f"{c.name}-{snr_db}db.wav"
            with_noise(c.path, path, snr_db, rng)
            noisy.append((path, c.text))
    heard = decode(bundle, [p for p, _ in noisy], *BEAM)
    missed = [(p, ref, [w for w in ref.split() if w not in hyp.split()]) for (p, ref), hyp in zip(noisy, heard)]
    missed = [m for m in missed if m[2]]
    assert missed, "under this noise the model missed no word: nothing for a hotword to fix"
    fixed = []
    for path, ref, words in missed:
        hot = tmp_path / "hotwords.txt"
        hot.write_text("\n".join(words) + "\n")
        after = decode(bundle, [path], *BEAM, "--hotwords", str(hot))[0]
        if all(w in after.split() for w in words):
            fixed.append((path.name, words, after))
    print(f"{len(missed)} noisy clips missed words; the hotword list got them back on {len(fixed)}: {fixed}")
    assert fixed

    clean = [c.path for c in clips]
    before = decode(bundle, clean, *BEAM)
    decoy = tmp_path / "decoy.txt"
    decoy.write_text("warfarin\nmetoprolol :2.0\nsubpoena\naffidavit\n")
    after = decode(bundle, clean, *BEAM, "--hotwords", str(decoy))
    right = [i for i, c in enumerate(clips) if before[i] == c.text]
    assert right and all(after[i] == before[i] for i in right), (before, after)


def test_beam_search_collapse_is_recognised():
    assert collapsed("the patient reports mild chest pain", "") and collapsed("blood pressure is stable", "yeah")
    assert not collapsed("blood pressure is stable", "blood pressure is table")
    assert not collapsed("", "") and not collapsed("yes", "yes")


def test_the_hotword_check_flags_phrases_the_runtime_splits_otherwise(exported, tmp_path):
    phrases = tmp_path / "phrases.txt"
    phrases.write_text("chest pain\nthe witness :2.5\nzyx\n")
    proc = run_cli("onnx", "hotwords-check", "--bundle", str(exported / "bundle"), "--nemo", str(FIXTURE),
                   str(phrases))
    rows = {r["phrase"]: r for r in json.loads(proc.stdout.strip().splitlines()[-1])}
    assert set(rows) == {"chest pain", "the witness", "zyx"}  # the ' :score' is not part of the phrase
    for r in rows.values():
        assert r["runtime"] and r["tokenizer"] and r["same"] == (r["runtime"] == r["tokenizer"])
    covered = set("".join(p for p, _ in read_bpe_vocab(exported / "bundle" / "bpe.vocab")))
    assert rows["zyx"]["unknown"] == sorted(set("zyx") - covered) != []  # characters no piece covers are named
    assert rows["chest pain"]["unknown"] == [] == rows["the witness"]["unknown"]
    assert "phrases, " in proc.stderr and ("DIFF" in proc.stderr) == any(
        not r["same"] or r["unknown"] for r in rows.values())
    strict = run_cli("onnx", "hotwords-check", "--bundle", str(exported / "bundle"), "--nemo", str(FIXTURE),
                     "--strict", str(phrases), check=False)
    flagged = [p for p, r in rows.items() if not r["same"] or r["unknown"]]
    assert strict.returncode == (3 if flagged else 0), strict.stderr[-2000:]
