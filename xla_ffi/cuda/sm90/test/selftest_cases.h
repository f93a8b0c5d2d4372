// Cases of the sm90 forward self-test (test/fwd_selftest.cc): fixed correctness cases,
// seeded random correctness cases inside the sm90 admission rule, and the benchmark list.
// Pure C++ (no CUDA): test/cases_check.cc runs every case through admit_fwd on the host.
// case_params / case_window are shared by both programs.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "jax_gna/params.h"
#include "jax_gna/window.h"

namespace jax_gna {
namespace sm90 {
namespace selftest {

struct Case {
  std::string name;
  int L[3], k[3], s[3], d[3];
  bool c[3];
  int q[3], kv[3];
  int B, Hq, Hkv, E, D;
  bool fp16;
  bool workspace;
};

// Keys of query coordinate x along dim i: first + d * t for t < count (window.h: the one
// C++ copy of the window math).
inline void case_window(const Case& c, int i, int x, int* first, int* count) {
  const Range r = window(x, DimParams{c.L[i], c.k[i], c.s[i], c.d[i], c.c[i]});
  *first = x % c.d[i] + c.d[i] * r.begin;
  *count = r.end - r.begin;
}

// FwdParams of a case without device pointers, SM count or workspace: shape, tiles, dtype,
// scale 1/sqrt(D) and the dense [B, *spatial, H, D] / [B, E, Hkv, D] / [B, *spatial, Hq]
// strides.
inline FwdParams case_params(const Case& c) {
  FwdParams fp;
  fp.shape.batch = c.B;
  fp.shape.heads_q = c.Hq;
  fp.shape.heads_kv = c.Hkv;
  fp.shape.head_dim = fp.shape.head_dim_v = c.D;
  fp.shape.num_extra = c.E;
  for (int i = 0; i < 3; ++i) {
    fp.shape.dims[i] = DimParams{c.L[i], c.k[i], c.s[i], c.d[i], c.c[i]};
    fp.tiles.q[i] = c.q[i];
    fp.tiles.kv[i] = c.kv[i];
  }
  fp.dtype = c.fp16 ? DType::kFloat16 : DType::kBFloat16;
  fp.scale = 1.0f / std::sqrt(static_cast<float>(c.D));
  auto dense = [&](int heads, int dim) {
    TokenStrides st;
    st.head = dim;
    st.spatial[2] = int64_t(heads) * dim;
    st.spatial[1] = st.spatial[2] * c.L[2];
    st.spatial[0] = st.spatial[1] * c.L[1];
    st.batch = st.spatial[0] * c.L[0];
    return st;
  };
  fp.q_strides = fp.out_strides = dense(c.Hq, c.D);
  fp.k_strides = fp.v_strides = dense(c.Hkv, c.D);
  fp.lse_strides = dense(c.Hq, 1);
  fp.extra_k_strides.head = fp.extra_v_strides.head = c.D;
  fp.extra_k_strides.token = fp.extra_v_strides.token = int64_t(c.Hkv) * c.D;
  fp.extra_k_strides.batch = fp.extra_v_strides.batch = int64_t(c.E) * c.Hkv * c.D;
  return fp;
}

#define SM90_D3(a, b, c) {a, b, c}
#define SM90_BOOL3(a, b, c) {a != 0, b != 0, c != 0}

inline std::vector<Case> fixed_correctness_cases() {
  // name, L, k, s, d, causal, q tile, kv tile, B, Hq, Hkv, E, D, fp16, workspace
  return {
      {"2d na 24x40 k7x9 gqa", SM90_D3(1, 24, 40), SM90_D3(1, 7, 9), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 2, 4, 2, 0, 128, false, true},
      {"2d na 24x40 static sched", SM90_D3(1, 24, 40), SM90_D3(1, 7, 9), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 2, 4, 2, 0, 128, false, false},
      {"2d stride/even k/causal", SM90_D3(1, 37, 29), SM90_D3(1, 8, 5), SM90_D3(1, 2, 3), SM90_D3(1, 1, 1), SM90_BOOL3(0, 1, 0), SM90_D3(1, 8, 16), SM90_D3(1, 16, 8), 1, 3, 3, 0, 128, false, true},
      {"2d blocked 32x32 k16 s16", SM90_D3(1, 32, 32), SM90_D3(1, 16, 16), SM90_D3(1, 16, 16), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 2, 1, 0, 128, false, true},
      {"2d self attention 20x20", SM90_D3(1, 20, 20), SM90_D3(1, 20, 20), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 8, 16), SM90_D3(1, 8, 16), 1, 2, 2, 0, 128, false, true},
      {"3d 10x12x20 causal0 stride", SM90_D3(10, 12, 20), SM90_D3(3, 5, 7), SM90_D3(1, 2, 3), SM90_D3(1, 1, 1), SM90_BOOL3(1, 0, 0), SM90_D3(2, 8, 8), SM90_D3(2, 8, 8), 1, 2, 1, 0, 128, false, true},
      {"3d 9x16x16 q4x8x4 kv2x4x16", SM90_D3(9, 16, 16), SM90_D3(4, 6, 7), SM90_D3(2, 1, 7), SM90_D3(1, 1, 1), SM90_BOOL3(0, 1, 1), SM90_D3(4, 8, 4), SM90_D3(2, 4, 16), 2, 2, 2, 0, 128, false, true},
      {"1d 1000 k130 causal +77 extra", SM90_D3(1, 1, 1000), SM90_D3(1, 1, 130), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 1), SM90_D3(1, 1, 128), SM90_D3(1, 1, 128), 1, 2, 1, 77, 128, false, true},
      {"2d dilation (2,3)", SM90_D3(1, 30, 33), SM90_D3(1, 5, 4), SM90_D3(1, 1, 2), SM90_D3(1, 2, 3), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 8, 16), 1, 2, 1, 0, 128, false, true},
      {"1d dilation 2 L517 k100", SM90_D3(1, 1, 517), SM90_D3(1, 1, 100), SM90_D3(1, 1, 1), SM90_D3(1, 1, 2), SM90_BOOL3(0, 0, 0), SM90_D3(1, 1, 128), SM90_D3(1, 1, 128), 1, 1, 1, 0, 128, false, true},
      {"3d dilation causal", SM90_D3(8, 14, 18), SM90_D3(2, 3, 4), SM90_D3(1, 1, 2), SM90_D3(2, 3, 2), SM90_BOOL3(1, 0, 0), SM90_D3(2, 4, 16), SM90_D3(2, 8, 8), 1, 2, 1, 0, 128, false, true},
      {"2d +200 extra tokens", SM90_D3(1, 16, 24), SM90_D3(1, 5, 5), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 2, 2, 1, 200, 128, false, true},
      {"2d fp16", SM90_D3(1, 24, 40), SM90_D3(1, 7, 9), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 2, 1, 0, 128, true, true},
      {"2d hdim64 bf16", SM90_D3(1, 24, 40), SM90_D3(1, 7, 9), SM90_D3(1, 2, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 1), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 2, 1, 0, 64, false, true},
      {"2d hdim64 fp16 +extra", SM90_D3(1, 24, 40), SM90_D3(1, 7, 9), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 2, 1, 33, 64, true, true},
      // Head dim 256 (KV tile 64 tokens; the 24/240 setmaxnreg split).
      {"2d hdim256 kv 8x8", SM90_D3(1, 24, 40), SM90_D3(1, 7, 9), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 8, 8), 1, 2, 1, 0, 256, false, true},
      {"2d hdim256 fp16 kv 8x8", SM90_D3(1, 24, 40), SM90_D3(1, 7, 9), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 8, 8), 1, 2, 1, 0, 256, true, true},
      {"3d hdim256 +extra", SM90_D3(6, 10, 12), SM90_D3(3, 4, 5), SM90_D3(1, 2, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 1), SM90_D3(2, 8, 8), SM90_D3(1, 8, 8), 1, 2, 2, 70, 256, false, true},
      {"3d hdim256 fp16 dilation causal", SM90_D3(8, 14, 18), SM90_D3(2, 3, 4), SM90_D3(1, 2, 1), SM90_D3(2, 2, 3), SM90_BOOL3(1, 0, 1), SM90_D3(2, 4, 16), SM90_D3(2, 4, 8), 2, 4, 2, 0, 256, true, true},
      {"1d hdim256 causal stride +extra", SM90_D3(1, 1, 700), SM90_D3(1, 1, 150), SM90_D3(1, 1, 3), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 1), SM90_D3(1, 1, 128), SM90_D3(1, 1, 64), 1, 2, 1, 45, 256, false, true},
      {"2d hdim256 fp16 gqa static", SM90_D3(1, 33, 21), SM90_D3(1, 9, 6), SM90_D3(1, 2, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 8, 16), SM90_D3(1, 4, 16), 2, 6, 2, 0, 256, true, false},
      {"2d hdim256 self attention", SM90_D3(1, 16, 16), SM90_D3(1, 16, 16), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 8, 8), 1, 2, 2, 0, 256, false, true},
  };
}

