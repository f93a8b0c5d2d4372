// sm90 forward admission for the FFI handler and Python: sm90_fwd_unsupported_reason.
// Host code only (no kernel); one definition for every sm90 forward instantiation.
#include <string>

#include "sm90_fwd.h"
#include "support.h"

namespace jax_gna {

const char* sm90_fwd_unsupported_reason(const FwdParams& params) {
  thread_local std::string why;
  const int d = params.shape.head_dim;
  if (d != 64 && d != 128 && d != 256) {
    why = "sm90 forward: head_dim must be 64, 128 or 256; got " + std::to_string(d);
    return why.c_str();
  }
  sm90::ProblemDesc desc;
  if (sm90::admit_fwd(params, d, sm90_fwd_kv_tile_tokens(d), &desc, &why)) return nullptr;
  return why.c_str();
}

const char* sm90_fwd_last_error() { return sm90::last_error_message().c_str(); }

}  // namespace jax_gna
