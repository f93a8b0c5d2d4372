// Forward, fp16, head dim 256: Q tile 64 tokens, KV tile 16 tokens, 4 warps.
#include "fwd_launch.h"

JAX_GNA_SM80_FWD_INSTANCE(cutlass::half_t, 256, 64, 16, 4, 2, true, false)
