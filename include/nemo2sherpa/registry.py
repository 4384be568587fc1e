"""The model registry (models.toml): names the DAG form offers and what each should look like.

An entry may pin `revision` (a branch, tag or commit sha): a run that names the model without a revision
converts that one. An entry may name its default evaluation set (`eval_set`: a manifest or folder, relative to
the registry file), its `license` (written into the release archives' model cards and the Hub repos' front
matter) and its `languages` (ISO 639-1 codes, for the Hub's front matter). NEMO2SHERPA_REGISTRY points at another
file of the same form (a team's own list).
"""

from __future__ import annotations

import os
import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

REGISTRY = Path(__file__).resolve().parent / "models.toml"


def registry_path() -> Path:
    """The registry file in use: NEMO2SHERPA_REGISTRY, else the shipped models.toml."""
    return Path(os.environ.get("NEMO2SHERPA_REGISTRY") or REGISTRY)


@lru_cache(maxsize=1)
def load_registry() -> dict[str, dict[str, Any]]:
    """{model name: entry} from NEMO2SHERPA_REGISTRY, else the shipped models.toml."""
    with open(registry_path(), "rb") as f:
        return tomllib.load(f)
