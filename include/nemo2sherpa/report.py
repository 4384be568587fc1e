"""VALIDATION.md: the validation result (records.Validation) as the report a person reads.

The verdict, the model, the evaluation set, the figures per variant, every gate, every clip's transcripts, then
the sections that explain them: decoding step by step, sherpa-onnx on its own front end, timestamps, drift by clip
length, beam search and hotwords, the validated files.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from .gates import DRIFT, GATES, SHERPA_WER
from .records import MACHINE_LIMIT, Compatibility, RuntimeOnVariant, Validation, VariantResult, given
from .variants import BASE, BPE_VOCAB, VARIANTS


@dataclass(frozen=True)
class Figure:
    """One headline figure of a variant, and whether a gate holds it: `limit` is its gate's limit (None: reported
    only, never failing a run), `clips` the clips it is measured on, `on` which clips those are, in words."""

    variant: str
    label: str
    value: float | None
    clips: int
    on: str
    limit: float | None = None

    @property
    def gated(self) -> bool:
        """Whether a gate holds this figure."""
        return self.limit is not None

    def __str__(self) -> str:
        return (f"{self.variant}: {self.label} {'-' if self.value is None else self.value}"
                + (f" (limit {self.limit:g})" if self.gated else "") + f", {self.clips} clips")

    def to_json(self) -> dict[str, Any]:
        """As the validate step's summary carries it (publish's log prints it)."""
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Figure | None:
        """A figure as a summary carried it; its known fields only (another pipeline version may say more), None
        where it lacks what names it."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: x for k, x in d.items() if k in known}) if {"variant", "label"} <= set(d) else None


KNOWN = "the clips the model knows"
EVERY = "every clip, audio the model does not know included"


def figures(result: Validation) -> list[Figure]:
    """Each variant's WER figures, the gated ones (on the clips the model knows, each with its gate's limit) apart
    from those only reported (on every clip; a gate turned off): what the report's top and publish's log show."""
    t, out = result.thresholds, []
    for v, x in result.variants.items():
        d, sh = x.decoding, x.sherpa
        if v in DRIFT and d is not None and d.wer_by_length:
            held = [b for b in d.wer_by_length.values() if b.gated_clips and b.wer_gated is not None]
            limit = t.get(DRIFT[v].key)
            if held:
                out.append(Figure(v, f"WER vs {BASE.name} (worst length bucket)", max(b.wer_gated for b in held),
                                  sum(b.gated_clips for b in held), KNOWN, limit))
            out.append(Figure(v, f"WER vs {BASE.name}", d.wer_vs_base, d.clips, EVERY))
        if sh is not None and sh.ok:
            gated = given(sh.wer_vs_nemo_gated)
            if gated is not None:
                out.append(Figure(v, SHERPA_WER.label, gated, len(sh.gated_clips or []), KNOWN,
                                  t.get(SHERPA_WER.key)))
            out.append(Figure(v, SHERPA_WER.label, sh.wer_vs_nemo, len(sh.texts or []), EVERY))
            if sh.wer_vs_reference is not None:
                out.append(Figure(v, "sherpa-onnx WER vs the reference texts", sh.wer_vs_reference,
                                  len(sh.texts or []), EVERY))
    return out


def _both(gated: Any, every: Any) -> Any:
    """A gated figure with the every-clip one beside it when they differ."""
    if every is None:
        return gated
    return every if gated == every else f"{'-' if gated is None else gated} ({every})"


