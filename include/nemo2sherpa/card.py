"""The model card (README.md) of a release archive: what a sherpa-onnx user needs before and after downloading.

Source and revision, license, the validation verdict and figures, the runtime table (compat) with the supported
range, what the test clips should transcribe to, and copy-paste usage for Python, the CLI, Node, the C API and
Rust, with this variant's file names, `feature_dim` and `model_type`. The Python and CLI snippets are run as
written by the test suite on the published archive (tests/test_archive.py): they print the texts listed here.
"""

from __future__ import annotations


from .records import Compatibility, Source, TestWav, Validation, VariantResult, given
from .variants import BASE, VARIANTS

LICENSE_UNKNOWN = "not recorded: the source checkpoint's own license applies"


def _figures(validated: Validation, variant: str) -> list[str]:
    x = validated.variants.get(variant) or VariantResult()
    d, sh, sw = x.decoding, x.sherpa, x.stepwise
    rows = [f"- Validation: **{'PASSED' if validated.passed else 'FAILED'}** ({len(validated.gates or [])} gates; "
            f"the full report is `VALIDATION.md` beside the published bundle)."]
    if variant == BASE.name and sw:
        rows.append(f"- ONNX against NeMo step by step: {sw.steps} decisions, {len(sw.mismatches)} "
                    f"mismatches, {len(sw.ties)} float ties; max logit difference {sw.max_logit_diff}.")
    if d and d.wer_vs_base is not None:
        rows.append(f"- WER against {BASE.name}: {d.wer_vs_base} on all clips; by length: " + ", ".join(
            f"{k} {b.wer}" for k, b in (d.wer_by_length or {}).items()) + ".")
    if sh and sh.texts:
        rows.append(f"- sherpa-onnx WER vs NeMo: {sh.wer_vs_nemo} (on the clips the model knows: "
                    f"{given(sh.wer_vs_nemo_gated)}); vs the reference texts {sh.wer_vs_reference}.")
    f = x.sherpa_frontend
    if f:
        rows.append(f"- sherpa-onnx against the reference decoder on its own features: {f.exact}/{len(f.clips)} "
                    f"clips exact, {f.ties} near-ties.")
    e = validated.eval_set
    if e:
        rows.append(f"- Evaluation set: {e.source}, {len(e.clips)} clips, {e.duration_s:g} s.")
    return rows


def _long_recordings(validated: Validation) -> list[str]:
    """How long a recording the bundle decodes at once: what bounds it, and the longest validate proved."""
    a = validated.long_audio
    if a is None:
        return []
    memory = a.memory()
    return ["", "## Long recordings", ""] + ([f"- Attention: {a.attention}."] if a.attention else []) + [
            f"- Positions: {a.positions}.", f"- Length limit: {a.limit}.",
            f"- Longest recording validated: {a.proven()}."] + ([f"- Memory: {memory}."] if memory else [])


def _runtimes(compat: Compatibility | None, variant: str) -> list[str]:
    """The card's runtime section: this variant's layout and range (the older releases and what they do), what the
    matrix measured on this bundle, and what Rust users should link."""
    if not compat:
        return ["The runtime matrix was not run for this bundle (runtime_matrix off): sherpa-onnx "
                "(Python) as validated is the only runtime checked."]
    r = compat.ranges.get(variant)
    if r is None:
        return [f"The runtime matrix did not run on this variant ({', '.join(compat.ranges)} only)."]
    out = [f"Supported for this variant ({r.layout}): **{r.range}**. Older releases {r.older}.", "",
           f"Measured on this bundle against {compat.reference}, on the evaluation clips up to "
           f"{compat.clips_max_s:g} s:", "", "| runtime | in the range | result |", "|---|---|---|"]
    for row in compat.runtimes:
        x = row.variants.get(variant)
        if x is not None:
            out.append(f"| {row.runtime} | {'yes' if x.in_range else 'no'} | {x.status} |")
    out += ["", f"Rust: the official `sherpa-onnx` crate links the C API of its own release: use one at or above "
                f"{r.oldest}. sherpa-rs (last release 0.6.8) links sherpa-onnx 1.12.9, which decodes TDT models "
                f"wrongly: do not use it for this model."]
    return out


def usage(variant: str, feat_dim: int) -> str:
    """Copy-paste usage for every runtime, run from the archive's folder (its files by their own names)."""
    enc, dec, join = VARIANTS[variant].files
    return _python_cli(enc, dec, join, feat_dim) + _node_c_rust(enc, dec, join, feat_dim)


