// sm90 backward admission for the FFI handler: sm90_bwd_unsupported_reason. Host code only
// (no kernel); one definition for every sm90 backward instantiation.
#include <string>

#include "sm90_bwd.h"
#include "support.h"

namespace jax_gna {

const char* sm90_bwd_unsupported_reason(const BwdParams& params, int q_tile_tokens,
                                        int kv_tile_tokens) {
  thread_local std::string why;
  sm90::BwdDesc desc;
  if (sm90::admit_bwd(params, params.fwd.shape.head_dim, q_tile_tokens, kv_tile_tokens, &desc,
                      &why))
    return nullptr;
  return why.c_str();
}

}  // namespace jax_gna
