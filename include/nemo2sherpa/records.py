"""What flows between the steps, declared once: typed records, each with one `to_json` / `from_json`.

A record is a dataclass over `Record` (frozen, unless a step fills it in as it goes: validate's results). `to_json` gives the JSON object a step hands on (XCom, a file in the
workspace); `from_json` reads one back, checking its kind and version (`KIND`, written as "record"), every field's
presence and type, and that it holds no field this reader does not know, failing with the field's name
(RecordError). Fields keep the JSON's names; a Python keyword is aliased (`json_key`). An optional field at None is
left out of the JSON; one whose absence differs from null defaults to ABSENT. Pure Python: the Airflow side imports
it.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from .errors import PermanentError
from .localattn import FULL as FULL_ATTENTION
from .variants import BASE, VARIANTS

if TYPE_CHECKING:
    from .modelspec import ModelSpec

R = TypeVar("R", bound="Record")


class RecordError(PermanentError):
    """A record that does not have the shape its reader expects: a file or XCom value from another version of
    nemo2sherpa, or edited by hand. Names the record and the field."""


class _Absent:
    """A field a record leaves out of its JSON (where null would say something else)."""

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Any = _Absent()


def given(value: Any) -> Any:
    """A field's value, None for one left out (ABSENT)."""
    return None if value is ABSENT else value


def json_key(name: str, **kw: Any) -> Any:
    """A field whose JSON name is not a Python name (`from`)."""
    return field(metadata={"json": name}, **kw)


def _key(f: dataclasses.Field) -> str:
    return f.metadata.get("json", f.name)


