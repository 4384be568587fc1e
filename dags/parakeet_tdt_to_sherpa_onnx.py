"""parakeet_tdt_to_sherpa_onnx: NeMo Parakeet-TDT checkpoint -> validated sherpa-onnx bundle on S3 and the Hub.

Thin on purpose: params, wiring, venvs. The work is in include/nemo2sherpa (no Airflow there).
`plan` checks the params; then one virtualenv task per step of `nemo2sherpa.pipeline.STEPS`, in
order (the table below); then `publish` publishes what `validate` passed to the run's targets (S3, the
Hugging Face Hub, or both). Heavy stages run in cached virtualenvs built from
include/nemo2sherpa/requirements/*.txt; big files move through a per-run workspace folder, XCom carries
small manifests only.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from airflow.sdk import Asset, AssetAlias, Param, dag, get_current_context, task

INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if INCLUDE not in sys.path:
    sys.path.insert(0, INCLUDE)

from nemo2sherpa import PIPELINE_VERSION, venvs, workspace  # noqa: E402
from nemo2sherpa.benchmark import DEFAULT_LENGTHS as BENCHMARK_LENGTHS, MAX_LENGTH_S as MAX_BENCHMARK_S  # noqa: E402
from nemo2sherpa.evalset import MAX_EVAL_CLIPS  # noqa: E402
from nemo2sherpa.publish import PREFIX_PATTERN  # noqa: E402
from nemo2sherpa.gates import GATE_DEFAULTS, GATES  # noqa: E402
from nemo2sherpa.localattn import DEFAULT_CONTEXT, LOCAL_ATTENTION_PATTERN  # noqa: E402
from nemo2sherpa.pipeline import STEPS, Step  # noqa: E402
from nemo2sherpa.quantize import DEFAULT_INT8_RECIPE, INT8_RECIPES  # noqa: E402
from nemo2sherpa.registry import load_registry  # noqa: E402
from nemo2sherpa.runtimes import KINDS  # noqa: E402
from nemo2sherpa.targets import DEFAULT_TARGETS, HUB_NAMESPACE_PATTERN, TARGET_KINDS  # noqa: E402
from nemo2sherpa.variants import DEFAULT_VARIANTS, VARIANTS  # noqa: E402

# What the tasks say goes through logging, as Airflow's own lines do (stdout is another channel, and can land
# after the task's section has closed).
log = logging.getLogger("nemo2sherpa.dag")

DAG_ID = "parakeet_tdt_to_sherpa_onnx"
WORKSPACE = os.environ.get("NEMO2SHERPA_WORKSPACE", str(Path(__file__).resolve().parents[1] / ".workspace"))
# s3://bucket/prefix: workers share no disk; each keeps a local mirror and the store hands files on
# (nemo2sherpa.workspace), through this Airflow connection.
REMOTE = workspace.is_remote(WORKSPACE)
WORKSPACE_CONN = os.environ.get("NEMO2SHERPA_WORKSPACE_CONN", "aws_default")
VENV_CACHE = str(venvs.default_cache())
# The steps' own queues (STEPS: benchmark's "gpu") mapped to this deployment's queue names.
QUEUES = {"gpu": os.environ.get("NEMO2SHERPA_BENCHMARK_QUEUE", "gpu")}
REGISTRY = sorted(load_registry())
S3_CONNECTIONS = workspace.S3_CONNECTIONS  # NEMO2SHERPA_S3_CONNECTIONS
# Every published bundle becomes an asset event on its S3 URI, through this alias: a downstream DAG can
# schedule on AssetAlias("nemo2sherpa-bundles") (any bundle) or on one bundle's URI.
BUNDLES = AssetAlias("nemo2sherpa-bundles")

# Retries are for transient faults only (a Hub or store outage, a killed worker): permanent failures and failed
# gates fail at once (nemo2sherpa.errors). Backoff doubles the delay each time.
RETRY = dict(retries=2, retry_delay=timedelta(seconds=30), retry_exponential_backoff=True)
VENV = dict(venv_cache_path=VENV_CACHE, system_site_packages=False, expect_airflow=False, **RETRY)

PARAMS = {
    "source": Param(
        "parakeet-tdt-1.1b", type="string", minLength=1, title="Source",
        description=f"A registry model ({', '.join(REGISTRY)}), a Hugging Face repo id (owner/name), "
                    "the path of a .nemo file readable by the workers, or the s3:// URL of a .nemo in your bucket "
                    "(read through the S3 connection below; its sha256 is the revision).",
        examples=REGISTRY,
    ),
    "revision": Param(None, type=["null", "string"], title="Revision",
                      description="Hub branch, tag or commit sha (recorded as the commit sha). Empty: the registry's "
                                  "pin, else main. Ignored for local files (their sha256 is the revision)."),
    "variants": Param(DEFAULT_VARIANTS, type="array", title="Variants", examples=list(VARIANTS),
                      items={"type": "string", "enum": list(VARIANTS)}, minItems=1, uniqueItems=True,
                      description="Which bundles to build and publish. " + " ".join(
                          f"{n}: {v.summary}." for n, v in VARIANTS.items())),
    "int8_recipe": Param(DEFAULT_INT8_RECIPE, type="string", enum=list(INT8_RECIPES), title="int8 recipe",
                         description="How the int8 variant is made. " + " ".join(
                             f"{k}: {r.summary}." for k, r in INT8_RECIPES.items())),
    "local_attention": Param(
        "off", type="string", pattern=LOCAL_ATTENTION_PATTERN, title="Local attention",
        description="off: the checkpoint's own (full) attention, whose memory grows with the square of a recording's "
                    "length (10 minutes at 1.1B: ~16 GB in sherpa-onnx). on, or LEFT,RIGHT encoder frames each side "
                    f"(on: {','.join(map(str, DEFAULT_CONTEXT))}, ~10 s each way): NeMo's local attention, memory "
                    "linear in the length, for long dictation; every gate holds the bundle to NeMo with the same "
                    "attention."),
    "eval_set": Param(None, type=["null", "string"], title="Evaluation set",
                      description="The audio every gate is measured on: a NeMo JSON-lines manifest (audio_filepath, "
                                  "optional text; relative paths from its folder) or a folder of audio files with an "
                                  "optional texts.tsv, readable by the workers, or either as s3:// (a manifest object "
                                  "or a prefix, read through the S3 connection below). Any rate and channel count "
                                  "(resampled). "
                                  "Empty: the registry entry's set, else the built-in English clips."),
    "eval_max_clips": Param(32, type="integer", minimum=1, maximum=MAX_EVAL_CLIPS, title="Evaluation clips at most",
                            description="A larger set is sampled to this many clips (fixed seed)."),
    "targets": Param(DEFAULT_TARGETS, type="array", items={"type": "string", "enum": list(TARGET_KINDS)}, minItems=1,
                     uniqueItems=True, title="Publish to", examples=list(TARGET_KINDS),
                     description="Where the validated bundle goes (one or both). " + " ".join(
                         f"{k}: {x}." for k, x in TARGET_KINDS.items())),
    "hub_namespace": Param("", type="string", pattern=HUB_NAMESPACE_PATTERN, title="Hub namespace",
                           description="The Hugging Face user or organization the Hub repos go under (needed when "
                                       "Publish to holds hub): letters, digits, '-', '_', '.', at most 95 "
                                       "characters. The token (Airflow Variable hf_token) must be able to write "
                                       "there."),
    "hub_private": Param(False, type="boolean", title="Private Hub repos",
                         description="Create the Hub repos private (a repo that exists keeps its visibility)."),
    "aws_conn_id": Param(S3_CONNECTIONS[0], type="string", enum=list(S3_CONNECTIONS), title="S3 connection id",
                         description="Airflow connection (type aws) to the S3-compatible store: bundles are "
                                     "published there, and s3:// sources and evaluation sets are read through it. "
                                     "Put a custom endpoint in its extra as endpoint_url. The connections a run may "
                                     "use are this deployment's choice (NEMO2SHERPA_S3_CONNECTIONS, comma-separated; "
                                     "default aws_default)."),
    "bucket": Param("nemo2sherpa", type="string", pattern=r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", title="Bucket",
                    description="S3 bucket (created if missing, unless Create bucket is off): 3 to 63 characters, "
                                "lowercase letters, digits, '.' and '-', starting and ending with a letter or digit."),
    "create_bucket": Param(True, type="boolean", title="Create bucket",
                           description="Create the bucket if it does not exist. Off: a missing bucket fails publish "
                                       "at once (for stores where buckets are provisioned elsewhere)."),
    "prefix": Param("bundles", type="string", pattern=PREFIX_PATTERN, maxLength=200, title="Key prefix",
                    description="Bundles go to s3://<bucket>/<prefix>/<model>/<revision>-<pipeline version>/. "
                                "Letters, digits, '.', '_', '-' and '/' between segments; no empty, '.' or '..' "
                                "segment; at most 200 characters."),
    "gpu_benchmark": Param(False, type="boolean", title="GPU benchmark",
                           description="Also benchmark with onnxruntime's CUDA provider (onnxruntime-gpu with its "
                                       "CUDA libraries, a ~2.5 GB venv built on the worker's first GPU run; the "
                                       "worker needs only the NVIDIA driver); recorded as skipped, with "
                                       "onnxruntime's reason, where CUDA cannot load."),
    "runtime_matrix": Param(True, type="boolean", title="Runtime matrix",
                            description="Decode every variant with every sherpa-onnx runtime users ship (Python "
                                        "wheels at the supported range's edges, the CLI, sherpa-onnx-node, the C API "
                                        "from Rust; installed into the venv cache on first use) and record which "
                                        "decode it as validated (compatibility.json)."),
    "runtimes": Param(list(KINDS), type="array", items={"type": "string", "enum": list(KINDS)}, minItems=1,
                      uniqueItems=True, title="Runtimes", examples=list(KINDS),
                      description="The kinds of runtime the matrix proves (default every kind). " + " ".join(
                          f"{k}: {x.label}, {x.toolchain}." for k, x in KINDS.items()) + " A kind whose tools a worker "
                          "cannot have is refused at plan, naming them: leave it out (the C client proves the C API "
                          "the Rust crates call)."),
    "benchmark_lengths": Param([int(x) if x == int(x) else x for x in BENCHMARK_LENGTHS], type="array",
                               items={"type": "number", "exclusiveMinimum": 0, "maximum": MAX_BENCHMARK_S},
                               minItems=1, maxItems=8, title="Benchmark clip lengths (s)",
                               description="Clip lengths, in seconds, to time (p50/p95 after a warm-up call)."),
    # One WER limit per variant made from fp32, sherpa-onnx's, the long-recording gate's length (nemo2sherpa.gates).
    **{g.param: Param(g.default, type=["null", "number"], minimum=0, title=g.title,
                     description=f"{g.description} Empty: {g.none_means}.")
       for g in GATES},
    "force": Param(False, type="boolean", title="Force",
                   description="Re-convert and re-publish even if this bundle's manifest is already published."),
}


# Params that reach make_plan by name, as they are.
PLAN_PARAMS = ("int8_recipe", "eval_set", "eval_max_clips", "runtime_matrix", "runtimes", "local_attention")


def _step(plan: dict, step: str, src: dict | None = None):
    """Runs inside the step's virtualenv, in the environment _environment gave it: imports nemo2sherpa from the
    project, not a copy. Permanent failures and failed gates come back as a failed outcome (see _finish); transient
    ones are raised, and retried."""
    import logging
    import sys

    sys.path.insert(0, plan["include_dir"])
    from nemo2sherpa.cli import setup_logging
    from nemo2sherpa.errors import TRANSIENT, describe, failed_outcome, failure_kind
    from nemo2sherpa.pipeline import run_step
    from nemo2sherpa.records import Plan, Source
    from nemo2sherpa.workspace import on_this_worker

    setup_logging()
    try:
        with on_this_worker(plan, src) as (local_plan, local_src, back):
            return back(run_step(step, Plan.from_json(local_plan), Source.from_json(local_src) if local_src else None))
    except Exception as e:  # noqa: BLE001 - classified: only transient faults are raised (and retried)
        if failure_kind(e) == TRANSIENT:
            raise
        logging.getLogger("nemo2sherpa").error("%s failed: %s", step, describe(e))
        return failed_outcome(e, step)  # the worker fails the task at once (no Airflow in this venv to raise it)


def _sync(direction: str):
    """pre/post_execute hook: with an object-store workspace, pull the run's files before a task, push after."""
    def hook(context, result=None):
        if not REMOTE:
            return
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        plan = context["ti"].xcom_pull(task_ids="plan")
        client = S3Hook(aws_conn_id=WORKSPACE_CONN).get_conn()
        getattr(workspace, direction)(client, plan["remote"], workspace.mirror(plan))
    return hook


