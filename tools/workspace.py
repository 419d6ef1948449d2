"""Facts about the workspace read from the files: the members, their versions, import names and dependencies."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
UMBRELLA = "sciml"
PROTOCOLS = "sciml-protocols"


@dataclasses.dataclass(frozen=True)
class Member:
    name: str
    version: str
    path: Path
    pyproject: dict

    @property
    def import_name(self) -> str:
        return self.name.replace("-", "_")

    @property
    def src(self) -> Path:
        return self.path / "src"

    def requirements(self) -> list[tuple[str, Requirement]]:
        """Every requirement the member declares, with where it was declared."""
        project = self.pyproject.get("project", {})
        found = [("dependencies", Requirement(r)) for r in project.get("dependencies", [])]
        for extra, reqs in project.get("optional-dependencies", {}).items():
            found += [(f"optional-dependencies.{extra}", Requirement(r)) for r in reqs]
        for group, reqs in self.pyproject.get("dependency-groups", {}).items():
            found += [(f"dependency-groups.{group}", Requirement(r)) for r in reqs if isinstance(r, str)]
        return found


def members(root: Path = ROOT) -> list[Member]:
    """The folders under packages/ that hold a pyproject.toml, sorted by name."""
    found = []
    for pyproject in sorted((root / "packages").glob("*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text())
        project = data["project"]
        found.append(Member(canonicalize_name(project["name"]), project["version"], pyproject.parent, data))
    return found


def domain_members(root: Path = ROOT) -> list[Member]:
    return [m for m in members(root) if m.name not in (UMBRELLA, PROTOCOLS)]
