"""The repository's own gates must be able to fail: plant the mistakes they exist for in a copy of the workspace."""

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run_tool(name, root):
    return subprocess.run(
        [sys.executable, str(ROOT / "tools" / name), str(root)], capture_output=True, text=True, check=False
    )


def add_member(root, name, body="", deps=('"sciml-protocols>=0.1,<0.2"',)):
    module = name.replace("-", "_")
    folder = root / "packages" / name
    (folder / "src" / module).mkdir(parents=True)
    (folder / "src" / module / "__init__.py").write_text(body)
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [project]
            name = "{name}"
            version = "0.1.0"
            dependencies = [{", ".join(deps)}]
            """
        )
    )
    pyproject = root / "pyproject.toml"
    text = pyproject.read_text().replace(
        "[tool.uv.sources]\n", f"[tool.uv.sources]\n{name} = {{ workspace = true }}\n", 1
    )
    pyproject.write_text(text)


@pytest.fixture
def workspace(tmp_path):
    shutil.copytree(ROOT / "packages", tmp_path / "packages", ignore=shutil.ignore_patterns("tests", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    add_member(tmp_path, "sciml-alpha", "import sciml_protocols\n")
    add_member(tmp_path, "sciml-beta", "from sciml_protocols import Solution\n")
    return tmp_path


def test_imports_gate_passes_on_a_clean_copy(workspace):
    result = run_tool("check_imports.py", workspace)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "sciml_alpha | sciml_beta" in result.stdout
    assert "independence" in result.stdout


def test_imports_gate_fails_when_a_domain_package_imports_another(workspace):
    init = workspace / "packages" / "sciml-alpha" / "src" / "sciml_alpha" / "__init__.py"
    init.write_text("import sciml_protocols\nfrom sciml_beta import Solution\n")
    result = run_tool("check_imports.py", workspace)
    assert result.returncode != 0
    assert "BROKEN" in result.stdout
    assert "sciml_alpha -> sciml_beta" in result.stdout


def test_imports_gate_fails_when_protocols_import_a_domain_package(workspace):
    planted = workspace / "packages" / "sciml-protocols" / "src" / "sciml_protocols" / "_planted.py"
    planted.write_text("import sciml_alpha\n")
    result = run_tool("check_imports.py", workspace)
    assert result.returncode != 0
    assert "sciml_protocols._planted -> sciml_alpha" in result.stdout


def test_versions_gate_passes_on_a_clean_copy(workspace):
    result = run_tool("check_versions.py", workspace)
    assert result.returncode == 0, result.stdout
    expected = len(list((ROOT / "packages").glob("*/pyproject.toml"))) + 2  # the two planted members
    assert f"{expected} members" in result.stdout


def test_versions_gate_fails_when_a_range_excludes_the_workspace_version(workspace):
    pyproject = workspace / "packages" / "sciml" / "pyproject.toml"
    text = pyproject.read_text()
    assert '"sciml-protocols[plot]>=0.1,<0.2"' in text
    pyproject.write_text(text.replace('"sciml-protocols[plot]>=0.1,<0.2"', '"sciml-protocols[plot]>=0.5"'))
    result = run_tool("check_versions.py", workspace)
    assert result.returncode == 1
    assert "excludes the workspace version sciml-protocols 0.1.0" in result.stdout


def test_versions_gate_fails_on_sideways_dependency_and_missing_source(workspace):
    add_member(workspace, "sciml-gamma", deps=('"sciml-alpha>=0.1"',))
    pyproject = workspace / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("sciml-beta = { workspace = true }\n", ""))
    result = run_tool("check_versions.py", workspace)
    assert result.returncode == 1
    assert "sciml-gamma (dependencies): depends on domain package sciml-alpha" in result.stdout
    assert "sciml-beta: missing from [tool.uv.sources]" in result.stdout


def test_versions_gate_requires_a_range(workspace):
    add_member(workspace, "sciml-delta", deps=('"sciml-protocols"',))
    result = run_tool("check_versions.py", workspace)
    assert result.returncode == 1
    assert "sciml-protocols has no version range" in result.stdout


def is_triton_jit(decorator):
    """``@triton.jit``, ``@triton.jit(...)`` or a bare ``@jit`` (not ``torch.jit.script`` and the like)."""
    import ast

    name = ast.unparse(decorator.func if isinstance(decorator, ast.Call) else decorator)
    return name in ("triton.jit", "jit")


def nested_triton_kernels(root):
    """``file:line name`` of every ``@triton.jit`` function under ``root`` that is not defined at module level."""
    import ast

    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for parent in ast.walk(tree):
            if isinstance(parent, ast.Module):
                continue
            for node in ast.iter_child_nodes(parent):
                if isinstance(node, ast.FunctionDef) and any(is_triton_jit(d) for d in node.decorator_list):
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}")
    return found


def test_triton_kernels_are_defined_at_module_level(tmp_path):
    # Triton 3.2 and 3.3 (PyTorch 2.6 and 2.7) resolve the names a kernel uses through its module's globals: a
    # kernel defined in a function, next to a local `import triton.language as tl`, fails to compile there with
    # NameError('tl is not defined'). Kernels live in modules of their own, imported when first launched.
    for source in sorted((ROOT / "packages").glob("*/src")):  # the shipped code (tests run on CI's Triton)
        assert nested_triton_kernels(source) == []
    planted = tmp_path / "closure.py"
    planted.write_text(
        "import torch\n\n\ndef build():\n    import triton\n\n    @triton.jit(debug=True)\n    def kernel(x_ptr):\n"
        "        pass\n\n    @torch.jit.script\n    def scripted(x):\n        return x\n"
    )
    assert nested_triton_kernels(tmp_path) == ["closure.py:8 kernel"]


PTX = """
.visible .entry k(
	.param .u64 k_param_0
)
{
	.reg .b32 	%r<4>;
$L__func_begin0:
	.loc	1 10 0
	ld.param.u64 	%rd1, [k_param_0];
$L__tmp0:
	.loc	1 12 4
	ld.global.b32 	%r1, [%rd1];
	add.f32 	%r2, %r1, %r1;
	st.global.b32 	[%rd1], %r2;
	ret;
$L__tmp1:
$L__func_end0:
}
	.file	1 "/a/kernels.py"
	.section	.debug_abbrev
	{
.b8 1
	}
