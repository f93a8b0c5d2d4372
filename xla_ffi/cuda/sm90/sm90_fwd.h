// Public interface of the sm90 (Hopper, sm_90a) GNA forward kernels, for the FFI handler and
// tests. The kernels register themselves with JAX_GNA_REGISTER_FWD under backend "sm90"
// (one instantiation per .cu file, generated from the sm90 lines of jax_gna/kernel_manifest.py).
//
// What the sm90 forward serves (everything else goes to the portable sm80 kernel): see
// README.md beside this file; sm90_fwd_unsupported_reason is the executable form of it.
#pragma once

#include <cuda_runtime.h>

#include "jax_gna/params.h"

namespace jax_gna {

// nullptr when the sm90 forward instantiation of params' dtype and head dim, whose tiles hold
// q_tile_tokens and kv_tile_tokens tokens (its registry entry), serves params; otherwise a
// one-line reason naming the failing requirement and its values. The string stays valid
// until the next call on the same thread.
const char* sm90_fwd_unsupported_reason(const FwdParams& params, int q_tile_tokens,
                                        int kv_tile_tokens);

// The reason of the last cudaErrorInvalidValue returned by an sm90 launch function on this
// thread ("" if none).
const char* sm90_fwd_last_error();

}  // namespace jax_gna
