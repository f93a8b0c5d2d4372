// Kernel registry: the one C++ table of compiled GNA kernel instantiations. Each
// instantiation file (one dtype x head dim x direction per .cu file, generated from
// jax_gna/kernel_manifest.py by xla_ffi/generate_kernels.py) registers itself with
// JAX_GNA_REGISTER_FWD / JAX_GNA_REGISTER_BWD; the FFI handlers look kernels up here by
// (backend, dtype, head dims), and `jax_gna_compiled_kernels()` lists the table so the
// Python support table (jax_gna/backends.py) can intersect what a backend supports with
// what this build compiled.
#pragma once

#include <cuda_runtime.h>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "jax_gna/params.h"

namespace jax_gna {

using FwdLaunchFn = cudaError_t (*)(const FwdParams&, cudaStream_t);
using BwdLaunchFn = cudaError_t (*)(const BwdParams&, cudaStream_t);

struct KernelKey {
  const char* backend;  // "sm80", "sm90", ...
  DType dtype;
  int head_dim;
  int head_dim_v;
};

struct FwdKernel {
  KernelKey key;
  int q_tile_tokens;   // tokens per Q tile (product of TileShape::q)
  int kv_tile_tokens;  // tokens per KV tile (product of TileShape::kv)
  FwdLaunchFn launch;
};

struct BwdKernel {
  KernelKey key;
  int q_tile_tokens;
  int kv_tile_tokens;
  BwdLaunchFn launch;
};

// Registration happens from static initialisers of the instantiation files.
bool register_fwd(const FwdKernel& kernel);
bool register_bwd(const BwdKernel& kernel);

const FwdKernel* find_fwd(std::string_view backend, DType dtype, int head_dim, int head_dim_v);
const BwdKernel* find_bwd(std::string_view backend, DType dtype, int head_dim, int head_dim_v);

// One line per instantiation: "<direction> <backend> <dtype> <head_dim> <head_dim_v>
// <q_tile_tokens> <kv_tile_tokens>", e.g. "fwd sm80 bf16 128 128 128 64".
std::string describe_compiled_kernels();

const char* dtype_name(DType dtype);

}  // namespace jax_gna

#define JAX_GNA_CONCAT_INNER(a, b) a##b
#define JAX_GNA_CONCAT(a, b) JAX_GNA_CONCAT_INNER(a, b)
#define JAX_GNA_REGISTER_FWD(...)                                          \
  static const bool JAX_GNA_CONCAT(jax_gna_registered_fwd_, __LINE__) =    \
      ::jax_gna::register_fwd(::jax_gna::FwdKernel{__VA_ARGS__})
#define JAX_GNA_REGISTER_BWD(...)                                          \
  static const bool JAX_GNA_CONCAT(jax_gna_registered_bwd_, __LINE__) =    \
      ::jax_gna::register_bwd(::jax_gna::BwdKernel{__VA_ARGS__})