"""


def test_ptx_digest_ignores_debug_information_only():
    # shared/triton_compile_check.py --ptx-digest: moving kernel code into a @triton.jit helper changes only line
    # information and inlining labels; the digest must not see those, and must see any change to the code
    import importlib.util

    spec = importlib.util.spec_from_file_location("compile_check", ROOT / "shared" / "triton_compile_check.py")
    assert spec is not None
    assert spec.loader is not None
    check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(check)
    digest = check.ptx_digest(PTX)
    moved = PTX.replace(".loc\t1 12 4", ".loc\t2 3 8").replace("$L__tmp1:", "$L__tmp1:\n$L__tmp2:")
    moved = moved.replace('"/a/kernels.py"', '"/b/helpers.py"').replace(".b8 1", ".b8 7")
    assert check.ptx_digest(moved) == digest
    assert check.ptx_digest(PTX.replace("add.f32", "mul.f32")) != digest  # another instruction
    assert check.ptx_digest(PTX.replace("%r<4>", "%r<5>")) != digest  # another register count
    assert check.ptx_digest(PTX.replace("$L__func_end0", "$L__BB0_1")) != digest  # a branch target stays
    record = {"triton": "3.9.0", "arch": 90, "launches": [["case a", "k", digest], ["case b", "k", digest]]}
    assert check.compare_digests(record, record) == 0
    other = {**record, "launches": [["case a", "k", digest], ["case b", "k", "0" * 64]]}
    assert check.compare_digests(other, record) == 1
    assert check.compare_digests({**record, "launches": record["launches"][:1]}, record) == 1  # one launch fewer
