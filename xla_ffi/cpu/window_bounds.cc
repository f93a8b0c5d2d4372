// CPU FFI target `gna_window_bounds`: evaluates jax_gna::window() (window.h) for a buffer of
// query coordinates, so tests can check the C++ window math -- the code the CUDA kernels
// compile -- against jax_gna.semantics.window_1d from Python.
//
//   input   i      int32, any shape: query coordinates along one dim, each in [0, length)
//   output  start  int32, same shape: group-local window start (as window() returns it)
//   output  end    int32, same shape: group-local window end (exclusive)
//   attrs   length, kernel_size, stride, dilation (int64), causal (bool)
#include <cstdint>
#include <string>

#include "cpu_targets.h"
#include "dim_attrs.h"
#include "jax_gna/window.h"
#include "xla/ffi/api/ffi.h"

namespace jax_gna::cpu {
namespace {

ffi::Error WindowBoundsImpl(ffi::Buffer<ffi::S32> query, ffi::ResultBuffer<ffi::S32> start,
                            ffi::ResultBuffer<ffi::S32> end, int64_t length,
                            int64_t kernel_size, int64_t stride, int64_t dilation,
                            bool causal) {
  DimParams p;
  if (ffi::Error err = MakeDimParams(length, kernel_size, stride, dilation, causal, &p);
      err.failure()) {
    return err;
  }
  const size_t n = query.element_count();
  if (ffi::Error err = CheckSameCount("start", start->element_count(), "i", n);
      err.failure()) {
    return err;
  }
  if (ffi::Error err = CheckSameCount("end", end->element_count(), "i", n); err.failure()) {
    return err;
  }
  const int32_t* in = query.typed_data();
  int32_t* out_start = start->typed_data();
  int32_t* out_end = end->typed_data();
  for (size_t idx = 0; idx < n; ++idx) {
    const int i = in[idx];
    if (i < 0 || i >= p.length) {
      return ffi::Error::InvalidArgument("i[" + std::to_string(idx) + "]=" +
                                         std::to_string(i) + " is outside [0, length=" +
                                         std::to_string(p.length) + ")");
    }
    const Range w = window(i, p);
    out_start[idx] = w.begin;
    out_end[idx] = w.end;
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jax_gna::cpu

XLA_FFI_DEFINE_HANDLER_SYMBOL(GnaWindowBounds, jax_gna::cpu::WindowBoundsImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::S32>>()        // i
                                  .Ret<xla::ffi::Buffer<xla::ffi::S32>>()        // start
                                  .Ret<xla::ffi::Buffer<xla::ffi::S32>>()        // end
                                  .Attr<int64_t>("length")
                                  .Attr<int64_t>("kernel_size")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<bool>("causal"));
