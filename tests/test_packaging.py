"""The wheel installs `kernels/` as `mme5.kernels` and nothing as a bare top-level `kernels`."""

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).parents[1]


def test_wheel_maps_kernels_under_the_mme5_namespace(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
        ],
        check=True,
        cwd=tmp_path,
    )
    (wheel,) = wheels.glob("mme5-*.whl")
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site), str(wheel)],
        check=True,
        cwd=tmp_path,
    )
    assert (site / "mme5" / "kernels" / "api.py").is_file()
    assert (site / "mme5" / "backbones" / "demo_vocabulary.txt").is_file()  # the tiny twins' tokenizer text
    assert not (site / "kernels").exists()
    probe = (
        "import importlib.util, sys; sys.path.insert(0, sys.argv[1]);"
        "import mme5.kernels as k; assert k.__file__.startswith(sys.argv[1]), k.__file__;"
        "assert callable(k.infonce); print(importlib.util.find_spec('kernels'))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe, str(site)], check=True, cwd=tmp_path, capture_output=True, text=True
    ).stdout
    assert out.strip() == "None"
