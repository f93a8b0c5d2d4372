// Host tool (no GPU): ranks every (Q box, KV box) pair of power-of-two sides for a GNA
// problem by the sm90 kernel's own tile map (tile_map.h): visited KV tiles, boundary
// (masked) tiles, useful fraction of the tile FLOPs and a time estimate.
//
//   g++ -std=c++17 -O2 -I xla_ffi/include -I xla_ffi/cuda/sm90
//       xla_ffi/cuda/sm90/test/tile_search.cc -o /tmp/sm90_tile_search
//   /tmp/sm90_tile_search            (the benchmark suite's stride-1 cases)
//   /tmp/sm90_tile_search L0 L1 L2 k0 k1 k2 s0 s1 s2 [kv_tokens [top]]
//
// Cost model: time ~ interior tiles + boundary_cost x boundary tiles, with boundary_cost =
// 1.12 (measured on the H200: flux s1 per-tile 588.6 TF/s at 50% boundary tiles vs 593-600
// on interior-only cases; hunyuan s1 529 at 83%). Tiles are per (batch, head); the ranking
// does not depend on B or H.
#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "support.h"
#include "tile_map.h"

using namespace jax_gna;
using namespace jax_gna::sm90;

struct Problem {
  const char* name;
  int L[3], k[3], s[3], d[3];
  bool c[3];
  int cur_q[3], cur_kv[3];  // the benchmark's current boxes
};

struct Result {
  int q[3], kv[3];
  double tiles, boundary, useful, cost;
};

static double attended_pairs(const Problem& p) {
  double prod = 1;
  for (int i = 0; i < 3; ++i) {
    double s = 0;
    for (int x = 0; x < p.L[i]; ++x) {
      const int g = x % p.d[i], ii = x / p.d[i];
      const int lg = p.L[i] / p.d[i] + (g < p.L[i] % p.d[i] ? 1 : 0);
      const Range w = window_in_group(ii, lg, p.k[i], p.s[i], p.c[i]);
      s += imin(w.end, lg) - w.begin;
    }
    prod *= s;
  }
  return prod;
}

static bool evaluate(const Problem& pr, const int (&q)[3], const int (&kv)[3], int kv_tokens,
                     double pairs, Result* out) {
  FwdParams fp;
  fp.shape.batch = 1;
  fp.shape.heads_q = fp.shape.heads_kv = 1;
  fp.shape.head_dim = fp.shape.head_dim_v = kv_tokens == 64 ? 256 : 128;
  for (int i = 0; i < 3; ++i) {
    fp.shape.dims[i] = DimParams{pr.L[i], pr.k[i], pr.s[i], pr.d[i], pr.c[i]};
    fp.tiles.q[i] = q[i];
    fp.tiles.kv[i] = kv[i];
  }
  alignas(16) static char dummy[16];
  fp.q = fp.k = fp.v = dummy;
  fp.out = dummy;
  auto dense = [&]() {
    TokenStrides st;
    st.head = fp.shape.head_dim;
    st.spatial[2] = st.head;
    st.spatial[1] = st.spatial[2] * pr.L[2];
    st.spatial[0] = st.spatial[1] * pr.L[1];
    st.batch = st.spatial[0] * pr.L[0];
    return st;
  };
  fp.q_strides = fp.k_strides = fp.v_strides = fp.out_strides = dense();
  ProblemDesc p;
  std::string why;
  if (!admit_fwd(fp, fp.shape.head_dim, kv_tokens, &p, &why)) return false;
  double tiles = 0, boundary = 0;
  for (int w = 0; w < p.total_work; ++w) {
    const WorkCoord wc = decode_work(p, w);
    QTileDim qd[3];
    for (int i = 0; i < 3; ++i) qd[i] = q_tile_dim(p.dim[i], wc.t[i]);
    const int n = num_spatial_kv_tiles(qd);
    KVCursor cur = kv_cursor_begin(qd);
    for (int j = 0; j < n; ++j) {
      if (!kv_interior(p, qd, cur)) boundary += 1;
      kv_cursor_next(cur, qd);
    }
    tiles += n;
  }
  Result r;
  for (int i = 0; i < 3; ++i) {
    r.q[i] = q[i];
    r.kv[i] = kv[i];
  }
  r.tiles = tiles;
  r.boundary = boundary;
  r.useful = pairs / (tiles * 128.0 * kv_tokens);
  r.cost = (tiles - boundary) + 1.12 * boundary;
  *out = r;
  return true;
}

static std::vector<std::array<int, 3>> boxes(int tokens, const int (&L)[3], const int (&d)[3]) {
  std::vector<std::array<int, 3>> out;
  int total = 0;
  while ((1 << total) < tokens) ++total;
  for (int a = 0; a <= total; ++a)
    for (int b = 0; a + b <= total; ++b) {
      const int c = total - a - b;
      const int e[3] = {a, b, c};
      bool ok = true;
      for (int i = 0; i < 3; ++i) {
        // No side beyond the next power of two >= the group length (pure padding), and the
        // TMA box limit.
        const int lg = (L[i] + d[i] - 1) / d[i];
        int cap = 0;
        while ((1 << cap) < lg) ++cap;
        if (e[i] > cap || (1 << e[i]) * d[i] > kMaxBox) ok = false;
      }
      if (ok) out.push_back({1 << a, 1 << b, 1 << c});
    }
  return out;
}

