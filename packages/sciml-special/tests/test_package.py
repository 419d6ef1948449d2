import subprocess
import sys

import sciml_special


def test_version():
    assert sciml_special.__version__ == "0.1.0"


def test_import_is_light():
    heavy = "{'triton', 'matplotlib', 'tqdm', 'scipy', 'mpmath'}"
    code = f"import sys, sciml_special; print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
