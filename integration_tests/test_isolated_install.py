"""sciml-protocols installs as a wheel on its own and importing it stays light."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_protocols_import_alone_from_a_wheel():
    uv = shutil.which("uv")
    assert uv is not None, "uv must be on PATH (it runs this test suite)"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("UV_PROJECT_ENVIRONMENT", "VIRTUAL_ENV"))}
    code = "import json, sys, sciml_protocols; print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    result = subprocess.run(
        [uv, "run", "--isolated", "--no-editable", "--frozen", "--package", "sciml-protocols", "python", "-c", code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout.strip().splitlines()[-1]))
    assert "sciml_protocols" in loaded
    assert not loaded & {"triton", "matplotlib", "tqdm", "scipy", "sciml"}
