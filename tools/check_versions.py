"""Check that every internal dependency range admits the workspace version of the package it names.

uv does not check this: ``sciml-protocols>=0.5`` in a member still locks and syncs against the workspace copy 0.1.0,
and the mistake only shows when the wheel is installed from an index. Also checks that every member is a workspace
source of the root (otherwise uv would look for it on the index) and that internal dependencies carry a range.

Usage: python tools/check_versions.py [ROOT]   (exit status 0 when every range is consistent)
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.utils import canonicalize_name
from packaging.version import Version

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workspace import ROOT, members


def problems(root: Path) -> list[str]:
    found: list[str] = []
    everything = members(root)
    versions = {m.name: Version(m.version) for m in everything}
    root_sources = tomllib.loads((root / "pyproject.toml").read_text()).get("tool", {}).get("uv", {}).get("sources", {})
    sources = {canonicalize_name(k): v for k, v in root_sources.items()}
    for member in everything:
        if sources.get(member.name) != {"workspace": True}:
            found.append(f"{member.name}: missing from [tool.uv.sources] of the root as {{ workspace = true }}")
        for where, req in member.requirements():
            name = canonicalize_name(req.name)
            if name not in versions:
                continue
            if member.name != "sciml" and name != "sciml-protocols" and name != member.name:
                found.append(f"{member.name} ({where}): depends on domain package {name}; use integration_tests/")
            if not str(req.specifier) and name != member.name:
                found.append(f"{member.name} ({where}): {req} has no version range")
            elif not req.specifier.contains(versions[name], prereleases=True):
                found.append(f"{member.name} ({where}): {req} excludes the workspace version {name} {versions[name]}")
    return found


def main(root: Path) -> int:
    found = problems(root)
    for line in found:
        print(f"versions: {line}")
    if not found:
        print(f"versions: {len(members(root))} members, every internal range admits the workspace version")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
