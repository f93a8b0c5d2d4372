// Public interface of the sm90 (Hopper, sm_90a) GNA backward kernels, for the FFI handler.
// The kernels register themselves with JAX_GNA_REGISTER_BWD under backend "sm90" (one
// instantiation per .cu file: bwd_{bf16,fp16}_hdim{64,128}.cu).
#pragma once

#include "jax_gna/params.h"

namespace jax_gna {

// nullptr when an sm90 backward instantiation of params' dtype and head dim (if compiled)
// serves params; otherwise a one-line reason naming the failing requirement and its values.
// The string stays valid until the next call on the same thread.
const char* sm90_bwd_unsupported_reason(const BwdParams& params);

}  // namespace jax_gna
