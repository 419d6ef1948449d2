"""Check the layering of the workspace with import-linter.

The contracts are generated from the folders under packages/, so a new package is covered without editing any
configuration:

* layers: the umbrella ``sciml`` may import anything; domain packages (independent of each other) may import only
  ``sciml_protocols``; ``sciml_protocols`` imports no sciml package;
* independence: no domain package imports another domain package, directly or indirectly.

Usage: python tools/check_imports.py [ROOT]   (exit status 0 when every contract holds)
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from workspace import PROTOCOLS, ROOT, UMBRELLA, domain_members, members


def contracts(root: Path) -> str:
    everything = members(root)
    names = {m.name: m.import_name for m in everything}
    domains = [m.import_name for m in domain_members(root)]
    layers = []
    if UMBRELLA in names:
        layers.append(names[UMBRELLA])
    if domains:
        layers.append(" | ".join(domains))
    if PROTOCOLS in names:
        layers.append(names[PROTOCOLS])
    lines = [
        "[importlinter]",
        "root_packages =",
        *[f"    {m.import_name}" for m in everything],
        "include_external_packages = False",
        "",
        "[importlinter:contract:layers]",
        "name = umbrella > independent domain packages > protocols",
        "type = layers",
        "layers =",
        *[f"    {layer}" for layer in layers],
    ]
    if len(domains) >= 2:
        lines += [
            "",
            "[importlinter:contract:independence]",
            "name = domain packages never import each other",
            "type = independence",
            "modules =",
            *[f"    {d}" for d in domains],
        ]
    return "\n".join(lines) + "\n"


def check(root: Path) -> int:
    config = contracts(root)
    print(config)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(str(m.src) for m in members(root))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "importlinter.ini"
        path.write_text(config)
        # lint-imports caches the import graph next to the config; a temporary folder keeps runs independent.
        beside = Path(sys.executable).parent / "lint-imports"
        command = str(beside) if beside.exists() else "lint-imports"
        result = subprocess.run([command, str(path), "--no-cache"], env=env, cwd=tmp, check=False)
    return result.returncode


if __name__ == "__main__":
    sys.exit(check(Path(sys.argv[1]).resolve() if len(sys.argv) > 1 else ROOT))