def _finish(context, result=None):
    """post_execute of a venv step: a permanent failure or a failed gate (handed back by _step) fails the task
    now, without a retry, which could only repeat it; otherwise the step's files are pushed (S3 workspace)."""
    from airflow.sdk.exceptions import AirflowFailException

    from nemo2sherpa.errors import outcome_failure

    failure = outcome_failure(result)
    if failure:
        raise AirflowFailException(failure)
    _sync("push")(context, result)


def _credentials(params: dict) -> dict[str, str]:
    """The run's own credentials for the step that reads its inputs, resolved now, on the worker: the S3
    connection's (only when the run names an s3:// input; only a connection id the deployment allows) and the Hub
    token (the Airflow Variable hf_token). Masked in every log; handed to the step's process in its environment
    (env_vars, which Airflow neither renders nor stores), never in a rendered field or XCom."""
    from airflow.sdk import Variable
    from airflow.sdk.log import mask_secret

    out: dict[str, str] = {}
    token = Variable.get("hf_token", default=None)
    if token:
        mask_secret(token)
        out["HF_TOKEN"] = token
    if any(str(params.get(k) or "").strip().startswith("s3://") for k in ("source", "eval_set")):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        if params["aws_conn_id"] not in S3_CONNECTIONS:  # plan refuses it first; checked again where it is read
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(f"S3 connection {params['aws_conn_id']!r} is not one this deployment allows "
                                       f"({', '.join(S3_CONNECTIONS)}: NEMO2SHERPA_S3_CONNECTIONS)")
        hook = S3Hook(aws_conn_id=params["aws_conn_id"])
        c = hook.get_credentials()
        for secret in (c.secret_key, c.token):
            if secret:
                mask_secret(secret)
        out.update({k: v for k, v in (("AWS_ACCESS_KEY_ID", c.access_key), ("AWS_SECRET_ACCESS_KEY", c.secret_key),
                                      ("AWS_SESSION_TOKEN", c.token), ("AWS_ENDPOINT_URL", hook.conn_config.endpoint_url),
                                      ("AWS_DEFAULT_REGION", hook.conn_config.region_name)) if v})
    return out