def _stepwise_markdown(result: Validation) -> list[str]:
    """VALIDATION.md's step-by-step decoding parity: per variant, NeMo's path followed, ties and mismatches."""
    rows = [(v, x.stepwise) for v, x in result.variants.items() if x.stepwise]
    if not rows:
        return []
    first = rows[0][1]
    out = ["", "Decoding parity step by step: each variant's graphs follow NeMo's own greedy path (same encoder frame, "
               "same token history at every step) and make each token and duration choice; a differing choice is a "
               "tie when NeMo's two best logits there are within twice the measured logit difference and within "
               f"{first.tie_max:g} (gated for {BASE.name}; the other variants are gated by WER drift).", "",
           "| variant | steps | same choice | ties | mismatches | max logit difference |", "|---|---|---|---|---|---|"]
    for v, sw in rows:
        out.append(f"| {v} | {sw.steps} | {sw.steps - len(sw.ties) - len(sw.mismatches)} | "
                   f"{len(sw.ties)} | {len(sw.mismatches)} | {sw.max_logit_diff} |")
    parted = first.transcribe_divergence or []
    out += ["", f"NeMo's transcribe() against its own modules decoded step by step (the path above): "
                f"{len(parted)} of {first.clips} clips parted" + "".join(
                    f"; {d.clip} at token {d.token_index} (frame {d.frame}): {d.path} vs transcribe()'s "
                    f"{d.other}, margin {d.margin} of logits up to {d.scale}" for d in parted) + "."]
    ties = [(v, t) for v, sw in rows for t in sw.ties]
    if ties:
        out += ["", "| variant | clip | step | frame | choice | NeMo | ONNX | NeMo's margin | logit difference |",
                "|---|---|---|---|---|---|---|---|---|"]
        out += [f"| {v} | {t.clip} | {t.step} | {t.frame} | {t.choice} | {t.nemo} | {t.onnx} | "
                f"{t.margin} | {t.logit_diff} |" for v, t in ties[:40]]
        if len(ties) > 40:
            out.append(f"| ... {len(ties) - 40} more in validation.json | | | | | | | | |")
    return out


def _frontend_markdown(result: Validation) -> list[str]:
    """VALIDATION.md's line per variant on sherpa-onnx against the reference decoder on sherpa-onnx's features."""
    rows = [(v, x.sherpa_frontend) for v, x in result.variants.items() if x.sherpa_frontend]
    if not rows:
        return []
    return ["", "sherpa-onnx on its own front end (its kaldi-native-fbank features, reproduced): the library's "
                "greedy decoder over the same graphs, by sherpa-onnx's greedy rule, gives sherpa-onnx's tokens at "
                "sherpa-onnx's timestamps on " + "; ".join(
                    f"{v} {f.exact}/{len(f.clips)} clips exact, {f.ties} near-ties" + (
                        f" (largest margin {f.max_relative_margin:.2%} of the logits' scale)"
                        if f.max_relative_margin is not None else "") for v, f in rows)
            + f". Gated on every clip, whatever the model knows (near-ties up to {rows[0][1].tie_rel:.0%} "
              f"of the logits' scale)."]


def _timestamps_markdown(result: Validation) -> list[str]:
    """VALIDATION.md's timestamps: sherpa-onnx's against the reference decoder (gated above) and NeMo's own."""
    rows = [(v, x.timestamps, x.sherpa_frontend) for v, x in result.variants.items() if x.timestamps]
    if not rows:
        return []
    out = ["", "Timestamps (where a dictation app puts the cursor): sherpa-onnx's token times equal the reference "
               "decoder's frames on sherpa-onnx's own features on every clip the gate above calls exact; against "
               "NeMo's own token frames (transcribe()), on the clips where both emit the same tokens (offset = "
               "sherpa-onnx - NeMo; one frame is "
               f"{rows[0][1].seconds_per_frame:g} s):", "",
           "| variant | exact on own features | clips compared with NeMo | tokens | mean offset (s) | mean abs "
           "offset (s) | max abs offset (s) | same frame |", "|---|---|---|---|---|---|---|---|"]
    for v, t, f in rows:
        cells = [v, f"{f.exact if f else '-'}/{len(f.clips) if f else 0}", len(t.clips_compared), t.tokens,
                 t.mean_offset_s, t.mean_abs_offset_s, t.max_abs_offset_s, t.same_frame]
        out.append("| " + " | ".join("-" if c is None else str(c) for c in cells) + " |")
    return out


def _length_markdown(result: Validation) -> list[str]:
    """VALIDATION.md's figures by clip length (validate.by_length): NeMo against the reference texts, each made
    variant's drift from fp32 (gated per bucket), sherpa-onnx against NeMo."""
    rows = result.by_length or {}
    if not rows:
        return []
    cols = [k for k in next(iter(rows.values())) if k != "clips"]
    out = ["", "By clip length, on every clip (the drift gates hold each bucket's clips the model knows):", "",
           "| clip length | clips | " + " | ".join(cols) + " |",
           "|" + "---|" * (2 + len(cols))]
    for label, row in rows.items():
        out.append("| " + " | ".join(str(c) for c in [label, row["clips"]] + [row[k] for k in cols]) + " |")
    return out


