// sm90 forward admission for the FFI handler and Python: sm90_fwd_unsupported_reason.
// Host code only (no kernel); one definition for every sm90 forward instantiation.
#include <string>

#include "sm90_fwd.h"
#include "support.h"

namespace jax_gna {

const char* sm90_fwd_unsupported_reason(const FwdParams& params, int q_tile_tokens,
                                        int kv_tile_tokens) {
  thread_local std::string why;
  sm90::ProblemDesc desc;
  if (sm90::admit_fwd(params, params.shape.head_dim, q_tile_tokens, kv_tile_tokens, &desc,
                      &why))
    return nullptr;
  return why.c_str();
}

const char* sm90_fwd_last_error() { return sm90::last_error_message().c_str(); }

}  // namespace jax_gna
