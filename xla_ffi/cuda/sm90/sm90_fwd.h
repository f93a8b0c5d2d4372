// Public interface of the sm90 (Hopper, sm_90a) GNA forward kernels, for the FFI handler and
// tests. The kernels register themselves with JAX_GNA_REGISTER_FWD under backend "sm90"
// (one instantiation per .cu file: fwd_{bf16,fp16}_hdim{64,128,256}.cu).
//
// What the sm90 forward serves (everything else goes to the portable sm80 kernel): see
// README.md beside this file; sm90_fwd_unsupported_reason is the executable form of it.
#pragma once

#include <cuda_runtime.h>

#include "jax_gna/params.h"

namespace jax_gna {

// Tokens per Q tile of every sm90 forward instantiation (product of TileShape::q).
constexpr int sm90_fwd_q_tile_tokens() { return 128; }

// Tokens per KV tile (product of TileShape::kv) of the instantiation for a head dim.
constexpr int sm90_fwd_kv_tile_tokens(int head_dim) { return head_dim == 256 ? 64 : 128; }

// nullptr when an sm90 forward instantiation of params' dtype and head dim (if compiled)
// serves params; otherwise a one-line reason naming the failing requirement and its values.
// The string stays valid until the next call on the same thread.
const char* sm90_fwd_unsupported_reason(const FwdParams& params);

// The reason of the last cudaErrorInvalidValue returned by an sm90 launch function on this
// thread ("" if none).
const char* sm90_fwd_last_error();

}  // namespace jax_gna
