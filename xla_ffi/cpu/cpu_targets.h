// The CPU XLA FFI targets of the pybind11 module jax_gna._gna_ext: one table, so that adding a
// target is one declaration plus one row here (python_module.cc hands every row to Python as
// {name: capsule}; jax_gna/_extension.py registers them with platform="cpu").
#pragma once

#include "xla/ffi/api/api.h"
#include "xla/ffi/api/c_api.h"

// Defined with XLA_FFI_DEFINE_HANDLER_SYMBOL in xla_ffi/cpu/*.cc.
XLA_FFI_DECLARE_HANDLER_SYMBOL(GnaWindowBounds);  // window_bounds.cc
XLA_FFI_DECLARE_HANDLER_SYMBOL(GnaTileMap);       // tile_map.cc
XLA_FFI_DECLARE_HANDLER_SYMBOL(GnaTileInterior);  // tile_map.cc

namespace jax_gna::cpu {

struct CpuTarget {
  const char* name;  // the XLA custom-call target name used by jax.ffi.ffi_call
  XLA_FFI_Handler* handler;
};

inline constexpr CpuTarget kCpuTargets[] = {
    {"gna_window_bounds", GnaWindowBounds},
    {"gna_tile_map", GnaTileMap},
    {"gna_tile_interior", GnaTileInterior},
};

}  // namespace jax_gna::cpu
