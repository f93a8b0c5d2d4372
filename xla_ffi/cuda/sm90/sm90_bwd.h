// Public interface of the sm90 (Hopper, sm_90a) GNA backward kernels, for the FFI handler.
// The kernels register themselves with JAX_GNA_REGISTER_BWD under backend "sm90" (one
// generated instantiation per line of the kernel manifest, jax_gna/kernel_manifest.py).
#pragma once

#include "jax_gna/params.h"

namespace jax_gna {

// nullptr when the sm90 backward instantiation of params' dtype and head dim, with tiles of
// (q_tile_tokens, kv_tile_tokens), serves params; otherwise a one-line reason naming the
// failing requirement and its values. The string stays valid until the next call on the
// same thread.
const char* sm90_bwd_unsupported_reason(const BwdParams& params, int q_tile_tokens,
                                        int kv_tile_tokens);

}  // namespace jax_gna
