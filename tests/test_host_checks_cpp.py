"""The kernels' C++ checks that run on the host (no GPU), built and run here:

* with g++: the brute-force checks of the sm80 scheduler/masks
  (``tests/cpp/sm80_index_math_check.cc``), of the sm90 tile map/mask/scheduler/admission
  (``xla_ffi/cuda/sm90/test/host_check.cc``) and of the halo forward's halos, masks, gathers,
  plan and admission (``xla_ffi/cuda/halo/test/host_check.cc``), all over random problems
  including query ranges (context parallelism's local step), and the admission of every sm90
  self-test case (``xla_ffi/cuda/sm90/test/cases_check.cc``);
* with nvcc (host code only; skipped without nvcc or the CUTLASS headers): the CuTe layout
  facts the kernels rely on, for every instantiation of the kernel manifest
  (``tests/cpp/sm80_layout_check.cc``, ``xla_ffi/cuda/sm90/test/layout_check.cc``).

``jax_gna/kernel_manifest.h`` comes from ``xla_ffi/generate_kernels.py``, as in the build.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
CXX = shutil.which("g++") or shutil.which("c++")
NVCC = shutil.which("nvcc")

CHECKS = {
    # name: (source, include dirs, argv, what a passing run prints)
    "sm80_index_math": ("tests/cpp/sm80_index_math_check.cc",
                        ["xla_ffi/include", "xla_ffi/cuda"], ["60"], ", 0 failures"),
    "sm90_host": ("xla_ffi/cuda/sm90/test/host_check.cc",
                  ["xla_ffi/include", "xla_ffi/cuda/sm90"], ["300"], ", 0 failures"),
    "halo_host": ("xla_ffi/cuda/halo/test/host_check.cc",
                  ["xla_ffi/include", "xla_ffi/cuda"], ["400"], ", 0 failures"),
    "sm90_selftest_cases": ("xla_ffi/cuda/sm90/test/cases_check.cc",
                            ["xla_ffi/include", "xla_ffi/cuda/sm90"], [],
                            "\n0 case(s) refused"),
}
NVCC_CHECKS = {
    "sm80_layout": ("tests/cpp/sm80_layout_check.cc", ["xla_ffi/include", "xla_ffi/cuda"],
                    "PASS: 0 failures"),
    "sm90_layout": ("xla_ffi/cuda/sm90/test/layout_check.cc",
                    ["xla_ffi/include", "xla_ffi/cuda/sm90"], "sm90 layout check: 0 failures"),
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> pathlib.Path:
    """A directory holding the generated jax_gna/kernel_manifest.h."""
    out = tmp_path_factory.mktemp("generated")
    run = subprocess.run([sys.executable, str(REPO / "xla_ffi" / "generate_kernels.py"),
                          "--out", str(out)], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return out


def _cutlass_include() -> pathlib.Path | None:
    env = os.environ.get("CUTLASS_INCLUDE_DIR")
    if env:
        return pathlib.Path(env)
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = pathlib.Path(spec.submodule_search_locations[0]) / "source" / "include"
    return path if (path / "cute" / "tensor.hpp").exists() else None


def _build_and_run(cmd, exe, argv, marker):
    build = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stderr[-4000:]
    run = subprocess.run([str(exe), *argv], capture_output=True, text=True, timeout=900)
    print(run.stdout[-2000:])
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    assert marker in run.stdout


@pytest.mark.skipif(CXX is None, reason="no C++ compiler")
@pytest.mark.parametrize("name", sorted(CHECKS))
def test_host_check(name, tmp_path, generated):
    source, includes, argv, marker = CHECKS[name]
    exe = tmp_path / name
    cmd = [CXX, "-std=c++17", "-O2", *(f"-I{REPO / i}" for i in includes), f"-I{generated}",
           str(REPO / source), "-o", str(exe)]
    _build_and_run(cmd, exe, argv, marker)


@pytest.mark.skipif(NVCC is None, reason="no nvcc: the CuTe layout checks are CUDA host code")
@pytest.mark.parametrize("name", sorted(NVCC_CHECKS))
def test_layout_check(name, tmp_path, generated):
    cutlass = _cutlass_include()
    if cutlass is None:
        pytest.skip("no CUTLASS/CuTe headers (pip install nvidia-cutlass==4.2.0.0 or set "
                    "CUTLASS_INCLUDE_DIR)")
    source, includes, marker = NVCC_CHECKS[name]
    exe = tmp_path / name
    cmd = [NVCC, "-x", "cu", "-std=c++17", "-O1", "--expt-relaxed-constexpr",
           *(f"-I{REPO / i}" for i in includes), f"-I{generated}", f"-I{cutlass}",
           str(REPO / source), "-o", str(exe)]
    _build_and_run(cmd, exe, [], marker)
