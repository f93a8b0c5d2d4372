// Shared by the CPU FFI targets: turn the per-dim attributes of a call (int64, as JAX passes
// Python ints) into a validated jax_gna::DimParams, with the rules of docs/semantics.md /
// jax_gna.semantics.make_params. These targets exist so tests can evaluate window.h from
// Python; a bad attribute must come back as an ffi::Error that names the value, never as
// undefined behaviour inside the window math.
#pragma once

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <string>
#include <utility>

#include "jax_gna/window.h"
#include "xla/ffi/api/ffi.h"

namespace jax_gna::cpu {

namespace ffi = ::xla::ffi;

// window.h computes in int: reject attributes that do not fit before narrowing them.
inline ffi::Error CheckFitsInt(const char* name, int64_t value) {
  if (value < std::numeric_limits<int>::min() || value > std::numeric_limits<int>::max()) {
    return ffi::Error::InvalidArgument(std::string(name) + "=" + std::to_string(value) +
                                       " does not fit in a 32-bit int");
  }
  return ffi::Error::Success();
}

// Validates (length, kernel_size, stride, dilation, causal) and fills `out`.
inline ffi::Error MakeDimParams(int64_t length, int64_t kernel_size, int64_t stride,
                                int64_t dilation, bool causal, DimParams* out) {
  for (auto [name, value] : {std::pair<const char*, int64_t>{"length", length},
                             {"kernel_size", kernel_size},
                             {"stride", stride},
                             {"dilation", dilation}}) {
    if (ffi::Error err = CheckFitsInt(name, value); err.failure()) return err;
  }
  const std::string dims = " (length=" + std::to_string(length) +
                           ", kernel_size=" + std::to_string(kernel_size) +
                           ", stride=" + std::to_string(stride) +
                           ", dilation=" + std::to_string(dilation) + ")";
  switch (first_broken_rule(length, kernel_size, stride, dilation)) {
    case DimRule::kValid:
      break;
    case DimRule::kLength:
      return ffi::Error::InvalidArgument("length=" + std::to_string(length) +
                                         " must be >= 1" + dims);
    case DimRule::kKernelSize:
      return ffi::Error::InvalidArgument("kernel_size=" + std::to_string(kernel_size) +
                                         " must be >= 2" + dims);
    case DimRule::kDilation:
      return ffi::Error::InvalidArgument("dilation=" + std::to_string(dilation) +
                                         " must be >= 1" + dims);
    case DimRule::kWindowFits:
      return ffi::Error::InvalidArgument(
          "kernel_size=" + std::to_string(kernel_size) + " times dilation=" +
          std::to_string(dilation) + " exceeds length " + std::to_string(length) + dims);
    case DimRule::kStride:
      return ffi::Error::InvalidArgument("stride=" + std::to_string(stride) +
                                         " must satisfy 1 <= stride <= kernel_size" + dims);
  }
  out->length = static_cast<int>(length);
  out->kernel_size = static_cast<int>(kernel_size);
  out->stride = static_cast<int>(stride);
  out->dilation = static_cast<int>(dilation);
  out->causal = causal;
  return ffi::Error::Success();
}

// Tile sizes of the tile-map targets: tokens per tile, >= 1.
inline ffi::Error CheckTileSize(const char* name, int64_t value) {
  if (ffi::Error err = CheckFitsInt(name, value); err.failure()) return err;
  if (value < 1) {
    return ffi::Error::InvalidArgument(std::string(name) + "=" + std::to_string(value) +
                                       " must be >= 1");
  }
  return ffi::Error::Success();
}

// Every buffer of a call describes the same items: their element counts must agree.
inline ffi::Error CheckSameCount(const char* name, size_t count, const char* ref_name,
                                 size_t ref_count) {
  if (count != ref_count) {
    return ffi::Error::InvalidArgument(std::string(name) + " has " + std::to_string(count) +
                                       " elements but " + ref_name + " has " +
                                       std::to_string(ref_count));
  }
  return ffi::Error::Success();
}

}  // namespace jax_gna::cpu