static void search(const Problem& pr, int kv_tokens, int top) {
  const double pairs = attended_pairs(pr);
  std::vector<Result> all;
  for (const auto& qb : boxes(128, pr.L, pr.d))
    for (const auto& kb : boxes(kv_tokens, pr.L, pr.d)) {
      const int q[3] = {qb[0], qb[1], qb[2]}, kv[3] = {kb[0], kb[1], kb[2]};
      Result r;
      if (evaluate(pr, q, kv, kv_tokens, pairs, &r)) all.push_back(r);
    }
  std::sort(all.begin(), all.end(), [](const Result& a, const Result& b) {
    return a.cost != b.cost ? a.cost < b.cost : a.boundary < b.boundary;
  });
  Result cur{};
  const bool have_cur = pr.cur_q[0] > 0 && evaluate(pr, pr.cur_q, pr.cur_kv, kv_tokens, pairs, &cur);
  std::printf("%s: L %dx%dx%d k %dx%dx%d s %dx%dx%d d %dx%dx%d, kv tile %d tokens, "
              "%zu candidates\n", pr.name, pr.L[0], pr.L[1], pr.L[2], pr.k[0], pr.k[1],
              pr.k[2], pr.s[0], pr.s[1], pr.s[2], pr.d[0], pr.d[1], pr.d[2], kv_tokens,
              all.size());
  auto line = [&](const char* tag, const Result& r) {
    std::printf("  %-8s q %3dx%3dx%3d kv %3dx%3dx%3d  tiles %8.0f  boundary %5.1f%%  useful "
                "%5.1f%%  est. time %.3f x current\n", tag, r.q[0], r.q[1], r.q[2], r.kv[0],
                r.kv[1], r.kv[2], r.tiles, 100.0 * r.boundary / r.tiles, 100.0 * r.useful,
                have_cur ? r.cost / cur.cost : 0.0);
  };
  if (have_cur) line("current", cur);
  for (int i = 0; i < top && i < static_cast<int>(all.size()); ++i) line(i == 0 ? "best" : "", all[i]);
}

#define D3(a, b, c) {a, b, c}
static const Problem kSuite[] = {
    {"flux 256x256 k80 s1", D3(1, 256, 256), D3(1, 80, 80), D3(1, 1, 1), D3(1, 1, 1), D3(0, 0, 0), D3(1, 16, 8), D3(1, 16, 8)},
    {"flux 256x256 k80 s16x1", D3(1, 256, 256), D3(1, 80, 80), D3(1, 16, 1), D3(1, 1, 1), D3(0, 0, 0), D3(1, 16, 8), D3(1, 16, 8)},
    {"hunyuan k18x24x24 s1", D3(30, 48, 80), D3(18, 24, 24), D3(1, 1, 1), D3(1, 1, 1), D3(0, 0, 0), D3(2, 8, 8), D3(2, 8, 8)},
    {"hunyuan58 k30x40x40 s1", D3(30, 48, 80), D3(30, 40, 40), D3(1, 1, 1), D3(1, 1, 1), D3(0, 0, 0), D3(2, 8, 8), D3(2, 8, 8)},
    {"cosmos k16x24x16 s1", D3(16, 44, 80), D3(16, 24, 16), D3(1, 1, 1), D3(1, 1, 1), D3(0, 0, 0), D3(2, 8, 8), D3(2, 8, 8)},
    {"cosmos k16x24x16 s1x8x16", D3(16, 44, 80), D3(16, 24, 16), D3(1, 8, 16), D3(1, 1, 1), D3(0, 0, 0), D3(2, 8, 8), D3(2, 8, 8)},
    {"seq32k k2048 s1", D3(1, 1, 32768), D3(1, 1, 2048), D3(1, 1, 1), D3(1, 1, 1), D3(0, 0, 0), D3(1, 1, 128), D3(1, 1, 128)},
};

int main(int argc, char** argv) {
  if (argc >= 10) {
    Problem p{"problem", {}, {}, {}, {1, 1, 1}, {false, false, false}, {0, 0, 0}, {0, 0, 0}};
    for (int i = 0; i < 3; ++i) {
      p.L[i] = std::atoi(argv[1 + i]);
      p.k[i] = std::atoi(argv[4 + i]);
      p.s[i] = std::atoi(argv[7 + i]);
    }
    const int kv = argc > 10 ? std::atoi(argv[10]) : 128;
    const int top = argc > 11 ? std::atoi(argv[11]) : 10;
    search(p, kv, top);
    return 0;
  }
  for (const Problem& p : kSuite) search(p, 128, 6);
  return 0;
}