def _environment(step: Step):
    """pre_execute of a venv step: its process starts from child.step_environment (the worker's basics, never its
    Airflow connections, variables or credentials, weights-only loading forced); the step that reads the run's
    inputs also gets the run's credentials (_credentials). Then, with an object-store workspace, the pull."""
    def hook(context, result=None):
        import warnings

        from nemo2sherpa.child import step_environment
        from nemo2sherpa.cli import LOG_PLAIN

        # The virtualenv operator (apache-airflow-providers-standard 1.21.0, _calculate_cache_hash) reads its
        # cache-key Variable through airflow.models, which warns in every venv task's log: Airflow's call, saying
        # nothing of the run. That one message is left out (set here, after airflow.configuration put its own
        # "show Airflow's deprecations" filter first).
        warnings.filterwarnings("ignore", message="Using Variable.get from `airflow.models` is deprecated",
                                category=DeprecationWarning)

        creds = _credentials(context["params"]) if step.reads_inputs else None
        task = context["task"]
        task.inherit_env = False
        # its lines (and its children's) without a time of their own: the task log prefixes each with one
        task.env_vars = {**step_environment(dict(os.environ), step.reads_inputs, creds), LOG_PLAIN: "plain"}
        _sync("pull")(context)
    return hook


def _md(text: str) -> str:
    """Text shown in the UI's markdown docs as written: its angle brackets are not HTML."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def step_task(step: Step, **kw):
    """The virtualenv task of one pipeline step: its venv's pinned requirements, its queue, its docs."""
    doc = f"**{step.name}** ({step.venv} venv): {_md(step.what)}. Leaves {_md(step.makes)}." + (
        " A failed gate fails it at once (a verdict, not retried)." if step.verdict else "")
    opts = {**VENV, "pre_execute": _environment(step), "post_execute": _finish, "doc_md": doc, **kw}
    if step.queue:
        opts["queue"] = QUEUES.get(step.queue, step.queue)
    return task.virtualenv(task_id=step.name, requirements=venvs.requirements(step.venv), **opts)(_step)


