// sm90 GNA forward, fp16, head dim 256: one instantiation (see README.md).
#include "../common/registry.h"
#include "launch.h"

namespace jax_gna {
namespace sm90 {
namespace {

using Config = FwdConfig<cutlass::half_t, 256>;

cudaError_t launch_fwd_fp16_hdim256(const FwdParams& params, cudaStream_t stream) {
  return launch_fwd<Config>(params, stream);
}

}  // namespace
}  // namespace sm90

JAX_GNA_REGISTER_FWD({"sm90", DType::kFloat16, 256, 256}, sm90_fwd_q_tile_tokens(),
                     sm90_fwd_kv_tile_tokens(256), &sm90::launch_fwd_fp16_hdim256);

}  // namespace jax_gna
