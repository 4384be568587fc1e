"""nemo2sherpa_refresh: on a schedule, re-convert the registry models whose upstream revision changed.

For every model in include/nemo2sherpa/models.toml (one mapped task each) it asks the Hub which commit
the model's revision points at now, asks each publish target of the run (S3: that bundle's manifest.json, whose
key holds the revision and the pipeline version, so a converter fix re-publishes; the Hub: each variant's repo's
manifest.json) what it holds, and triggers parakeet_tdt_to_sherpa_onnx only for the models whose bundle is missing
from a target or lacks a requested variant there.
Everything else is logged as "up to date". Thin on purpose: the checks live in include/nemo2sherpa.
"""

from __future__ import annotations

import logging
import os
import sys
from datetime import timedelta
from pathlib import Path

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import Param, dag, get_current_context, task

INCLUDE = str(Path(__file__).resolve().parents[1] / "include")
if INCLUDE not in sys.path:
    sys.path.insert(0, INCLUDE)

from nemo2sherpa import PIPELINE_VERSION, venvs  # noqa: E402
from nemo2sherpa.workspace import S3_CONNECTIONS  # noqa: E402
from nemo2sherpa.registry import load_registry  # noqa: E402
from nemo2sherpa.targets import DEFAULT_TARGETS, HUB_NAMESPACE_PATTERN, TARGET_KINDS  # noqa: E402
from nemo2sherpa.variants import DEFAULT_VARIANTS, VARIANTS  # noqa: E402

# What the tasks say goes through logging, as Airflow's own lines do (stdout is another channel, and can land
# after the task's section has closed).
log = logging.getLogger("nemo2sherpa.dag")

CONVERT_DAG = "parakeet_tdt_to_sherpa_onnx"
SCHEDULE = os.environ.get("NEMO2SHERPA_REFRESH_SCHEDULE", "@daily")
MODELS = sorted(load_registry())


def _upstream(include_dir: str, model: str) -> dict:
    """Runs in the download venv: the model's upstream commit now. A failure fails this model's mapped task (a
    transient one after retries; a permanent one, such as a repo that is gone, at once), so the run shows which
    models went unchecked; `decide` still runs for the others."""
    import logging
    import sys

    sys.path.insert(0, include_dir)
    from nemo2sherpa.cli import setup_logging
    from nemo2sherpa.errors import TRANSIENT, failed_outcome, failure_kind
    from nemo2sherpa.source import upstream_revision

    setup_logging()
    try:
        return upstream_revision(model).to_json()
    except Exception as e:  # noqa: BLE001 - classified: only transient faults are raised (and retried)
        if failure_kind(e) == TRANSIENT:
            raise
        logging.getLogger("nemo2sherpa").error("%s: %s", model, e)
        return failed_outcome(e)


def _fail_on_outcome(context, result=None):
    """post_execute: a permanent failure handed back by _upstream fails the task now (no retry)."""
    from airflow.sdk.exceptions import AirflowFailException

    from nemo2sherpa.errors import outcome_failure

    failure = outcome_failure(result)
    if failure:
        raise AirflowFailException(failure)


def _allowed_connection(conn_id: str) -> str:
    """conn_id if the deployment allows it (the form refuses others; a conf given another way is checked here)."""
    from airflow.sdk.exceptions import AirflowFailException

    if conn_id not in S3_CONNECTIONS:
        raise AirflowFailException(f"aws_conn_id {conn_id!r} is not one this deployment allows: one of "
                                   f"{', '.join(S3_CONNECTIONS)} (NEMO2SHERPA_S3_CONNECTIONS declares them)")
    return conn_id


def _targets(p: dict) -> dict:
    """The targets the run checks (param targets, targets.KINDS): S3 over the run's connection, the Hub with the token
    of the Airflow Variable hf_token (masked)."""
    from airflow.sdk import Variable
    from airflow.sdk.log import mask_secret

    from nemo2sherpa.targets import KINDS, open_targets

    def hub_api():
        from nemo2sherpa.hubtarget import hub_api

        token = Variable.get("hf_token", default=None)
        if token:
            mask_secret(token)
        return hub_api(token)

    def s3_client():
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=_allowed_connection(p["aws_conn_id"])).get_conn()

    if "hub" in p["targets"] and not p["hub_namespace"]:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException("checking the Hub (targets: hub) needs the Hub namespace (hub_namespace)")
    return open_targets({name: KINDS[name].url_from(p) for name in p["targets"]}, {"s3": s3_client, "hub": hub_api})