// ---- Seeded random cases ---------------------------------------------------------------
struct SplitMix {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int uniform(int lo, int hi) {  // inclusive; lo if hi < lo
    if (hi <= lo) return lo;
    return lo + static_cast<int>(next() % static_cast<uint64_t>(hi - lo + 1));
  }
  bool coin(double p) { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0) < p; }
};

// Random power-of-two box of 2^bits tokens over the active dims (the last `rank` dims), each
// extent at most cap[i].
inline void random_box(SplitMix& r, int rank, int bits, const int (&cap)[3], int (&box)[3]) {
  for (int attempt = 0; attempt < 64; ++attempt) {
    int e[3] = {0, 0, 0};
    bool ok = true;
    for (int b = 0; b < bits && ok; ++b) {
      int choices[3], n = 0;
      for (int i = 3 - rank; i < 3; ++i)
        if ((2 << e[i]) <= cap[i]) choices[n++] = i;
      if (n == 0) ok = false;
      else ++e[choices[r.uniform(0, n - 1)]];
    }
    if (ok) {
      for (int i = 0; i < 3; ++i) box[i] = 1 << e[i];
      return;
    }
  }
  box[0] = box[1] = 1;  // unreachable with the caps used below
  box[2] = 1 << bits;
}

// Case i of the random set for `seed`: head dim cycles 64/128/256 and rank 1/2/3 over the
// first nine; the rest are fully random. Every case is inside the sm90 admission rule by
// construction (cases_check.cc verifies it): dilation <= 8, tile x dilation <= 256,
// k x dilation <= L, stride <= k, power-of-two boxes of 128 (Q) and 128 / 64 (KV) tokens.
inline Case random_case(uint32_t seed, int i) {
  SplitMix r{(static_cast<uint64_t>(seed) << 32) ^ (0xC0FFEEull + 7919ull * static_cast<uint64_t>(i))};
  r.next();
  Case c{};
  c.D = i < 9 ? (i % 3 == 0 ? 64 : i % 3 == 1 ? 128 : 256) : (r.coin(0.34) ? 256 : r.coin(0.5) ? 128 : 64);
  const int rank = i < 9 ? 1 + (i / 3) % 3 : r.uniform(1, 3);
  c.fp16 = r.coin(0.5);
  const int kv_bits = c.D == 256 ? 6 : 7;
  for (int j = 0; j < 3; ++j) {
    c.L[j] = c.k[j] = c.s[j] = c.d[j] = 1;
    c.c[j] = false;
  }
  int cap[3] = {1, 1, 1};
  for (int j = 3 - rank; j < 3; ++j) {
    int& d = c.d[j];
    d = r.coin(0.35) ? r.uniform(2, rank == 1 ? 2 : (rank == 2 ? 4 : 3)) : 1;
    int& L = c.L[j];
    if (rank == 1) L = r.uniform(150, 1300);
    else if (rank == 2) L = r.uniform(9, 48);
    else L = j == 0 ? r.uniform(4, 14) : (j == 1 ? r.uniform(5, 20) : r.uniform(5, 24));
    if (L < 2 * d) L = 2 * d;
    const int kcap = rank == 1 ? 260 : (rank == 2 ? 17 : 9);
    const int kmax = L / d < kcap ? L / d : kcap;
    c.k[j] = r.coin(0.1) ? L / d : r.uniform(2, kmax);
    c.s[j] = r.coin(0.5) ? 1 : r.uniform(1, c.k[j]);
    c.c[j] = r.coin(0.3);
    cap[j] = 256 / d;
  }
  random_box(r, rank, 7, cap, c.q);
  random_box(r, rank, kv_bits, cap, c.kv);
  c.Hkv = r.uniform(1, 2);
  c.Hq = c.Hkv * r.uniform(1, 3);
  c.B = r.uniform(1, 2);
  c.E = r.coin(0.3) ? r.uniform(1, 150) : 0;
  c.workspace = r.coin(0.8);
  char buf[320];
  std::snprintf(buf, sizeof(buf),
                "rand%d %dd D%d %s L%dx%dx%d k%dx%dx%d s%dx%dx%d d%dx%dx%d c%d%d%d q%dx%dx%d "
                "kv%dx%dx%d B%d H%d/%d E%d%s",
                i, rank, c.D, c.fp16 ? "fp16" : "bf16", c.L[0], c.L[1], c.L[2], c.k[0], c.k[1],
                c.k[2], c.s[0], c.s[1], c.s[2], c.d[0], c.d[1], c.d[2], int(c.c[0]), int(c.c[1]),
                int(c.c[2]), c.q[0], c.q[1], c.q[2], c.kv[0], c.kv[1], c.kv[2], c.B, c.Hq, c.Hkv,
                c.E, c.workspace ? "" : " static");
  c.name = buf;
  return c;
}

