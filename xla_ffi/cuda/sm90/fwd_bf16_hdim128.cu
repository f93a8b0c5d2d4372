// sm90 GNA forward, bf16, head dim 128: one instantiation (see README.md).
#include "../common/registry.h"
#include "launch.h"

namespace jax_gna {
namespace sm90 {
namespace {

using Config = FwdConfig<cutlass::bfloat16_t, 128>;

cudaError_t launch_fwd_bf16_hdim128(const FwdParams& params, cudaStream_t stream) {
  return launch_fwd<Config>(params, stream);
}

}  // namespace
}  // namespace sm90

JAX_GNA_REGISTER_FWD({"sm90", DType::kBFloat16, 128, 128}, sm90_fwd_q_tile_tokens(),
                     sm90_fwd_kv_tile_tokens(128), &sm90::launch_fwd_bf16_hdim128);

}  // namespace jax_gna
