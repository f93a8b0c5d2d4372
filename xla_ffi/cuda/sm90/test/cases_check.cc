// Host check (no GPU) that every self-test case (test/selftest_cases.h: fixed, seeded random
// and benchmark) is admitted by the sm90 forward rule, and a listing of the random cases.
//
//   g++ -std=c++17 -O2 -I xla_ffi/include -I xla_ffi/cuda/sm90
//       xla_ffi/cuda/sm90/test/cases_check.cc -o /tmp/sm90_cases_check && /tmp/sm90_cases_check [seed [count]]
#include <cstdio>
#include <cstdlib>
#include <string>

#include "support.h"
#include "test/selftest_cases.h"

using namespace jax_gna;
using namespace jax_gna::sm90;
using selftest::Case;

static bool admitted(const Case& c, std::string* why, double* tiles) {
  FwdParams fp;
  fp.shape.batch = c.B;
  fp.shape.heads_q = c.Hq;
  fp.shape.heads_kv = c.Hkv;
  fp.shape.head_dim = fp.shape.head_dim_v = c.D;
  fp.shape.num_extra = c.E;
  fp.dtype = c.fp16 ? DType::kFloat16 : DType::kBFloat16;
  fp.scale = 0.1f;
  for (int i = 0; i < 3; ++i) {
    fp.shape.dims[i] = DimParams{c.L[i], c.k[i], c.s[i], c.d[i], c.c[i]};
    fp.tiles.q[i] = c.q[i];
    fp.tiles.kv[i] = c.kv[i];
  }
  alignas(16) static char dummy[16];
  fp.q = fp.k = fp.v = fp.extra_k = fp.extra_v = dummy;
  fp.out = dummy;
  auto dense = [&](int heads) {
    TokenStrides st;
    st.head = c.D;
    st.spatial[2] = int64_t(heads) * c.D;
    st.spatial[1] = st.spatial[2] * c.L[2];
    st.spatial[0] = st.spatial[1] * c.L[1];
    st.batch = st.spatial[0] * c.L[0];
    return st;
  };
  fp.q_strides = fp.out_strides = dense(c.Hq);
  fp.k_strides = fp.v_strides = dense(c.Hkv);
  fp.extra_k_strides.head = fp.extra_v_strides.head = c.D;
  fp.extra_k_strides.token = fp.extra_v_strides.token = int64_t(c.Hkv) * c.D;
  fp.extra_k_strides.batch = fp.extra_v_strides.batch = int64_t(c.E) * c.Hkv * c.D;
  ProblemDesc p;
  if (!admit_fwd(fp, c.D, c.D == 256 ? 64 : 128, &p, why)) return false;
  double t = 0;
  for (int w = 0; w < p.total_work; ++w) t += work_kv_tiles(p, w);
  *tiles = t;
  return true;
}

int main(int argc, char** argv) {
  const uint32_t seed = argc > 1 ? static_cast<uint32_t>(std::strtoul(argv[1], nullptr, 0)) : 1;
  const int count = argc > 2 ? std::atoi(argv[2]) : 12;
  int bad = 0;
  auto run = [&](const char* what, const std::vector<Case>& cases, bool list) {
    for (const Case& c : cases) {
      std::string why;
      double tiles = 0;
      const bool ok = admitted(c, &why, &tiles);
      if (!ok) ++bad;
      if (!ok || list)
        std::printf("%-6s %-100s %s %.0f KV tiles\n", what, c.name.c_str(), ok ? "ok" : why.c_str(), tiles);
    }
  };
  run("fixed", selftest::fixed_correctness_cases(), false);
  run("random", selftest::random_correctness_cases(seed, count), true);
  run("bench", selftest::bench_cases(), false);
  std::printf("%d case(s) refused\n", bad);
  return bad == 0 ? 0 : 1;
}
