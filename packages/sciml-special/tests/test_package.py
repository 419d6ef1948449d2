import json
import subprocess
import sys

import sciml_special

# What importing sciml_special adds to the modules `import torch` loads (torch 2.15 itself imports tqdm when it is
# installed, through torch.hub).
CODE = """
import json, sys
import torch
before = {m.split('.')[0] for m in sys.modules}
import sciml_special
after = {m.split('.')[0] for m in sys.modules}
print(json.dumps(sorted(after - before)))
"""


def test_version():
    assert sciml_special.__version__ == "0.1.0"


def test_import_is_light():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, check=True).stdout
    added = set(json.loads(out.strip().splitlines()[-1]))
    assert "sciml_special" in added
    assert not added & {"triton", "matplotlib", "tqdm", "scipy", "mpmath"}
