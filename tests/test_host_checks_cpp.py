"""The kernels' C++ index math, checked on the host (no GPU): compiles and runs the
brute-force checks of the sm80 scheduler/masks (``tests/cpp/sm80_index_math_check.cc``) and
of the sm90 tile map/mask/scheduler/admission (``xla_ffi/cuda/sm90/test/host_check.cc``),
both over random problems including query ranges (context parallelism's local step).
"""

from __future__ import annotations

import pathlib
import shutil
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("c++")

CHECKS = {
    # name: (source, include dirs, argv: number of random problems)
    "sm80_index_math": ("tests/cpp/sm80_index_math_check.cc",
                        ["xla_ffi/include", "xla_ffi/cuda"], ["60"]),
    "sm90_host": ("xla_ffi/cuda/sm90/test/host_check.cc",
                  ["xla_ffi/include", "xla_ffi/cuda/sm90"], ["300"]),
}


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_host_check(name, tmp_path):
    source, includes, argv = CHECKS[name]
    exe = tmp_path / name
    cmd = [CXX, "-std=c++17", "-O2", *(f"-I{REPO / i}" for i in includes), str(REPO / source),
           "-o", str(exe)]
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=900)
    print(run.stdout[-2000:])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert ", 0 failures" in run.stdout
