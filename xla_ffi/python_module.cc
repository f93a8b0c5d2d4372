// pybind11 module jax_gna._gna_ext: hands the CPU XLA FFI handlers to Python as PyCapsules.
// It does no registration itself: jax_gna/_extension.py calls registrations() and passes each
// capsule to jax.ffi.register_ffi_target(name, capsule, platform="cpu"), so the JAX API version
// that registers is always the one the user imported. The CUDA kernels live in the separate,
// Python-free libjax_gna_cuda.so (loaded with ctypes), not here.
#include <pybind11/pybind11.h>

#include "cpu/cpu_targets.h"

#ifndef JAX_GNA_VERSION
#define JAX_GNA_VERSION "0.0.0+unknown"
#endif

namespace py = pybind11;

PYBIND11_MODULE(_gna_ext, m) {
  m.doc() = "jax_gna CPU XLA FFI targets (window math of window.h, for tests)";
  m.attr("__version__") = JAX_GNA_VERSION;
  m.def(
      "registrations",
      [] {
        py::dict targets;
        for (const auto& target : jax_gna::cpu::kCpuTargets) {
          // jax.ffi.register_ffi_target accepts an unnamed capsule holding the handler pointer.
          targets[target.name] = py::capsule(reinterpret_cast<void*>(target.handler));
        }
        return targets;
      },
      "Dict {XLA FFI target name: PyCapsule of its handler} of the CPU targets.");
}
