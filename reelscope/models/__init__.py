"""The model catalogue: which model files reelscope uses, read from ``catalogue.toml``."""

from __future__ import annotations

import importlib.util
import tomllib
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from reelscope.digest import sha256_file
from reelscope.errors import ModelError

__all__ = ["ModelSpec", "catalogue", "model"]


@dataclass(frozen=True)
class ModelSpec:
    key: str
    name: str
    task: str
    package: str
    files: tuple[str, ...]
    sha256: tuple[str, ...] = ()
    licence: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.sha256) != len(self.files):
            raise ModelError(
                f"model {self.name}: the catalogue gives {len(self.sha256)} sha256 for "
                f"{len(self.files)} files; every file needs its own"
            )

    def paths(self) -> tuple[Path, ...]:
        """Absolute paths of this model's files; ``pkg:rel`` names another package."""
        out = []
        for entry in self.files:
            package, _, rel = entry.rpartition(":")
            out.append(_package_dir(package or self.package) / rel)
        for path in out:
            if not path.is_file():
                raise ModelError(
                    f"model {self.name}: file {path} is missing; "
                    f"reinstall the package that ships it ({self.package})"
                )
        return tuple(out)

    def verify(self) -> tuple[Path, ...]:
        """Paths of the files after checking their sha256 against the catalogue."""
        paths = self.paths()
        for path, expected in zip(paths, self.sha256, strict=True):
            if sha256_file(path) != expected:
                raise ModelError(
                    f"model {self.name}: {path} is damaged (sha256 mismatch); reinstall its package"
                )
        return paths


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(f"model package {package!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@cache
def catalogue() -> dict[str, ModelSpec]:
    raw = tomllib.loads((Path(__file__).parent / "catalogue.toml").read_text(encoding="utf-8"))
    known = {"name", "task", "package", "files", "sha256", "licence"}
    return {
        key: ModelSpec(
            key=key,
            name=entry["name"],
            task=entry["task"],
            package=entry["package"],
            files=tuple(entry["files"]),
            sha256=tuple(entry.get("sha256", ())),
            licence=entry.get("licence", ""),
            extra={k: v for k, v in entry.items() if k not in known},
        )
        for key, entry in raw.items()
    }


def model(key: str) -> ModelSpec:
    try:
        return catalogue()[key]
    except KeyError:
        raise ModelError(f"no model {key!r} in the catalogue") from None
