// Forward, bf16, head dim 128: Q tile 128 tokens, KV tile 32 tokens, 4 warps.
#include "fwd_launch.h"

JAX_GNA_SM80_FWD_INSTANCE(cutlass::bfloat16_t, 128, 128, 32, 4, true, true)
