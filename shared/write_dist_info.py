"""Write minimal .dist-info metadata for every workspace member into a folder on sys.path.

The GPU machine has no uv and no network, so the packages cannot be installed there; their sources go on
PYTHONPATH instead. Entry points (the `sciml.demos` and `sciml.benchmarks` groups that the CLI discovers) and
`importlib.metadata.version` need metadata, which this provides.

Usage: python shared/write_dist_info.py SITE_DIR
"""

import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main(site: Path) -> None:
    site.mkdir(parents=True, exist_ok=True)
    for pyproject in sorted((ROOT / "packages").glob("*/pyproject.toml")):
        data = tomllib.loads(pyproject.read_text())
        project = data["project"]
        name, version = project["name"], project["version"]
        info = site / f"{name.replace('-', '_')}-{version}.dist-info"
        info.mkdir(exist_ok=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        groups = dict(project.get("entry-points", {}))
        if "scripts" in project:
            groups["console_scripts"] = project["scripts"]
        lines = []
        for group, entries in groups.items():
            lines.append(f"[{group}]")
            lines += [f"{key} = {value}" for key, value in entries.items()]
            lines.append("")
        (info / "entry_points.txt").write_text("\n".join(lines))
        print(f"{name} {version}: {sum(len(e) for e in groups.values())} entry points")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
