// sm90 GNA backward, bf16, head dim 64: one instantiation (see README.md).
#include "../common/registry.h"
#include "bwd_launch.h"

namespace jax_gna {
namespace sm90 {
namespace {

cudaError_t launch_bwd_bf16_hdim64(const BwdParams& params, cudaStream_t stream) {
  return launch_bwd<BwdTraits<cutlass::bfloat16_t, 64>>(params, stream);
}

}  // namespace
}  // namespace sm90

JAX_GNA_REGISTER_BWD({"sm90", DType::kBFloat16, 64, 64}, sm90::kBwdQTileTokens,
                     sm90::kBwdKvTileTokens, &sm90::launch_bwd_bf16_hdim64);

}  // namespace jax_gna
