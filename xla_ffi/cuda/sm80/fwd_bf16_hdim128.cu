// Forward, bf16, head dim 128: Q tile 128 tokens, KV tile 64 tokens, 4 warps,
// one K and one V buffer (kernel_traits.h kStages: 64-token tiles within 99 KiB).
#include "fwd_launch.h"

JAX_GNA_SM80_FWD_INSTANCE(cutlass::bfloat16_t, 128, 128, 64, 4, 1, true, true)
