// Backward, fp16, head dim 32: Q and KV tiles of 64 tokens; dK/dV kernel 4 warps.
#include "bwd_launch.h"

JAX_GNA_SM80_BWD_INSTANCE(cutlass::half_t, 32, 4, 2, 4)