def steps_table() -> str:
    """The steps as a markdown table, for the DAG's docs in the UI."""
    rows = [f"| `{s.name}` | {s.venv} | {_md(s.what)} | {_md(s.makes)} |" for s in STEPS]
    return "\n".join(["| task | venv | what | leaves |", "|---|---|---|---|", *rows])


def _hub_api():
    """huggingface_hub's client for this worker's Hub (HF_ENDPOINT, else huggingface.co) with the token of the
    Airflow Variable hf_token, masked in every log."""
    from airflow.sdk import Variable
    from airflow.sdk.log import mask_secret

    from nemo2sherpa.hubtarget import hub_api

    token = Variable.get("hf_token", default=None)
    if token:
        mask_secret(token)
    return hub_api(token)


def _targets(p: dict, plan) -> dict:
    """The run's publish targets (param targets, targets.KINDS), each over the run's own settings and clients: the S3
    connection, bucket and prefix; the Hub namespace and the token of the Variable hf_token."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from nemo2sherpa.targets import KINDS, TargetOptions, open_targets

    clients = {"s3": lambda: S3Hook(aws_conn_id=p["aws_conn_id"]).get_conn(), "hub": _hub_api}
    return open_targets({name: KINDS[name].url_from(p) for name in p["targets"]}, clients,
                        TargetOptions(p["create_bucket"], p["hub_private"], plan.reference))


def _publish(plan: dict, src: dict, validated: dict, bench: dict) -> dict:
    """publish's wiring: the run's targets (_targets), the library's publish step over them (targets.publish_all),
    each bundle's asset event when this run published it; the XCom the report plugin reads."""
    from nemo2sherpa.records import Plan, Source, ValidationSummary
    from nemo2sherpa.targets import publish_all, published_xcom

    ctx = get_current_context()
    p = ctx["params"]
    plan, source = Plan.from_json(plan), Source.from_json(src)
    results = publish_all(_targets(p, plan), plan.bundle, source, plan.variants, ctx["run_id"],
                          ValidationSummary.from_json(validated, "validate's XCom"), bench, p["force"])
    for result in results.values():
        if result.announce:
            uri, extra = result.asset_event(source)
            ctx["outlet_events"][BUNDLES].add(Asset(uri), extra=extra)
    return {**published_xcom(results, plan.bundle), "aws_conn_id": p["aws_conn_id"]}