@dag(
    dag_id="nemo2sherpa_refresh",
    schedule=SCHEDULE,
    start_date=None,
    catchup=False,
    max_active_runs=1,
    tags=["nemo2sherpa"],
    default_args={"retries": 1, "retry_delay": timedelta(minutes=5)},
    params={
        "aws_conn_id": Param(S3_CONNECTIONS[0], type="string", enum=list(S3_CONNECTIONS), title="S3 connection id",
                             description="Where the bundles are published (as in the conversion DAG; the ids a run "
                                         "may use: NEMO2SHERPA_S3_CONNECTIONS)."),
        "bucket": Param("nemo2sherpa", type="string", title="Bucket", description="Bucket of the published bundles."),
        "prefix": Param("bundles", type="string", title="Key prefix", description="Prefix of the published bundles."),
        "variants": Param(DEFAULT_VARIANTS, type="array", items={"type": "string", "enum": list(VARIANTS)},
                          examples=list(VARIANTS), minItems=1, uniqueItems=True, title="Variants",
                          description="A bundle without one of these is converted again (multi-select)."),
        "targets": Param(DEFAULT_TARGETS, type="array", items={"type": "string", "enum": list(TARGET_KINDS)},
                         minItems=1, uniqueItems=True, title="Published to", examples=list(TARGET_KINDS),
                         description="The targets checked, and published to by the conversions triggered."),
        "hub_namespace": Param("", type="string", pattern=HUB_NAMESPACE_PATTERN, title="Hub namespace",
                               description="The Hub user or organization of the repos (when Published to holds "
                                           "hub); the token is the Airflow Variable hf_token."),
        "force": Param(False, type="boolean", title="Force",
                       description="Trigger a conversion of every registry model, published or not."),
    },
    doc_md=__doc__,
)
def nemo2sherpa_refresh():
    """upstream_revision per registry model (mapped) -> decide -> convert (triggers) -> all_checked."""

    upstream = task.virtualenv(task_id="upstream_revision", requirements=venvs.requirements("download"),
                               venv_cache_path=str(venvs.default_cache()), system_site_packages=False,
                               expect_airflow=False, post_execute=_fail_on_outcome,
                               retry_exponential_backoff=True)(_upstream)

    @task(trigger_rule="all_done")  # also when some models could not be checked: the others are still decided
    def decide(checked: list[dict]) -> list[dict]:
        """Compare each model's upstream commit with what is published; the conf of each conversion due."""
        from airflow.sdk.exceptions import AirflowFailException

        from nemo2sherpa.targets import published_state

        p = get_current_context()["params"]
        targets = _targets(p)
        checked = [c for c in checked if c]  # a failed model's task pushed nothing
        due = []
        for c in checked:
            reasons = {name: "forced" if p["force"] else published_state(t.manifest(c["name"], c["revision"]),
                                                                         p["variants"])
                       for name, t in targets.items()}
            reason = "; ".join(f"{name}: {r}" for name, r in reasons.items() if r)
            if not reason:
                log.info(f"{c['name']:<24} up to date: {c['revision'][:12]} ({PIPELINE_VERSION}) is published "
                         f"({', '.join(targets)})")
                continue
            log.info(f"{c['name']:<24} convert {c['revision'][:12]}: {reason}")
            due.append({"source": c["name"], "revision": c["revision"], "variants": p["variants"],
                        "aws_conn_id": p["aws_conn_id"], "bucket": p["bucket"], "prefix": p["prefix"],
                        "targets": p["targets"], "hub_namespace": p["hub_namespace"], "force": bool(p["force"])})
        unchecked = sorted(set(MODELS) - {c["name"] for c in checked})
        for name in unchecked:
            log.info(f"{name:<24} could not check: its upstream_revision task failed (see that task's log)")
        log.info(f"{len(due)} to convert, {len(checked) - len(due)} up to date, {len(unchecked)} unchecked")
        if not checked:
            raise AirflowFailException("no registry model could be checked: see the upstream_revision tasks")
        return due

    @task(trigger_rule="all_done", retries=0)
    def all_checked(checked: list[dict]) -> None:
        """Fails the run when a model could not be checked, after the conversions due were triggered: the run's
        state says so, and the failed mapped upstream_revision task names the model."""
        from airflow.sdk.exceptions import AirflowFailException

        unchecked = sorted(set(MODELS) - {c["name"] for c in checked if c})
        if unchecked:
            raise AirflowFailException(f"not checked: {', '.join(unchecked)} (their upstream_revision tasks failed)")
        log.info(f"all {len(MODELS)} registry models checked")

    checked = upstream.partial(include_dir=INCLUDE).expand(model=MODELS)
    due = decide(checked)
    convert = TriggerDagRunOperator.partial(task_id="convert", trigger_dag_id=CONVERT_DAG, wait_for_completion=False,
                                            retries=0).expand(conf=due)
    convert >> all_checked(checked)


nemo2sherpa_refresh()
