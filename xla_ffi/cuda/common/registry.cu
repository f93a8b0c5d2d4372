// The kernel registry of registry.h. Instantiation files register from static initialisers
// (run when libjax_gna_cuda.so is loaded); lookups happen from FFI handlers afterwards, so the
// tables need no lock once loading is done. Function-local statics avoid the static
// initialisation order problem between translation units.
#include "registry.h"

#include <algorithm>
#include <sstream>
#include <string>
#include <string_view>
#include <vector>

namespace jax_gna {
namespace {

std::vector<FwdKernel>& fwd_table() {
  static std::vector<FwdKernel> table;
  return table;
}

std::vector<BwdKernel>& bwd_table() {
  static std::vector<BwdKernel> table;
  return table;
}

bool same_key(const KernelKey& a, std::string_view backend, DType dtype, int head_dim,
              int head_dim_v) {
  return backend == a.backend && a.dtype == dtype && a.head_dim == head_dim &&
         a.head_dim_v == head_dim_v;
}

template <class Kernel>
bool add(std::vector<Kernel>& table, const Kernel& kernel) {
  for (const Kernel& k : table) {
    // A duplicate would make lookups ambiguous: keep the first, report failure.
    if (same_key(k.key, kernel.key.backend, kernel.key.dtype, kernel.key.head_dim,
                 kernel.key.head_dim_v)) {
      return false;
    }
  }
  table.push_back(kernel);
  return true;
}

template <class Kernel>
const Kernel* find(const std::vector<Kernel>& table, std::string_view backend, DType dtype,
                   int head_dim, int head_dim_v) {
  for (const Kernel& k : table) {
    if (same_key(k.key, backend, dtype, head_dim, head_dim_v)) return &k;
  }
  return nullptr;
}

template <class Kernel>
void describe(const char* direction, const std::vector<Kernel>& table,
              std::vector<std::string>* lines) {
  for (const Kernel& k : table) {
    std::ostringstream line;
    line << direction << ' ' << k.key.backend << ' ' << dtype_name(k.key.dtype) << ' '
         << k.key.head_dim << ' ' << k.key.head_dim_v << ' ' << k.q_tile_tokens << ' '
         << k.kv_tile_tokens;
    lines->push_back(line.str());
  }
}

}  // namespace

bool register_fwd(const FwdKernel& kernel) { return add(fwd_table(), kernel); }
bool register_bwd(const BwdKernel& kernel) { return add(bwd_table(), kernel); }

const FwdKernel* find_fwd(std::string_view backend, DType dtype, int head_dim,
                          int head_dim_v) {
  return find(fwd_table(), backend, dtype, head_dim, head_dim_v);
}

const BwdKernel* find_bwd(std::string_view backend, DType dtype, int head_dim,
                          int head_dim_v) {
  return find(bwd_table(), backend, dtype, head_dim, head_dim_v);
}

std::string describe_compiled_kernels() {
  std::vector<std::string> lines;
  describe("fwd", fwd_table(), &lines);
  describe("bwd", bwd_table(), &lines);
  std::sort(lines.begin(), lines.end());  // stable output whatever the link order
  std::string out;
  for (const std::string& line : lines) {
    out += line;
    out += '\n';
  }
  return out;
}

const char* dtype_name(DType dtype) {
  switch (dtype) {
    case DType::kFloat16:
      return "fp16";
    case DType::kBFloat16:
      return "bf16";
    case DType::kFloat32:
      return "fp32";
  }
  return "unknown";
}

}  // namespace jax_gna