def _classified(task_id: str, work, *args):
    """A task that asks the run's targets: `work(*args)`, its failure failing the task at once (no retry) unless
    the target classified it transient (nemo2sherpa.errors: the store or the Hub unreachable, throttling, 5xx)."""
    from airflow.sdk.exceptions import AirflowFailException

    from nemo2sherpa.errors import TRANSIENT, describe, failure_kind

    try:
        return work(*args)
    except Exception as e:  # noqa: BLE001 - the target classified it (targets.Target)
        if failure_kind(e) == TRANSIENT:
            raise
        raise AirflowFailException(f"{failure_kind(e)} failure, not retried: {task_id}: {describe(e)}") from e


def _unpublished(plan: dict, src: dict) -> bool:
    """unpublished's work: each target of the run asked whether it holds this exact bundle (targets.published_as);
    False (the rest skipped) only when every one does and the run is not forced."""
    from nemo2sherpa.records import Plan, Source
    from nemo2sherpa.targets import published_as

    p = get_current_context()["params"]
    if p["force"]:
        log.info("force: converting and publishing again, whatever is published")
        return True
    plan, source = Plan.from_json(plan), Source.from_json(src)
    held = {name: published_as(t, source, plan) for name, t in _targets(p, plan).items()}
    for name, why in held.items():
        log.info(f"{name}: {why}")
    if all(why.startswith("already published") for why in held.values()):
        log.info(f"{source.name} @ {source.revision}: this exact bundle is published to every target of the run: "
                 f"nothing to do, the remaining tasks are skipped (set force to convert and publish again)")
        return False
    return True


