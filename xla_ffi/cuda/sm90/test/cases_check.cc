// Host check (no GPU) that every self-test case (test/selftest_cases.h: fixed, seeded random,
// benchmark and per-item cost sweep) is admitted by the sm90 forward rule, and a listing of
// the random cases.
//
// (tests/test_host_checks_cpp.py builds and runs it; <gen> is the output of
// `python3 xla_ffi/generate_kernels.py --out <gen>`, for jax_gna/kernel_manifest.h)
//   g++ -std=c++17 -O2 -I xla_ffi/include -I xla_ffi/cuda/sm90 -I <gen>
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
  FwdParams fp = selftest::case_params(c);
  alignas(16) static char dummy[16];
  fp.q = fp.k = fp.v = fp.extra_k = fp.extra_v = dummy;
  fp.out = dummy;
  ProblemDesc p;
  const manifest::Instance* k = manifest::find("sm90", "fwd", fp.dtype, c.D);
  if (k == nullptr) {
    *why = "no sm90 forward of this dtype and head dim in the kernel manifest";
    return false;
  }
  if (!admit_fwd(fp, c.D, k->q_tile_tokens, k->kv_tile_tokens, &p, why)) return false;
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
  run("sweep", selftest::item_cost_cases(), false);
  std::printf("%d case(s) refused\n", bad);
  return bad == 0 ? 0 : 1;
}
