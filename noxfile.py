"""Every check CI runs. `uv run nox` runs them all; `uv run nox -l` lists them; `uv run nox -s NAME` runs one.

Per-package sessions are parametrized over the folders under packages/, so a new package gets its own sessions
without editing this file. Each of them installs only that package, its declared dependencies and its test group
(`uv sync --frozen --package P --group test`) into a fresh environment.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import nox

sys.path.insert(0, str(Path(__file__).parent / "tools"))
from workspace import members

nox.options.default_venv_backend = "uv"
nox.options.error_on_missing_interpreters = True
nox.options.reuse_venv = "no"

ROOT = Path(__file__).parent
PACKAGES = [m.name for m in members(ROOT)]
IMPORT_NAMES = {m.name: m.import_name for m in members(ROOT)}
FORBIDDEN_AT_IMPORT = ("triton", "matplotlib", "tqdm")
# Prints, as JSON, the top-level modules that importing {module} adds to those `import torch` loads, and all of them.
LOADED_BY_IMPORT = (
    "import importlib, json, sys\n"
    "import torch\n"
    "before = {{m.split('.')[0] for m in sys.modules}}\n"
    "importlib.import_module({module!r})\n"
    "after = {{m.split('.')[0] for m in sys.modules}}\n"
    "print(json.dumps({{'added': sorted(after - before), 'all': sorted(after)}}))\n"
)


def sync(session: nox.Session, *args: str) -> None:
    """Install exactly what `args` select from uv.lock into the session's own environment."""
    env = {"UV_PROJECT_ENVIRONMENT": session.virtualenv.location, "UV_PYTHON": session.virtualenv.location}
    session.run_install("uv", "sync", "--frozen", "--no-default-groups", *args, env=env, silent=True)


def assert_import_is_light(session: nox.Session, package: str) -> None:
    """Import the package alone and fail if that loaded triton, matplotlib or tqdm, or another sciml package.

    torch itself may import some of these (torch 2.15 loads tqdm through torch.hub when it is installed), so only
    what the package adds on top of ``import torch`` counts.
    """
    module = IMPORT_NAMES[package]
    allowed = {module, "sciml_protocols"} if package != "sciml" else None
    out = session.run("python", "-I", "-c", LOADED_BY_IMPORT.format(module=module), silent=True)
    report = json.loads(str(out).strip().splitlines()[-1])
    heavy = sorted(set(report["added"]) & set(FORBIDDEN_AT_IMPORT))
    if heavy:
        session.error(f"importing {module} loaded {heavy}; import them lazily where they are used")
    if allowed is not None:
        siblings = sorted(m for m in report["all"] if m.startswith("sciml") and m not in allowed)
        if siblings:
            session.error(f"importing {module} loaded other sciml packages {siblings}")
    session.log(f"import {module}: ok (adds none of {', '.join(FORBIDDEN_AT_IMPORT)} to what torch loads)")


def has_interpret_tests(package: str) -> bool:
    tests = ROOT / "packages" / package / "tests"
    return any("mark.interpret" in p.read_text() for p in tests.rglob("*.py"))


@nox.session(venv_backend="none")
def lock(session: nox.Session) -> None:
    """uv.lock agrees with every pyproject.toml (uv lock --check)."""
    session.run("uv", "lock", "--check")


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    sync(session, "--only-group", "lint")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    """pyright over every package (strict for sciml-protocols)."""
    sync(session, "--all-packages", "--all-extras", "--group", "typecheck")
    session.run("pyright")
    session.run("pyright", "-p", "packages/sciml-protocols")


@nox.session
def imports(session: nox.Session) -> None:
    """import-linter: umbrella > independent domain packages > protocols, no sideways imports."""
    sync(session, "--only-group", "lint")
    session.run("python", "tools/check_imports.py")


@nox.session
def versions(session: nox.Session) -> None:
    """Every internal dependency range admits the workspace version of the package it names."""
    sync(session, "--only-group", "lint")
    session.run("python", "tools/check_versions.py")


@nox.session
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def tests(session: nox.Session, package: str) -> None:
    """One package alone: its own environment, an import check, then its tests and doctests."""
    sync(session, "--package", package, "--group", "test")
    assert_import_is_light(session, package)
    folder = Path("packages") / package
    # pytest exits with status 5 when it collects nothing, which fails the session: a package must have tests.
    session.run("pytest", str(folder / "tests"), str(folder / "src"), "-m", "not interpret", *session.posargs)


@nox.session
@nox.parametrize("package", PACKAGES, ids=PACKAGES)
def interpret(session: nox.Session, package: str) -> None:
    """Triton kernels against their PyTorch references on CPU under TRITON_INTERPRET=1."""
    if not has_interpret_tests(package):
        session.skip(f"{package} has no Triton kernels (no test marked interpret)")
    sync(session, "--package", package, "--group", "test", "--all-extras")
    session.run(
        "pytest",
        str(Path("packages") / package / "tests"),
        "-m",
        "interpret",
        *session.posargs,
        env={"TRITON_INTERPRET": "1"},
    )


@nox.session
def integration(session: nox.Session) -> None:
    """All packages together: integration_tests/ (cross-package use and the repository checks)."""
    sync(session, "--all-packages", "--all-extras", "--group", "test", "--group", "lint")
    session.run("pytest", "integration_tests", *session.posargs)


@nox.session(venv_backend="none")
def wheels(session: nox.Session) -> None:
    """Build every package, install each wheel alone into a fresh environment and import it."""
    with tempfile.TemporaryDirectory() as tmp:
        dist = Path(tmp) / "dist"
        session.run("uv", "build", "--all-packages", "--out-dir", str(dist), silent=True)
        built = sorted(p.name for p in dist.glob("*.whl"))
        session.log(f"built {built}")
        for package in PACKAGES:
            wheel = next(dist.glob(f"{package.replace('-', '_')}-*.whl"))
            venv = Path(tmp) / f"venv-{package}"
            session.run("uv", "venv", "--quiet", str(venv), silent=True)
            python = str(venv / "bin" / "python")
            # Internal dependencies come from the freshly built wheels, everything else from the package index.
            session.run("uv", "pip", "install", "--quiet", "--python", python, "--find-links", str(dist), str(wheel))
            module = IMPORT_NAMES[package]
            out = session.run(python, "-I", "-c", LOADED_BY_IMPORT.format(module=module), external=True, silent=True)
            heavy = sorted(set(json.loads(str(out).strip().splitlines()[-1])["added"]) & set(FORBIDDEN_AT_IMPORT))
            if heavy:
                session.error(f"the {package} wheel: importing {module} loaded {heavy}")
            code = f"import {module}; print({module}.__name__, {module}.__version__, 'imports alone')"
            session.run(python, "-I", "-c", code, external=True)


@nox.session
def demo(session: nox.Session) -> None:
    """The main job end to end: sciml demo --quick (report written), sciml bench --quick, sciml info."""
    sync(session, "--package", "sciml", "--all-extras")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "report"
        session.run("sciml", "demo", "--quick", "--out", str(out))
        for name in ("index.html", "results.json"):
            if not (out / name).is_file():
                session.error(f"sciml demo did not write {name}")
        session.run("sciml", "bench", "--quick", "--min-run-time", "0.05", "--json", str(Path(tmp) / "bench.json"))
    session.run("sciml", "info")