def _plan(ctx) -> dict:
    """plan's work: the params checked (bad input fails the task at once, with the fix: no retry) and the run's
    workspace laid out."""
    from dataclasses import replace

    from airflow.sdk.exceptions import AirflowFailException

    from nemo2sherpa.errors import InputError
    from nemo2sherpa.pipeline import make_plan
    from nemo2sherpa.source import classify

    p = ctx["params"]
    run_key = f"{DAG_ID}/{workspace.run_segment(ctx['run_id'])}"
    try:
        classify(p["source"])
        if "hub" in p["targets"] and not p["hub_namespace"]:
            raise InputError("publishing to the Hub (targets: hub) needs the Hub namespace (hub_namespace): the user "
                             "or organization the repos go under")
        if p["aws_conn_id"] not in S3_CONNECTIONS:
            raise InputError(f"S3 connection {p['aws_conn_id']!r} is not one this deployment allows: choose one "
                             f"of {', '.join(S3_CONNECTIONS)} (NEMO2SHERPA_S3_CONNECTIONS declares them)")
        layout = make_plan((workspace.default_cache() if REMOTE else Path(WORKSPACE)) / run_key, p["source"],
                           revision=p["revision"], variants=p["variants"], gpu=p["gpu_benchmark"],
                           lengths=p["benchmark_lengths"], gates={k: p[k] for k in GATE_DEFAULTS},
                           **{k: p[k] for k in PLAN_PARAMS})
    except InputError as e:
        raise AirflowFailException(str(e)) from None
    if REMOTE:
        layout = replace(layout, run_key=run_key, remote=f"{WORKSPACE.rstrip('/')}/{run_key}")
    layout.ws.mkdir(parents=True, exist_ok=True)
    where = f"{layout.remote} (local mirror {layout.ws})" if REMOTE else layout.ws
    log.info(f"workspace {where}; variants {layout.variants}; int8 recipe {layout.int8_recipe}; "
             f"pipeline {PIPELINE_VERSION}")
    return layout.to_json()


def _keep_failure(context) -> None:
    """on_failure_callback: a failed task keeps its error (XCom `failure`, masked as its log is), for the bundle
    report's failed run. Only where the task runner calls it (it sets `exception`): the DAG processor, which runs it
    for a task that timed out or was killed, has no XCom to write to."""
    if "exception" not in context:
        return
    from airflow.sdk.log import redact

    from nemo2sherpa.errors import FAILURE_XCOM

    error = context["exception"]
    said = (str(error) or type(error).__name__)[:2000] if error else "failed"
    try:
        context["ti"].xcom_push(key=FAILURE_XCOM, value=str(redact(said)))
    except Exception as e:  # noqa: BLE001 - the report then says "its log says why"; the task has failed anyway
        log.warning(f"could not keep the error for the bundle report: {e}")


@dag(
    dag_id=DAG_ID,
    schedule=None,
    catchup=False,
    params=PARAMS,
    tags=["nemo2sherpa", "asr", "sherpa-onnx"],
    max_active_runs=1,
    default_args={"retries": 1, "retry_delay": timedelta(seconds=30), "on_failure_callback": _keep_failure},
    doc_md=f"{__doc__}\n{steps_table()}\n",
)
def parakeet_tdt_to_sherpa_onnx():
    """plan -> the pipeline's steps, one virtualenv task each -> publish."""

    @task(retries=1)
    def plan() -> dict:
        """Check the params (bad input fails here, once, with the fix) and lay out the run's workspace."""
        return _plan(get_current_context())

    @task(outlets=[BUNDLES], pre_execute=_sync("pull"), **RETRY)
    def publish(plan: dict, src: dict, validated: dict, bench: dict) -> dict:
        """Publish to each target of the run: S3 (sha256s, manifest last), the Hub (one commit a variant's repo).
        A bundle already published with every requested variant is up to date (unless force); one that lacks a
        variant gets it added, its other files untouched. Permanent failures (credentials, a missing bucket or
        namespace, a file changed after validation) fail at once; a store or Hub unreachable, throttling or 5xx
        retry with backoff."""
        return _classified("publish", _publish, workspace.local_plan(plan), src, validated, bench)

    @task.short_circuit(ignore_downstream_trigger_rules=True, **RETRY)
    def unpublished(plan: dict, src: dict) -> bool:
        """Go on unless every target already holds this exact bundle (the checkpoint's revision or sha256, this
        pipeline version, every variant asked for, the int8 recipe): then say where it is and skip the rest of the
        run. Force goes on. A target that does not answer is retried; one that refuses fails at once."""
        return _classified("unpublished", _unpublished, workspace.local_plan(plan), src)

    pl = plan()
    # pipeline.STEPS one after the other; the source manifest goes to the steps that read it. A Hub token for
    # private or gated repos (the Airflow Variable `hf_token`) and the S3 connection's keys reach `source` only, in
    # its process's environment (_environment). After `source`, a run whose bundle is published stops.
    first, *rest = STEPS
    src = step_task(first)(pl, first.name)
    done = {first.name: unpublished(pl, src)}
    for prev, step in zip(STEPS, rest):
        done[step.name] = step_task(step)(pl, step.name, src if step.needs_source else None)
        done[prev.name] >> done[step.name]
    publish(pl, src, done["validate"], done["benchmark"])


parakeet_tdt_to_sherpa_onnx()