def _beam_markdown(result: Validation) -> list[str]:
    """VALIDATION.md's beam-search health and hotwords section (nothing for a run without sherpa-onnx)."""
    rows = [(v, x.sherpa_beam) for v, x in result.variants.items() if x.sherpa_beam is not None]
    if not rows:
        return []
    out = ["", "Beam search (sherpa-onnx `modified_beam_search`, the decoding hotwords need) against sherpa-onnx's "
               f"greedy transcripts, and with a hotwords list of words nobody said (through `{BPE_VOCAB}`):", "",
           "| variant | runtime | WER beam vs greedy | empty or collapsed clips | hotwords (not spoken) | clips they "
           "changed |", "|---|---|---|---|---|---|"]
    for v, b in rows:
        d = b.decoy_hotwords or {}
        out.append(f"| {v} | sherpa-onnx {b.runtime or '?'} | {given(b.wer_vs_greedy)} | "
                   f"{', '.join(b.collapsed or []) or 'none'} | {', '.join(d.get('phrases') or []) or '-'} | "
                   f"{', '.join(d.get('changed') or []) or ('none' if d else '-')} |")
    return out


def render_markdown(result: Validation, compatibility: Compatibility | None = None) -> str:
    """The human-readable report: verdict, per-variant figures, every gate, every clip's text; with the runtime
    matrix (compat stage) when given."""
    m, t, gates = result.model, result.thresholds, result.gates or []
    failed = [g for g in gates if not g.passed]
    out = [f"# Validation: {'PASSED' if result.passed else 'FAILED'} ({result.mode})", ""]
    out.append(f"{m.model_class}: {m.feat_dim} mels, vocab {m.vocab_size} + blank, durations "
               f"{m.durations or 'none (RNNT)'}, encoder {m.encoder_layers} x {m.enc_hidden}, "
               f"prediction net {m.pred_rnn_layers} x {m.pred_hidden}.")
    e = result.eval_set
    if e:
        out += ["", f"Evaluation set: {e.source} (sha256 {e.sha256[:16]}...), {len(e.clips)} clips, "
                    f"{e.duration_s:g} s" + (f", sampled from {e.total_clips} with seed {e.seed}"
                                             if e.sampled else "") + "."]
    a = result.long_audio
    if a:
        memory = a.memory()
        out += ["", f"Long recordings: {f'attention {a.attention}; ' if a.attention else ''}positions "
                    f"{a.positions}; length limit: {a.limit}. Longest recording "
                    f"validated: {a.proven()}." + (f" Memory: {memory}." if memory else "")]
    out += ["", f"{len(gates)} gates, {len(failed)} failed.", "",
            "| variant | enc diff | enc rel. error | dec diff | joiner diff | token match vs NeMo | exact clips "
            f"| WER vs {BASE.name} | sherpa WER vs NeMo | sherpa WER vs reference |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    out += [_figures_row(v, x) for v, x in result.variants.items()]
    for v in VARIANTS.values():  # how a made variant was made, in the words of the module that made it
        words = v.maker().describe(result.made[v.name]) if v.name in result.made and v.module else None
        out += ["", words] if words else []
    out += ["", "WER vs fp32 and sherpa WER vs NeMo: on the clips the model knows (what the gates hold; the worst "
                "length bucket for WER vs fp32), then on every clip in parentheses."]
    out += ["", "Encoder relative error: ||ONNX - PyTorch|| / ||PyTorch|| of the encoder output on the evaluation "
                "clips' features."]
    out += ["", f"Thresholds: {BASE.name} max abs diff <= {t[f'{BASE.name}_max_abs_diff']:g}; {BASE.name} tokens "
                f"identical to NeMo; " + "; ".join(f"{g.label} {g.shown(t.get(g.key))}" for g in GATES) + ".",
            "", "| gate | result | value | threshold |", "|---|---|---|---|"]
    for g in gates:
        out.append(f"| {g.gate} | {'pass' if g.passed else '**FAIL**'} | {g.value} | "
                   f"{'-' if g.threshold is None else g.threshold} |")
    out += compat_markdown(compatibility) if compatibility else []
    out += _transcripts_markdown(result)
    out += _stepwise_markdown(result)
    out += _frontend_markdown(result)
    out += _timestamps_markdown(result)
    out += _length_markdown(result)
    out += _beam_markdown(result)
    if result.files:
        out += ["", "Validated files (publish uploads exactly these bytes):", "", "| file | bytes | sha256 |",
                "|---|---|---|"]
        out += [f"| {f.name} | {f.size:,} | `{f.sha256}` |" for f in result.files]
    return "\n".join(out) + "\n"


def _figures_row(v: str, x: VariantResult) -> str:
    """One variant's row of the figures table."""
    diff, d, sh = x.max_abs_diff or {}, x.decoding, x.sherpa
    gated = [b.wer_gated for b in ((d.wer_by_length if d else None) or {}).values() if b.wer_gated is not None]
    cells = [v, diff.get("encoder"), x.encoder_rel_err, diff.get("decoder"), diff.get("joiner"),
             d.token_match_rate if d else None, f"{d.exact_clips}/{d.clips}" if d else None,
             _both(max(gated) if gated else None, d.wer_vs_base if d else None),
             _both(given(sh.wer_vs_nemo_gated), sh.wer_vs_nemo) if sh else None, sh.wer_vs_reference if sh else None]
    return "| " + " | ".join("-" if c is None else str(c) for c in cells) + " |"


def _transcripts_markdown(result: Validation) -> list[str]:
    """Every clip's transcripts: the reference, NeMo's, and one column per variant and engine that produced any."""
    columns = []
    for v, x in result.variants.items():
        if x.decoding is not None:
            columns.append((f"{v} onnx", [c.text for c in x.decoding.per_clip]))
        if x.sherpa and x.sherpa.texts:
            columns.append((f"{v} sherpa", x.sherpa.texts))
        if x.sherpa_beam and x.sherpa_beam.texts:
            columns.append((f"{v} sherpa beam", x.sherpa_beam.texts))
    out = ["", "| clip | reference | NeMo | " + " | ".join(name for name, _ in columns) + " |",
           "|" + "---|" * (3 + len(columns))]
    for i, c in enumerate(result.clips):
        row = [c.clip, c.reference, c.nemo] + [texts[i] for _, texts in columns]
        out.append("| " + " | ".join(s.replace("|", "/") for s in row) + " |")
    return out


def compat_markdown(c: Compatibility) -> list[str]:
    """The runtime matrix: each variant's layout and range, each runtime's status per variant against the reference
    (with whether that variant's range includes it)."""
    out = ["", f"Runtimes (the compat stage): the runtimes that bound each variant's range and the newest of each kind "
               f"decode it on the {len(c.clips)} evaluation clips up to {c.clips_max_s:g} s, compared token for "
               f"token and timestamp for timestamp with {c.reference}.", "",
           "| variant | layout | supported |", "|---|---|---|"]
    out += [f"| {v} | {r.layout} | **{r.range}** |" for v, r in c.ranges.items()]
    out += ["", "| runtime | " + " | ".join(c.variants) + " | note |", "|" + "---|" * (2 + len(c.variants))]
    for r in c.runtimes:
        cells = [r.runtime] + [_matrix_cell(r.variants.get(v)) for v in c.variants]
        out.append("| " + " | ".join(str(x).replace("|", "/") for x in cells + [r.note]) + " |")
    return out


def _matrix_cell(x: RuntimeOnVariant | None) -> str:
    """One runtime on one variant: what it did, and whether the variant's range includes it."""
    if x is None:
        return "-"
    where = "in range" if x.in_range else "outside range"
    if x.status == "fails":
        return f"{where}: fails: {(x.error or '')[:80]}"
    if x.status == MACHINE_LIMIT:
        return f"{where}: not proven on this machine: {(x.error or '')[:120]}"
    if x.status == "agrees":
        return f"{where}: same tokens and times"
    return (f"{where}: " + {"differs": "**", "unknown audio only": "no clip the model knows; "}.get(
        x.status, "same on the clips the model knows; ") + f"differs on {len(x.differing or [])}/{x.clips} clips" +
        ("" if x.status != "differs" else "**") + f", e.g. {x.example.clip} \"{x.example.text[:50]}\"")
