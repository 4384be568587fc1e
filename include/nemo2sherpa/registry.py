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
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InputError
from .records import Record, Source

if TYPE_CHECKING:
    from .modelspec import ModelSpec

REGISTRY = Path(__file__).resolve().parent / "models.toml"


@dataclass(frozen=True, kw_only=True)
class RegistryEntry(Record):
    """One model of the registry: its Hub repo and the revision it pins; the figures its config must have (checked
    before NeMo loads it: `check`); the variants the refresh keeps published; its license,
    languages and default evaluation set (relative to the registry file)."""

    repo_id: str
    revision: str | None = None
    feat_dim: int | None = None
    vocab_size: int | None = None
    durations: list[int] | None = None
    encoder_layers: int | None = None
    variants: list[str] | None = None
    license: str | None = None
    languages: list[str] | None = None
    eval_set: str | None = None

    def check(self, spec: ModelSpec) -> None:
        """The checkpoint's spec against this entry's figures; InputError naming each that differs (upstream changed
        the model's shape, or the revision is not the registered one)."""
        diffs = []
        for key in ("feat_dim", "vocab_size", "encoder_layers", "durations"):
            want = getattr(self, key)
            got = list(getattr(spec, key)) if key == "durations" else getattr(spec, key)
            if want is not None and got != want:
                diffs.append(f"{key} {got} (registry: {want})")
        if diffs:
            raise InputError(
                f"{self.repo_id}: the checkpoint's config does not match the registry: {'; '.join(diffs)}. Upstream "
                f"changed the model, or the revision is not the one registered; check the revision, then update "
                f"include/nemo2sherpa/models.toml if the change is intended"
            )


def registry_path() -> Path:
    """The registry file in use: NEMO2SHERPA_REGISTRY, else the shipped models.toml."""
    return Path(os.environ.get("NEMO2SHERPA_REGISTRY") or REGISTRY)


@lru_cache(maxsize=1)
def load_registry() -> dict[str, RegistryEntry]:
    """{model name: entry} from NEMO2SHERPA_REGISTRY, else the shipped models.toml; an entry with a key this
    nemo2sherpa does not know, or a value of another type, is refused naming the file, the model and the key."""
    path = registry_path()
    with open(path, "rb") as f:
        return {name: RegistryEntry.from_json(entry, f"{path} [{name}]") for name, entry in tomllib.load(f).items()}


def entry_of(source: Source | None) -> RegistryEntry | None:
    """The registry entry a source manifest came from (a run that named a registry model), else None."""
    return load_registry().get(source.registry) if source is not None and source.registry else None
