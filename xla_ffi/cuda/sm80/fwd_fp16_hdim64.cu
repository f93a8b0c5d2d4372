// Forward, fp16, head dim 64: Q tile 128 tokens, KV tile 64 tokens, 4 warps.
#include "fwd_launch.h"

JAX_GNA_SM80_FWD_INSTANCE(cutlass::half_t, 64, 128, 64, 4, 2, true, true)