class Record:
    """The base of every record: JSON in and out by the dataclass's fields (see the module's docstring)."""

    KIND: ClassVar[str | None] = None  # "<name>/<version>", written as "record" and checked on read; None: neither
    FILE: ClassVar[str] = ""  # the file it is kept in, where it is one (export.json, validation.json, ...)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON-able object (fields in their declared order; an optional field at None left out)."""
        out: dict[str, Any] = {"record": self.KIND} if self.KIND else {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if value is ABSENT or (value is None and f.default is None):
                continue
            out[_key(f)] = dump(value)
        return out

    @classmethod
    def from_json(cls: type[R], data: Any, what: str | None = None) -> R:
        """The record read from JSON, checked; RecordError naming the field that is missing, unknown or mistyped."""
        what = what or cls.__name__
        if not isinstance(data, dict):
            raise RecordError(f"{what}: expected a JSON object, got {type(data).__name__}")
        if cls.KIND and data.get("record") != cls.KIND:
            raise RecordError(f"{what}: record {data.get('record')!r}, this nemo2sherpa reads {cls.KIND!r}: it was "
                              f"written by another version; start the run again")
        fields = dataclasses.fields(cls)  # type: ignore[arg-type]
        unknown = sorted(set(data) - {_key(f) for f in fields} - {"record"})
        if unknown:
            raise RecordError(f"{what}: unknown field(s) {', '.join(unknown)}")
        hints = _hints(cls)
        values = {}
        for f in fields:
            if _key(f) not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:  # type: ignore
                    raise RecordError(f"{what}: field {_key(f)!r} missing")
                continue
            values[f.name] = _load(hints[f.name], data[_key(f)], f"{what}.{_key(f)}")
        return cls(**values)


    @classmethod
    def load(cls: type[R], path: Path) -> R:
        """The record in the JSON file at `path` (errors name the file)."""
        return cls.from_json(json.loads(Path(path).read_text()), str(path))

    @classmethod
    def read(cls: type[R], folder: Path) -> R:
        """The record kept in `folder`, in its FILE."""
        return cls.load(Path(folder) / cls.FILE)


_hints = functools.cache(typing.get_type_hints)  # each record class's field types, resolved once


def dump(value: Any) -> Any:
    """A value as JSON-able data: records by their to_json, in lists and dicts too; a Path as its string."""
    if isinstance(value, Record):
        return value.to_json()
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [dump(x) for x in value]
    if isinstance(value, dict):
        return {k: dump(x) for k, x in value.items()}
    return value


_SCALARS = {str: (str,), int: (int,), float: (int, float), bool: (bool,)}


def _load(tp: Any, value: Any, where: str) -> Any:
    """`value` read as type `tp` (a record, Path, list, tuple, dict, a scalar, a union with None, Any)."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return _load(rest[0], value, where)
        for a in rest:  # a union of scalars: the first that takes it
            if a in _SCALARS and isinstance(value, _SCALARS[a]):
                return value
        raise RecordError(f"{where}: {value!r} is none of {', '.join(getattr(a, '__name__', str(a)) for a in rest)}")
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_json(value, where)
    if tp is Path:
        return Path(_load(str, value, where))
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise RecordError(f"{where}: expected a list, got {type(value).__name__}")
        items = [_load(args[0] if args else Any, x, f"{where}[{i}]") for i, x in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, dict):
            raise RecordError(f"{where}: expected an object, got {type(value).__name__}")
        return {k: _load(args[1] if args else Any, x, f"{where}.{k}") for k, x in value.items()}
    if tp in _SCALARS:
        if not isinstance(value, _SCALARS[tp]) or (tp is not bool and isinstance(value, bool)):
            raise RecordError(f"{where}: expected {tp.__name__}, got {value!r}")
        return value
    return value


@dataclass(frozen=True)
class EvalClip(Record):
    """One clip of a prepared evaluation set: its name in the set's folder, where it came from, its length."""

    name: str
    origin: str = json_key("from")
    duration_s: float = json_key("duration_s")


@dataclass(frozen=True, kw_only=True)
class EvalSet(Record):
    """A prepared evaluation set (evalset.prepare): what it was made from, its content hash, its clips; `dir` the
    folder of wav files + texts.tsv (the workspace's, so not published)."""

    source: str
    dir: Path | None = None
    sha256: str
    clips: list[EvalClip]
    total_clips: int
    sampled: bool
    seed: int
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class Source(Record):
    """The source step's result: the checkpoint on this worker and where it came from (kind local / s3 / hub; a
    registry model keeps its registry name), then the prepared evaluation set. Fields in the order every kind
    writes them (the published manifest keeps that order)."""

    KIND: ClassVar[str | None] = "source/1"
    source: str | None = None  # what the run named (upstream_revision's answer)
    kind: str
    name: str
    repo_id: str | None = None
    url: str | None = None
    path: Path | None = None  # the .nemo on the worker (upstream_revision's answer has none)
    revision: str
    sha256: str | None = None
    size: int | None = None
    revision_date: str | None = None
    registry: str | None = None  # the registry entry it resolved from
    eval_set: EvalSet | None = None

    def identity(self, keys: tuple[str, ...]) -> dict[str, Any]:
        """The named fields that are set, in the record's order: what a report or manifest says of the source."""
        return {k: v for k, v in self.to_json().items() if k in keys}


@dataclass(frozen=True)
class Plan(Record):
    """A run's layout and choices (pipeline.make_plan): where each step reads and writes, and what the run asked
    for. The DAG hands it to every task through XCom; `convert` through plan.json."""

    KIND: ClassVar[str | None] = "plan/1"
    include_dir: Path
    ws: Path
    download: Path
    bundle: Path
    reference: Path
    variants: list[str]
    source: str
    revision: str | None
    gpu: bool
    lengths: list[float]
    gates: dict[str, float | None]
    int8_recipe: str
    eval_set: str | None
    eval: Path
    eval_max_clips: int
    runtime_matrix: bool
    runtimes: list[str]
    run_key: str | None = None  # with an object-store workspace: the run's folder under it
    remote: str | None = None  # ... and that folder's URL
    local_attention: list[int] | None = None  # [left, right] encoder frames: export with local attention (localattn)

    def option(self, name: str) -> Any:
        """One of the run's choices by name (a variant maker's options: variants.Variant.options)."""
        return getattr(self, name)


@dataclass(frozen=True, kw_only=True)
class Divergence(Record):
    """Where a recorded greedy path first parts from another decoder's output (decode.first_divergence): the token
    where they part, the step and frame, which choice (a token, a duration) explains it, the path's and the other's,
    the margin in the path's logits (a float tie when tiny) and their scale; null where the other emitted past the
    path's end. Lists of them name the clip, and the clip's last encoder frame."""

    clip: str | None = None
    token_index: int
    step: int | None
    frame: int | None
    choice: str | None
    path: int | None
    other: int | None
    margin: float | None
    scale: float | None
    last_frame: int | None = None


@dataclass(frozen=True, kw_only=True)
class ExportClip(Record):
    """One evaluation clip as export saw it: NeMo's features' length, its transcript, tokens and token frames, the
    decoding path validate follows (its reference arrays are in reference.npz, by the clip's index)."""

    name: str
    path: Path
    text: str
    nemo_text: str
    duration_s: float
    nemo_frames: list[int] | None
    nemo_tokens: list[int]
    frames: int
    path_steps: int
    path_equals_transcribe: bool
    transcribe_divergence: Divergence | None  # None: transcribe() and the path agree, or no frames to tell


@dataclass(frozen=True, kw_only=True)
class Export(Record):
    """reference/export.json (and the bundle's copy): what export made, from what, and NeMo's answers on the clips."""

    FILE: ClassVar[str] = "export.json"
    nemo2sherpa: str
    nemo_path: str
    spec: dict[str, Any]  # modelspec.ModelSpec.to_dict: read it with `model_spec()`
    params: int
    tokens: int
    files: dict[str, int]
    eval_set: EvalSet | None = None
    timings_s: dict[str, float]
    clips: list[ExportClip]
    nemo_baseline: Engine | None = None  # NeMo transcribe()'s timings, for the benchmark
    positions: str | None = None  # how the exported encoder gets its positions (positions.describe)
    attention: str | None = None  # the encoder's attention: "full", or "local [left, right]" (localattn.describe)

    def model_spec(self) -> ModelSpec:
        """The model's spec (modelspec.ModelSpec)."""
        from .modelspec import ModelSpec

        return ModelSpec.from_dict(self.spec)


@dataclass(frozen=True, kw_only=True)
class Example(Record):
    """A clip a runtime decoded otherwise than the reference: what it said, and what the reference said."""

    clip: str
    text: str
    reference: str


# A runtime killed as for memory (runtimes.KILLED) proves nothing either way: the machine's limit, recorded with the
# machine's memory, is no verdict on the bundle (compat, report).
MACHINE_LIMIT = "machine limit"


@dataclass(frozen=True, kw_only=True)
class RuntimeOnVariant(Record):
    """One runtime on one variant: agrees / differs (the clips, an example) / fails (its error), its layout and
    whether the variant's stated range includes it."""

    status: str
    error: str | None = None
    exit_code: int | None = None
    clips: int | None = None
    differing: list[str] | None = None
    known_clips: int | None = None
    example: Example | None = None
    layout: str
    in_range: bool
    seconds: float
    native: Any = None  # the Node addon's own release, where it says


@dataclass(frozen=True, kw_only=True)
class RuntimeRow(Record):
    """One runtime of the matrix, on every variant it ran on."""

    runtime: str
    kind: str
    version: str
    from_folder: bool
    note: str
    variants: dict[str, RuntimeOnVariant]
    seconds: float
    status: str


@dataclass(frozen=True, kw_only=True)
class LayoutRange(Record):
    """A variant's layout and the sherpa-onnx releases that decode it (runtimes.RANGES)."""

    layout: str
    range: str
    oldest: str
    older: str


@dataclass(frozen=True, kw_only=True)
class Compatibility(Record):
    """compatibility.json: the runtime matrix over a validated bundle (compat.check_runtimes)."""

    FILE: ClassVar[str] = "compatibility.json"
    reference: str
    ranges: dict[str, LayoutRange]
    clips: list[str]
    clips_max_s: float
    variants: list[str]
    runtimes: list[RuntimeRow]
    kinds: list[str]
    left_out: dict[str, str]
    known_clips: list[str]
    passed: bool
    seconds: float


# validation.json, as validate writes it: the run's model and limits, every variant's results, every gate, the files.
@dataclass(frozen=True, kw_only=True)
class Gate(Record):
    """One gate: its name, verdict, value and threshold (any JSON), and what explains it."""

    gate: str
    passed: bool
    value: Any
    threshold: Any
    detail: str


@dataclass(frozen=True, kw_only=True)
class FileDigest(Record):
    """A file validate passed: its name, size and sha256 (publish uploads exactly these bytes)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True, kw_only=True)
class ClipRow(Record):
    """A clip of the evaluation set as the report lists it: its reference text and NeMo's transcript."""

    clip: str
    reference: str
    nemo: str
    duration_s: float


@dataclass(frozen=True, kw_only=True)
class ModelFigures(Record):
    """The model's figures the reports show (from export's spec)."""

    model_class: str
    feat_dim: int
    vocab_size: int
    durations: list[int]
    pred_rnn_layers: int
    pred_hidden: int
    encoder_layers: int
    enc_hidden: int


@dataclass(frozen=True, kw_only=True)
class LongAudio(Record):
    """What a bundle says about long recordings: how its encoder gets its positions, so what bounds the length it
    decodes (`limit`), and the longest recording validate decoded with it, in every variant, as the reference decoder
    did: the long-recording gate's (`recording_s`, when it ran and held) or else the longest evaluation clip; and the
    peak memory of sherpa-onnx's process per variant, on that recording and on the evaluation clips (the longest
    `longest_clip_s`): two lengths, so an app sees what the audio adds and when to split it."""

    positions: str
    limit: str
    longest_clip: str
    longest_proven_s: float
    recording_s: float | None = None
    sherpa_peak_gb: dict[str, float] | None = None
    longest_clip_s: float | None = None
    clips_peak_gb: dict[str, float] | None = None
    attention: str | None = None  # the encoder's attention (export.json's): "full" or "local [left, right]"

    GATE: ClassVar[str] = "long-recording gate"  # longest_clip when the gate's recording is the longest proven

    def proven(self) -> str:
        """The longest recording proven, in words (the card, VALIDATION.md and the report say it alike)."""
        where = ("the long-recording gate's: the evaluation clips in turn with pauses" if self.longest_clip == self.GATE
                 else f"{self.longest_clip} of the evaluation set")
        return (f"{self.longest_proven_s:g} s ({self.longest_proven_s / 60:.1f} min, {where}), decoded at once by "
                f"sherpa-onnx in every variant as by the reference decoder on sherpa-onnx's own features")

    def memory(self) -> str | None:
        """sherpa-onnx's peak memory per variant, in words: on the long-recording gate's recording, and on the
        evaluation clips; None if neither was measured."""
        def per_variant(peaks: dict[str, float]) -> str:
            return ", ".join(f"{v} {gb:g} GB" for v, gb in peaks.items())

        said = []
        if self.sherpa_peak_gb and self.recording_s is not None:
            said.append(f"decoding {self.recording_s / 60:.1f} min at once: {per_variant(self.sherpa_peak_gb)}")
        if self.clips_peak_gb and self.longest_clip_s is not None:
            said.append(f"decoding the evaluation clips (the longest {self.longest_clip_s:g} s): "
                        f"{per_variant(self.clips_peak_gb)}")
        if not said:
            return None
        grows = "linearly with" if self.local else "with the square of"
        return f"sherpa-onnx's peak memory {'; '.join(said)} (what the audio adds grows {grows} the length)"

    @property
    def local(self) -> bool:
        """Whether the encoder attends locally (localattn): memory linear in the length, not quadratic."""
        return self.attention not in (None, FULL_ATTENTION)


@dataclass(frozen=True, kw_only=True)
class PerClip(Record):
    """The ONNX greedy decoder on one clip: whether its tokens are NeMo's, its text and tokens."""

    clip: str
    exact: bool
    text: str
    onnx_tokens: list[int]


@dataclass(frozen=True, kw_only=True)
class Drift(Record):
    """A made variant's WER against fp32 in one length bucket: on every clip, and on the clips the model knows."""

    clips: int
    wer: float | None
    gated_clips: int
    wer_gated: float | None


@dataclass(kw_only=True)
class Decoding(Record):
    """Free-running greedy decoding over the ONNX graphs against NeMo; a made variant's drift against fp32."""

    clips: int
    exact_clips: int
    token_match_rate: float
    wer_vs_nemo: float
    wer_vs_reference: float
    per_clip: list[PerClip]
    wer_vs_base: float | None = json_key(f"wer_vs_{BASE.name}", default=None)  # made variants: WER against the base
    wer_by_length: dict[str, Drift] | None = None


@dataclass(frozen=True, kw_only=True)
class StepDiff(Record):
    """A step of NeMo's path where ONNX chose otherwise: a tie (within the measured logit difference) or not."""

    clip: str
    step: int
    frame: int
    choice: str
    nemo: int
    onnx: int
    margin: float
    logit_diff: float


@dataclass(frozen=True, kw_only=True)
class Stepwise(Record):
    """ONNX along NeMo's own greedy path: steps, ties, mismatches; where NeMo's transcribe() parted from its
    modules."""

    steps: int
    ties: list[StepDiff]
    mismatches: list[StepDiff]
    max_logit_diff: float
    tie_max: float
    clips: int
    transcribe_divergence: list[Divergence]  # where transcribe() parted from the path, per clip


@dataclass(kw_only=True)
class SherpaRun(Record):
    """sherpa-onnx in its child process on every clip (greedy search, or beam search with or without hotwords), and
    what validate measured of it."""

    variant: str | None = None
    load_s: float | None = None
    method: str | None = None
    hotwords: Any = ABSENT  # beam search: the hotwords it ran with (null: none)
    phrases: list[str] | None = None
    runtime: str | None = None
    texts: list[str] | None = None
    tokens: list[list[str]] | None = None
    timestamps: list[list[float]] | None = None
    decode_s: float | None = None
    peak_rss_bytes: int | None = None  # the child process's own peak resident memory when it answered
    ok: bool
    exit_code: int | None = None
    error: str | None = None
    wer_vs_nemo: float | None = None
    wer_vs_reference: float | None = None
    collapsed: list[str] | None = None
    gated_clips: list[str] | None = None
    wer_vs_nemo_gated: float | None = ABSENT
    wer_vs_greedy: float | None = ABSENT
    changed: list[str] | None = None
    decoy_hotwords: dict[str, Any] | None = None


@dataclass(frozen=True, kw_only=True)
class FrontendClip(Record):
    """sherpa-onnx against the reference decoder on its own features, one clip."""

    clip: str
    exact: bool
    tie: bool  # parted only at near-ties
    divergence: Divergence | None
    tokens: int
    partings: int | None = None  # how often the two parted (each time resynchronized on sherpa-onnx's token)
    widest_rel: float | None = None  # the widest parting's margin / the logits' scale


@dataclass(frozen=True, kw_only=True)
class Frontend(Record):
    """sherpa-onnx against the reference decoder on sherpa-onnx's own features, every clip."""

    clips: list[FrontendClip]
    exact: int
    ties: int
    failed: int
    max_relative_margin: float | None
    tie_rel: float


@dataclass(frozen=True, kw_only=True)
class LongRecording(Record):
    """One variant on the long-recording gate's recording: sherpa-onnx (in a process of its own: its peak resident
    memory, its time) against the reference decoder on sherpa-onnx's features (`agreement`; its time, and validate's
    own peak resident memory once it ran, in-process), or sherpa-onnx's error."""

    seconds: float
    agreement: FrontendClip | None
    sherpa_peak_gb: float | None
    sherpa_load_s: float | None
    sherpa_decode_s: float | None
    reference_s: float | None
    validate_peak_gb: float | None = None
    error: str | None = None

    @property
    def held(self) -> bool:
        """The gate passed: sherpa-onnx decoded it, and agreed with the reference decoder or parted at near-ties."""
        return self.agreement is not None and (self.agreement.exact or self.agreement.tie)


@dataclass(frozen=True, kw_only=True)
class Timestamps(Record):
    """sherpa-onnx's token times against NeMo's on the clips where both emit the same tokens (reported)."""

    clips_compared: list[str]
    tokens: int
    seconds_per_frame: float
    mean_offset_s: float | None = None
    mean_abs_offset_s: float | None = None
    max_abs_offset_s: float | None = None
    same_frame: float | None = None


@dataclass(kw_only=True)
class VariantResult(Record):
    """One variant's results, in the order validate finds them."""

    max_abs_diff: dict[str, float] | None = None
    encoder_rel_err: float | None = None
    decoding: Decoding | None = None
    stepwise: Stepwise | None = None
    sherpa: SherpaRun | None = None
    sherpa_frontend: Frontend | None = None
    timestamps: Timestamps | None = None
    sherpa_seconds: dict[str, dict[str, float | None]] | None = None
    sherpa_beam: SherpaRun | None = None
    long_recording: LongRecording | None = None


@dataclass(kw_only=True)
class Validation(Record):
    """validation.json: the verdict, every gate, every variant's figures and the files validate passed. How each made
    variant was made (its maker's report, variants.Maker.recorded) sits under the variant's name (`made`)."""

    FILE: ClassVar[str] = "validation.json"
    mode: str
    model: ModelFigures
    thresholds: dict[str, float | None]
    clips: list[ClipRow]
    variants: dict[str, VariantResult] = field(default_factory=dict)
    source: dict[str, Any] | None = None
    eval_set: EvalSet | None = None
    long_audio: LongAudio | None = None
    made: dict[str, MadeReport] = field(default_factory=dict)
    known_clips: list[str] | None = None
    by_length: dict[str, dict[str, Any]] | None = None
    files: list[FileDigest] | None = None
    timings_s: dict[str, float] | None = None
    gates: list[Gate] | None = None
    passed: bool | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON, each made variant's report under its own name (where `made` stands)."""
        out: dict[str, Any] = {}
        for k, v in super().to_json().items():
            out.update(v if k == "made" else {k: v})
        return out

    @classmethod
    def from_json(cls, data: Any, what: str | None = None) -> "Validation":
        """The record from JSON; the top-level keys named after a variant are its maker's report (`made`)."""
        from .variants import VARIANTS

        if isinstance(data, dict):
            made = {k: v for k, v in data.items() if k in VARIANTS}
            data = {**{k: v for k, v in data.items() if k not in VARIANTS}, "made": made}
        return super().from_json(data, what)


@dataclass(frozen=True, kw_only=True)
class PreValidation(Record):
    """reference/validate_export.json: what validate_export held on the fp32 files (their sha256s), for validate to
    reuse on the same bytes."""

    FILE: ClassVar[str] = "validate_export.json"
    files: dict[str, str]
    variant: VariantResult
    gates: list[Gate]


# benchmark.json: latency per engine, variant and clip length.
@dataclass(frozen=True, kw_only=True)
class Timing(Record):
    """Warm latency of one engine at one clip length (the first, cold call apart), and the other load it saw."""

    p50_s: float
    p95_s: float
    rtf_p50: float
    runs: int
    cold_s: float
    other_load_max: float | None
    disturbed_runs: int | None


@dataclass(frozen=True, kw_only=True)
class Engine(Record):
    """One engine on one variant: its timings per clip length (onnxruntime: also the encoder alone and the tokens the
    greedy loop emitted), or why it was skipped."""

    status: str | None = None
    reason: str | None = None
    engine: str | None = None
    provider: str | None = None
    variant: str | None = None
    threads: int | None = None
    load_s: float | None = None
    by_length: dict[str, Timing] | None = None
    encoder_by_length: dict[str, Timing] | None = None
    tokens_by_length: dict[str, int] | None = None
    peak_rss_bytes: int | None = None


@dataclass(frozen=True, kw_only=True)
class Gpu(Record):
    """onnxruntime CUDA: the runtime and device it saw and each variant's timings, or why it was skipped."""

    status: str | None = None
    reason: str | None = None
    runtime: str | None = None
    device: str | None = ABSENT  # nvidia-smi's answer (null: no NVIDIA GPU)
    variants: dict[str, Engine] | None = None


@dataclass(frozen=True, kw_only=True)
class Benchmark(Record):
    """benchmark.json: every engine on every variant and clip length."""

    FILE: ClassVar[str] = "benchmark.json"
    clip_lengths_s: list[float]
    runs: int
    threads: int
    cpu: dict[str, Engine]
    ort_cpu: dict[str, Engine]
    gpu: Gpu
    nemo_cpu: Engine | None = None


# What a publish target holds: manifest.json beside each bundle, latest.json beside a model's bundles.
@dataclass(frozen=True, kw_only=True)
class Manifest(Record):
    """manifest.json: what a published bundle holds (every file, with its sha256), from what, by which run, each
    variant's files, the gates' figures. Read back from what earlier versions published too: only the format and
    the files are required."""

    FILE: ClassVar[str] = "manifest.json"
    format: str
    nemo2sherpa: str | None = None
    pipeline_version: str | None = None
    source: dict[str, Any] = field(default_factory=dict)  # Source.identity: kind, name, revision, sha256, ...
    published_at: str | None = None
    run_id: str | None = None
    files: list[FileDigest]
    variants: dict[str, list[str]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # RunFigures' JSON, as the publishing version wrote it
    added: list[str] | None = None  # what this publish added to a bundle that lacked a variant


@dataclass(frozen=True, kw_only=True)
class Latest(Record):
    """latest.json: the newest published bundle of a model (it only moves to a newer revision)."""

    format: str
    model: str | None
    revision: str | None
    revision_date: str | None
    pipeline_version: str | None
    bundle: str
    manifest: str
    published_at: str | None


@dataclass(frozen=True, kw_only=True)
class Usage(Record):
    """What a child process took (child.run_measured): wall time, peak RSS, its process tree's peak memory (None: not
    sampled), CPU time, and the share of the machine's CPUs other processes used meanwhile."""

    wall_s: float
    peak_rss_bytes: int
    peak_tree_bytes: int | None
    cpu_s: float
    other_load: float


@dataclass(frozen=True, kw_only=True)
class EncoderRewrite(Record):
    """An int8 recipe's rewrite of the fp32 encoder (pointwise convolutions as MatMul) and its check: the largest
    difference from the exported graph on the same input, relative to the output's scale."""

    pointwise_convs_as_matmul: int
    rewrite_max_rel_diff: float


@dataclass(kw_only=True)
class MadeReport(Record):
    """What a variant's maker reports (variants.Maker.make), filled in as it goes: each file's bytes and seconds; int8
    also its recipe and the recipe's line, the encoder rewrite's check and each file's integer ops (the whole report:
    reference/quantize.json). The quantize step adds the maker's process's usage. validation.json keeps `recorded()`.
    """

    recipe: str | None = None
    summary: str | None = None
    encoder: EncoderRewrite | None = None
    integer_ops: dict[str, dict[str, int]] | None = None
    files: dict[str, int] | None = None
    timings_s: dict[str, float] | None = None
    usage: Usage | None = None

    def recorded(self) -> "MadeReport":
        """What validation.json keeps of it under the variant's name: how it was made, not the files' bytes and
        timings (validation.json has its own) nor the process's usage."""
        return dataclasses.replace(self, files=None, timings_s=None, usage=None)


# What each step hands on (its small manifest: XCom, convert's results, stdout of `python -m nemo2sherpa <step>`).
@dataclass(frozen=True, kw_only=True)
class ExportSummary(Record):
    """The export step's: the model's spec, its parameter count, the files' sizes and the timings."""

    spec: dict[str, Any]
    params: int
    files: dict[str, int]
    timings_s: dict[str, float]


@dataclass(frozen=True, kw_only=True)
class MetadataResult(Record):
    """The metadata step's: the keys sherpa-onnx reads, the encoders that carry them, those written now."""

    metadata: dict[str, str]
    files: list[str]
    written: list[str]


@dataclass(frozen=True, kw_only=True)
class CompatSummary(Record):
    """The compat step's: each variant's range and each runtime's status, or why the matrix did not run."""

    passed: bool | None = None
    ranges: dict[str, str] | None = None
    runtimes: dict[str, str] | None = None
    seconds: float | None = None
    skipped: str | None = None


@dataclass(frozen=True, kw_only=True)
class Archive(Record):
    """One release archive the package step wrote: its file name, variant, format, size, sha256 and the seconds it
    took."""

    name: str
    variant: str
    format: str
    size: int
    sha256: str
    seconds: float


@dataclass(frozen=True, kw_only=True)
class TestWav(Record):
    """One clip of a release's test_wavs/ (archive.test_wavs): the evaluation clip's name, file, reference text and
    length, and its index in export.json's clips (where sherpa-onnx's text on it is)."""

    __test__ = False  # not a pytest test class, whatever its name
    name: str
    path: Path
    text: str
    duration_s: float
    index: int


@dataclass(frozen=True, kw_only=True)
class PackageResult(Record):
    """The package step's: each release archive and the card's name."""

    archives: list[Archive]
    card: str


MADE_OPTIONS = tuple(o for v in VARIANTS.values() for o in v.options)  # how made variants were made: int8_recipe


@dataclass(frozen=True, kw_only=True)
class ValidationSummary(Record):
    """The validate step's: the verdict, the gates' count, the mode and limits, the headline figures per variant,
    validate's figures (report.Figure, gated apart from reported), and how each made variant was made (`made`: its
    options by name, variants.Variant.options, which the JSON holds beside the rest, as published manifests do)."""

    passed: bool
    gates: int = 0
    mode: str = "full"
    thresholds: dict[str, float | None] = field(default_factory=dict)
    max_abs_diff: dict[str, dict[str, float] | None] = field(default_factory=dict)
    encoder_rel_err: dict[str, float | None] = field(default_factory=dict)
    made: dict[str, str | None] = field(default_factory=dict)
    token_match: dict[str, float | None] = field(default_factory=dict)
    wer_vs_base: dict[str, float] = json_key(f"wer_vs_{BASE.name}", default_factory=dict)
    sherpa_wer_vs_nemo: dict[str, float | None] = field(default_factory=dict)
    figures: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The summary's JSON: `made`'s options in its place, as keys of their own."""
        out = super().to_json()
        return {k: x for key, value in out.items() for k, x in (value.items() if key == "made" else [(key, value)])}

    @classmethod
    def from_json(cls, data: Any, what: str | None = None) -> ValidationSummary:
        """The summary read back: the made variants' options (MADE_OPTIONS) gathered into `made`."""
        if not isinstance(data, dict):
            return super().from_json(data, what)
        made = {k: data[k] for k in MADE_OPTIONS if k in data}
        return super().from_json({**{k: x for k, x in data.items() if k not in made}, "made": made}, what)


P50s = dict[str, dict[str, float]]  # the benchmark step's: sherpa-onnx CPU p50 (s) per variant and clip length


@dataclass(frozen=True, kw_only=True)
class RunFigures(Record):
    """What a run measured, as the publish step hands it to a target: validate's summary and the benchmark's
    sherpa-onnx CPU p50s. The target keeps its JSON as the manifest's `summary`, which readers take as the version that
    published it wrote it (Manifest.summary: a bucket holds manifests of other versions)."""

    validation: ValidationSummary | None = None
    benchmark_p50_s: P50s | None = None
