// sm90 GNA backward, bf16, head dim 128: one instantiation (see README.md).
#include "../common/registry.h"
#include "bwd_launch.h"

namespace jax_gna {
namespace sm90 {
namespace {

cudaError_t launch_bwd_bf16_hdim128(const BwdParams& params, cudaStream_t stream) {
  return launch_bwd<BwdTraits<cutlass::bfloat16_t, 128>>(params, stream);
}

}  // namespace
}  // namespace sm90

JAX_GNA_REGISTER_BWD({"sm90", DType::kBFloat16, 128, 128}, sm90::kBwdQTileTokens,
                     sm90::kBwdKvTileTokens, &sm90::launch_bwd_bf16_hdim128);

}  // namespace jax_gna
