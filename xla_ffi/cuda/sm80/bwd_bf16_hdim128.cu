// Backward, bf16, head dim 128: Q and KV tiles of 64 tokens; dK/dV kernel 8 warps.
#include "bwd_launch.h"

JAX_GNA_SM80_BWD_INSTANCE(cutlass::bfloat16_t, 128, 8, 2, 4)
