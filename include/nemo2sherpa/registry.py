"""The model registry (models.toml): names the DAG form offers and what each should look like."""

from __future__ import annotations

import tomllib
from functools import lru_cache
from pathlib import Path
from typing import Any

REGISTRY = Path(__file__).resolve().parent / "models.toml"


@lru_cache(maxsize=1)
def load_registry() -> dict[str, dict[str, Any]]:
    with open(REGISTRY, "rb") as f:
        return tomllib.load(f)
