// sm90 backward admission for the FFI handler: sm90_bwd_unsupported_reason. Host code only
// (no kernel); one definition for every sm90 backward instantiation.
#include <string>

#include "sm90_bwd.h"
#include "support.h"

namespace jax_gna {

const char* sm90_bwd_unsupported_reason(const BwdParams& params) {
  thread_local std::string why;
  const int d = params.fwd.shape.head_dim;
  if (d != 64 && d != 128) {
    why = "sm90 backward: head_dim must be 64 or 128; got " + std::to_string(d);
    return why.c_str();
  }
  sm90::BwdDesc desc;
  if (sm90::admit_bwd(params, d, &desc, &why)) return nullptr;
  return why.c_str();
}

}  // namespace jax_gna