inline std::vector<Case> random_correctness_cases(uint32_t seed, int count) {
  std::vector<Case> out;
  for (int i = 0; i < count; ++i) out.push_back(random_case(seed, i));
  return out;
}

inline std::vector<Case> bench_cases() {
  return {
      {"flux 256x256 k80 s1x1", SM90_D3(1, 256, 256), SM90_D3(1, 80, 80), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 24, 24, 0, 128, false, true},
      {"flux 256x256 k80 s16x1", SM90_D3(1, 256, 256), SM90_D3(1, 80, 80), SM90_D3(1, 16, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 24, 24, 0, 128, false, true},
      {"flux 256x256 k80 s16x16", SM90_D3(1, 256, 256), SM90_D3(1, 80, 80), SM90_D3(1, 16, 16), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 24, 24, 0, 128, false, true},
      {"hunyuan k18x24x24 s1", SM90_D3(30, 48, 80), SM90_D3(18, 24, 24), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(2, 8, 8), SM90_D3(2, 8, 8), 1, 24, 24, 0, 128, false, true},
      {"hunyuan k18x24x24 s2x8x8", SM90_D3(30, 48, 80), SM90_D3(18, 24, 24), SM90_D3(2, 8, 8), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(2, 8, 8), SM90_D3(2, 8, 8), 1, 24, 24, 0, 128, false, true},
      {"hunyuan k18x24x24 s16x8x8", SM90_D3(30, 48, 80), SM90_D3(18, 24, 24), SM90_D3(16, 8, 8), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(2, 8, 8), SM90_D3(2, 8, 8), 1, 24, 24, 0, 128, false, true},
      {"hunyuan58 k30x40x40 s1", SM90_D3(30, 48, 80), SM90_D3(30, 40, 40), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(2, 8, 8), SM90_D3(2, 8, 8), 1, 24, 24, 0, 128, false, true},
      {"hunyuan58 k30x40x40 s1x32x8", SM90_D3(30, 48, 80), SM90_D3(30, 40, 40), SM90_D3(1, 32, 8), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(2, 8, 8), SM90_D3(2, 8, 8), 1, 24, 24, 0, 128, false, true},
      {"cosmos k16x24x16 s1", SM90_D3(16, 44, 80), SM90_D3(16, 24, 16), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(2, 8, 8), SM90_D3(2, 8, 8), 1, 32, 32, 0, 128, false, true},
      {"cosmos k16x24x16 s1x8x16", SM90_D3(16, 44, 80), SM90_D3(16, 24, 16), SM90_D3(1, 8, 16), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(2, 8, 8), SM90_D3(2, 8, 8), 1, 32, 32, 0, 128, false, true},
      {"seq32k k2048 s1", SM90_D3(1, 1, 32768), SM90_D3(1, 1, 2048), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 1, 128), SM90_D3(1, 1, 128), 1, 24, 24, 0, 128, false, true},
      {"seq32k k2048 s256", SM90_D3(1, 1, 32768), SM90_D3(1, 1, 2048), SM90_D3(1, 1, 256), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 1, 128), SM90_D3(1, 1, 128), 1, 24, 24, 0, 128, false, true},
      {"seq32k k2048 s2048", SM90_D3(1, 1, 32768), SM90_D3(1, 1, 2048), SM90_D3(1, 1, 2048), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 1, 128), SM90_D3(1, 1, 128), 1, 24, 24, 0, 128, false, true},
      {"dense self-attn 32768 (ref)", SM90_D3(1, 1, 32768), SM90_D3(1, 1, 32768), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 1, 128), SM90_D3(1, 1, 128), 1, 24, 24, 0, 128, false, true},
      {"flux s1x1 static scheduler", SM90_D3(1, 256, 256), SM90_D3(1, 80, 80), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 24, 24, 0, 128, false, false},
      // Boxes a tile-map ranking prefers (same problems as above; compare the ms).
      {"flux s1x1 q16x8 kv8x16", SM90_D3(1, 256, 256), SM90_D3(1, 80, 80), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 8, 16), 1, 24, 24, 0, 128, false, true},
      {"hunyuan s1 q8x4x4 kv4x8x4", SM90_D3(30, 48, 80), SM90_D3(18, 24, 24), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(8, 4, 4), SM90_D3(4, 8, 4), 1, 24, 24, 0, 128, false, true},
      {"hunyuan s1 q8x4x4 kv2x8x8", SM90_D3(30, 48, 80), SM90_D3(18, 24, 24), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(8, 4, 4), SM90_D3(2, 8, 8), 1, 24, 24, 0, 128, false, true},
      {"hunyuan58 s1 q2x16x4 kv2x8x8", SM90_D3(30, 48, 80), SM90_D3(30, 40, 40), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(2, 16, 4), SM90_D3(2, 8, 8), 1, 24, 24, 0, 128, false, true},
      {"hunyuan58 s1 q32x4x1 kv32x4x1", SM90_D3(30, 48, 80), SM90_D3(30, 40, 40), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(32, 4, 1), SM90_D3(32, 4, 1), 1, 24, 24, 0, 128, false, true},
      {"cosmos s1 q16x4x2 kv16x4x2", SM90_D3(16, 44, 80), SM90_D3(16, 24, 16), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(16, 4, 2), SM90_D3(16, 4, 2), 1, 32, 32, 0, 128, false, true},
      {"cosmos s1 q16x2x4 kv16x2x4", SM90_D3(16, 44, 80), SM90_D3(16, 24, 16), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(16, 2, 4), SM90_D3(16, 2, 4), 1, 32, 32, 0, 128, false, true},
      {"cosmos s1x8x16 q1x8x16 kv2x4x16", SM90_D3(16, 44, 80), SM90_D3(16, 24, 16), SM90_D3(1, 8, 16), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 8, 16), SM90_D3(2, 4, 16), 1, 32, 32, 0, 128, false, true},
      // Other head dims.
      {"flux s16x16 hdim64", SM90_D3(1, 256, 256), SM90_D3(1, 80, 80), SM90_D3(1, 16, 16), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 16, 8), 1, 24, 24, 0, 64, false, true},
      {"flux s16x16 hdim256 kv8x8", SM90_D3(1, 256, 256), SM90_D3(1, 80, 80), SM90_D3(1, 16, 16), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 8, 8), 1, 24, 24, 0, 256, false, true},
      {"flux s1x1 hdim256 kv8x8", SM90_D3(1, 256, 256), SM90_D3(1, 80, 80), SM90_D3(1, 1, 1), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 16, 8), SM90_D3(1, 8, 8), 1, 24, 24, 0, 256, false, true},
  };
}

// Per-item cost sweep (GNA_BENCH_SWEEP=1): 1-D, 32768 tokens, 24 heads, window = stride = W,
// so every item is one 128-token Q tile with W / 128 interior KV tiles and the item count
// (6144) is fixed. At equal clocks (Nsight Compute at a locked clock, or interleaved runs),
// time against tiles per item separates per-tile and per-item costs for W >= 1024; below
// that the items are memory-bound (128 KB of HBM traffic each, whatever W is).
inline std::vector<Case> item_cost_cases() {
  std::vector<Case> out;
  for (int w : {256, 512, 1024, 2048, 4096, 8192}) {
    out.push_back({"sweep1d w" + std::to_string(w), SM90_D3(1, 1, 32768), SM90_D3(1, 1, w),
                   SM90_D3(1, 1, w), SM90_D3(1, 1, 1), SM90_BOOL3(0, 0, 0), SM90_D3(1, 1, 128),
                   SM90_D3(1, 1, 128), 1, 24, 24, 0, 128, false, true});
  }
  return out;
}

#undef SM90_D3
#undef SM90_BOOL3

}  // namespace selftest
}  // namespace sm90
}  // namespace jax_gna