def _python_cli(enc: str, dec: str, join: str, feat_dim: int) -> str:
    return f'''### Python (`pip install sherpa-onnx numpy`)

```python
import glob, wave
import numpy as np
import sherpa_onnx

recognizer = sherpa_onnx.OfflineRecognizer.from_transducer(
    encoder="{enc}", decoder="{dec}", joiner="{join}", tokens="tokens.txt",
    model_type="nemo_transducer", feature_dim={feat_dim}, num_threads=2, decoding_method="greedy_search")
for path in sorted(glob.glob("test_wavs/*.wav"), key=lambda p: int(p.split("/")[-1][:-4])):
    with wave.open(path) as w:
        rate, pcm = w.getframerate(), w.readframes(w.getnframes())
    stream = recognizer.create_stream()
    stream.accept_waveform(rate, np.frombuffer(pcm, dtype=np.int16).astype(np.float32) / 32768)
    recognizer.decode_stream(stream)
    print(stream.result.text)
```

### Command line (`pip install sherpa-onnx-bin`)

```bash
sherpa-onnx-offline --encoder={enc} --decoder={dec} --joiner={join} --tokens=tokens.txt \\
  --model-type=nemo_transducer --feat-dim={feat_dim} --num-threads=2 --decoding-method=greedy_search \\
  test_wavs/0.wav
```

'''


def _node_c_rust(enc: str, dec: str, join: str, feat_dim: int) -> str:
    return f'''### Node.js (`npm install sherpa-onnx-node`)

```js
const sherpa = require('sherpa-onnx-node');
const recognizer = new sherpa.OfflineRecognizer({{
  featConfig: {{sampleRate: 16000, featureDim: {feat_dim}}},
  modelConfig: {{transducer: {{encoder: '{enc}', decoder: '{dec}', joiner: '{join}'}},
                tokens: 'tokens.txt', numThreads: 2, provider: 'cpu', modelType: 'nemo_transducer'}},
  decodingMethod: 'greedy_search'}});
const wave = sherpa.readWave('test_wavs/0.wav');
const stream = recognizer.createStream();
stream.acceptWaveform({{samples: wave.samples, sampleRate: wave.sampleRate}});
recognizer.decode(stream);
console.log(recognizer.getResult(stream).text);
```

### C API (`libsherpa-onnx-c-api.so` and `c-api.h` ship in the sherpa-onnx wheel)

```c
SherpaOnnxOfflineRecognizerConfig config;
memset(&config, 0, sizeof(config));
config.feat_config.sample_rate = 16000;
config.feat_config.feature_dim = {feat_dim};
config.model_config.transducer.encoder = "{enc}";
config.model_config.transducer.decoder = "{dec}";
config.model_config.transducer.joiner = "{join}";
config.model_config.tokens = "tokens.txt";
config.model_config.num_threads = 2;
config.model_config.provider = "cpu";
config.model_config.model_type = "nemo_transducer";
config.decoding_method = "greedy_search";
const SherpaOnnxOfflineRecognizer *recognizer = SherpaOnnxCreateOfflineRecognizer(&config);
```

### Rust (through the C API, as sherpa-rs and the sherpa-onnx crate do)

Set the same fields on the `#[repr(C)]` config: `model_type` `"nemo_transducer"`, `feature_dim` {feat_dim},
`num_threads`, `provider` `"cpu"`, the three file names above and `tokens.txt`. nemo2sherpa's own client,
`include/nemo2sherpa/clients/capi-rust`, decodes every bundle in the runtime matrix where the worker has cargo
(the table above says whether it ran on this one).
'''


def model_card(name: str, variant: str, model: str, source: Source, validated: Validation,
               compat: Compatibility | None, wavs: list[TestWav], license_: str | None,
               archives: list[str] | None = None) -> str:
    """README.md of one archive (or, with `archives`, of the bundle folder that lists them)."""
    m = validated.model
    where = (f"[{source.repo_id}](https://huggingface.co/{source.repo_id}) at revision `{source.revision}`"
             if source.repo_id else
             f"`{source.url or source.name}` (sha256 `{source.sha256 if source.sha256 is not None else '?'}`)")
    x = validated.variants.get(variant)
    sherpa = (x.sherpa.texts if x and x.sherpa else None) or []
    out = [f"# {name}", "",
           f"{model} ({m.model_class}, {m.encoder_layers} encoder layers, {m.feat_dim} mel features, vocab "
           f"{m.vocab_size} + blank, TDT durations {m.durations or 'none: RNNT'}) for "
           f"[sherpa-onnx](https://github.com/k2-fsa/sherpa-onnx), {variant} "
           f"({VARIANTS[variant].summary}), converted and validated by nemo2sherpa.", "",
           f"- Source: {where}.", f"- License: {license_ or LICENSE_UNKNOWN}.", *_figures(validated, variant)]
    if archives:
        out += ["", "Archives (one a variant, laid out as sherpa-onnx's own releases): " +
                ", ".join(f"`{a}`" for a in archives) + "."]
        if compat:
            out += ["", "Each variant's files and the sherpa-onnx releases that load them:", ""] + [
                f"- {v}: {r.layout}: {r.range}" for v, r in compat.ranges.items()]
    out += _long_recordings(validated)
    out += ["", "## Runtimes", "", *_runtimes(compat, variant), "", "## Test clips", "",
            "`test_wavs/` holds clips of the evaluation set; `trans.txt` their reference texts. sherpa-onnx "
            "(greedy search) transcribes them as:", ""]
    out += [f"- `{i}.wav`: {sherpa[w.index] if w.index < len(sherpa) else '?'}" for i, w in enumerate(wavs)]
    out += ["", "## Usage", "", usage(variant, int(m.feat_dim))]
    return "\n".join(out) + "\n"
