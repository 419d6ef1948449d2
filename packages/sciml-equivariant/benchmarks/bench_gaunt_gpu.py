"""GPU check of the Gaunt product for ``shared/gpu_check.sh``: ``python bench_gaunt_gpu.py OUT.json``.

Runs ``bench_gaunt.py`` on CUDA at the issue's sizes (batch 256, 128 channels, float32) for L = 2, 4, 6, 8, 10, 12
(e3nn up to 10, its construction grows steeply) and L = 16, 20 (ours alone: e3nn caps spherical harmonics at
l = 12), both backends of the function (grid, FFT) and the module ``GauntTensorProduct`` (its fused Triton grid
kernel), forward and forward+backward, and writes the JSON record to OUT.json and the figure next to it. The exit
status is 1 when ours and e3nn differ by more than 1e-5 relative. About a minute or two on an H100.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_gaunt import main  # a sibling script, not a package: importable once its folder is on the path

if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else "gaunt-gpu.json"
    sys.exit(
        main(
            [
                "--device", "cuda",
                "--degrees", "2,4,6,8,10,12,16,20",
                "--backends", "grid,fft,module",
                "--batch", "256",
                "--channels", "128",
                "--e3nn-max", "10",
                "--min-run-time", "0.2",
                "--out", out,
            ]
        )
    )  # fmt: skip
