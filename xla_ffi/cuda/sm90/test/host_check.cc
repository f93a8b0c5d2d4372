// Host-side check of the sm90 forward kernel's index math (no GPU, plain g++):
//
// (tests/test_host_checks_cpp.py builds and runs it; <gen> is the output of
// `python3 xla_ffi/generate_kernels.py --out <gen>`, for jax_gna/kernel_manifest.h)
//   g++ -std=c++17 -O2 -I xla_ffi/include -I xla_ffi/cuda/sm90 -I <gen>
//       xla_ffi/cuda/sm90/test/host_check.cc -o /tmp/sm90_host_check && /tmp/sm90_host_check
//
// For random GNA problems (rank 1-3, odd/even kernels, strides, dilations that do and do not
// divide L, causal dims, extra tokens, every power-of-two tile shape) it runs the kernel's
// own tile map / mask / scheduler code (tile_map.h, scheduler.h, support.h) and checks it
// against a per-element brute force over window.h's windows:
//  - the scheduler (static and dynamic) hands out every work item exactly once;
//  - decode_work is a bijection onto (batch, head, Q tile), with hkv = hq / (Hq / Hkv);
//  - Q-tile rows cover every query exactly once; a row is valid exactly when TMA would not
//    zero-fill it (all coordinates in bounds), for Q and for KV boxes (dilation folding);
//  - per query, the keys the kernel admits (interior tiles: all; boundary tiles: the mask
//    table words in the GMMA fragment layout) are exactly the spec's neighbourhood, each
//    once; interior tiles really are fully visible; the visited-tile count is
//    q_tile_kv_tiles' product;
//  - extra-token masks admit exactly the tokens < E;
//  - with a query range, the work items cover every query of the range exactly once;
//  - admission refuses what the kernel cannot serve;
//  - backward (bwd_tile_map.h): the work items' KV tiles cover every key exactly once, and
//    per key the queries the kernel admits over its visits (interior pairs: all; boundary
//    pairs: the Q-tile column tables in the GMMA fragment layout against the key's inverse
//    window) are exactly the queries whose neighbourhood holds the key, each once.
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "scheduler.h"
#include "bwd_tile_map.h"
#include "support.h"
#include "tile_map.h"

using namespace jax_gna;
using namespace jax_gna::sm90;

static int g_failures = 0;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      if (g_failures < 20) {                               \
        std::printf("FAIL %s:%d: ", __FILE__, __LINE__);   \
        std::printf(__VA_ARGS__);                          \
        std::printf("\n");                                 \
      }                                                    \
      ++g_failures;                                        \
    }                                                      \
  } while (0)

// Does query i see key j along one dim? The per-element neighbourhood from window.h (the one
// C++ copy of the window math, itself checked against jax_gna/semantics.py by
// tests/test_window_cpp.py); what is checked here is the kernel's tile-level code.
static bool spec_sees(int i, int j, int L, int k, int s, int d, bool causal) {
  if (i % d != j % d) return false;
  const Range r = window(i, DimParams{L, k, s, d, causal});
  return j / d >= r.begin && j / d < r.end;
}

struct Problem {
  int rank;
  DimParams dims[3];
  int q[3], kv[3];
  int batch, hq, hkv, extra;
  int head_dim, block_m, block_n;  // an sm90 forward instantiation of the kernel manifest
};

static FwdParams make_params(const Problem& pr) {
  FwdParams fp;
  fp.shape.batch = pr.batch;
  fp.shape.heads_q = pr.hq;
  fp.shape.heads_kv = pr.hkv;
  fp.shape.head_dim = pr.head_dim;
  fp.shape.head_dim_v = pr.head_dim;
  for (int i = 0; i < 3; ++i) fp.shape.dims[i] = pr.dims[i];
  fp.shape.num_extra = pr.extra;
  for (int i = 0; i < 3; ++i) {
    fp.tiles.q[i] = pr.q[i];
    fp.tiles.kv[i] = pr.kv[i];
  }
  fp.dtype = DType::kBFloat16;
  fp.scale = 0.125f;
  alignas(16) static char dummy[64];
  fp.q = fp.k = fp.v = fp.extra_k = fp.extra_v = dummy;
  fp.out = dummy;
  fp.lse = reinterpret_cast<float*>(dummy);
  auto dense = [&](int heads) {
    TokenStrides st;
    st.head = pr.head_dim;
    st.spatial[2] = int64_t(heads) * pr.head_dim;
    st.spatial[1] = st.spatial[2] * pr.dims[2].length;
    st.spatial[0] = st.spatial[1] * pr.dims[1].length;
    st.batch = st.spatial[0] * pr.dims[0].length;
    return st;
  };
  fp.q_strides = fp.out_strides = dense(pr.hq);
  fp.k_strides = fp.v_strides = dense(pr.hkv);
  fp.extra_k_strides.head = fp.extra_v_strides.head = pr.head_dim;
  fp.extra_k_strides.token = fp.extra_v_strides.token = int64_t(pr.hkv) * pr.head_dim;
  fp.extra_k_strides.batch = fp.extra_v_strides.batch = int64_t(pr.extra) * pr.hkv * pr.head_dim;
  TokenStrides ls;
  ls.head = 1;
  ls.spatial[2] = pr.hq;
  ls.spatial[1] = ls.spatial[2] * pr.dims[2].length;
  ls.spatial[0] = ls.spatial[1] * pr.dims[1].length;
  ls.batch = ls.spatial[0] * pr.dims[0].length;
  fp.lse_strides = ls;
  fp.num_sms = 132;
  return fp;
}

// Random power-of-two split of 2^total over the dims that are real (padded dims get 1).
static void random_tile(std::mt19937& rng, int rank, int log_total, int* t) {
  for (int i = 0; i < 3; ++i) t[i] = 1;
  const int first = 3 - rank;
  for (int b = 0; b < log_total; ++b) {
    const int i = first + static_cast<int>(rng() % rank);
    t[i] *= 2;
  }
}

static void check_scheduler(int total, int grid) {
  for (int dynamic = 0; dynamic < 2; ++dynamic) {
    int counter = 0;
    SchedulerParams sp{total, dynamic ? &counter : nullptr};
    auto fetch_add = [](int* c) { return (*c)++; };
    std::vector<int> seen(total, 0);
    // Round-robin over CTAs in lockstep (any interleaving gives the same set for dynamic).
    std::vector<int> cur(grid);
    for (int b = 0; b < grid; ++b) cur[b] = scheduler_first(b);
    bool any = true;
    while (any) {
      any = false;
      for (int b = 0; b < grid; ++b) {
        if (cur[b] >= total) continue;
        any = true;
        ++seen[cur[b]];
        cur[b] = scheduler_next(sp, cur[b], grid, fetch_add);
      }
    }
    for (int w = 0; w < total; ++w) CHECK(seen[w] == 1, "scheduler item %d seen %d times", w, seen[w]);
  }
}

static void check_problem(const Problem& pr) {
  const FwdParams fp = make_params(pr);
  ProblemDesc p;
  std::string why;
  const bool ok = admit_fwd(fp, pr.head_dim, pr.block_m, pr.block_n, &p, &why);
  CHECK(ok, "admission refused: %s", why.c_str());
  if (!ok) return;
  const int N = pr.block_n;
  CHECK(p.tab_entries <= 4 * (N + 5), "mask table too large: %d", p.tab_entries);
  std::vector<uint32_t> table(p.tab_entries);
  for (int i = 0; i < p.tab_entries; ++i) table[i] = mask_table_entry(p, i);

  const int grid = 1 + static_cast<int>(p.total_work % 7);
  check_scheduler(p.total_work, grid);

  // decode_work bijection.
  {
    std::set<std::vector<int>> seen;
    for (int w = 0; w < p.total_work; ++w) {
      const WorkCoord c = decode_work(p, w);
      CHECK(c.hkv == c.hq / p.q_per_kv, "hkv %d for hq %d", c.hkv, c.hq);
      CHECK(c.b >= 0 && c.b < p.batch && c.hq >= 0 && c.hq < p.heads_q, "decode range");
      seen.insert({c.b, c.hq, c.t[0], c.t[1], c.t[2]});
    }
    CHECK(static_cast<int>(seen.size()) == p.total_work, "decode_work not injective");
  }

  const int L[3] = {pr.dims[0].length, pr.dims[1].length, pr.dims[2].length};
  // Q tile count per dim: sum over dilation groups of ceil(group length / tile).
  for (int i = 0; i < 3; ++i) {
    int n = 0;
    for (int g = 0; g < pr.dims[i].dilation; ++g) {
      int lg = 0;
      for (int x = g; x < L[i]; x += pr.dims[i].dilation) ++lg;
      n += (lg + pr.q[i] - 1) / pr.q[i];
    }
    CHECK(n == p.dim[i].q_tiling.num_tiles, "dim %d: %d Q tiles, expected %d", i,
          p.dim[i].q_tiling.num_tiles, n);
  }
  const int ntok = L[0] * L[1] * L[2];
  std::vector<int> q_cover(ntok, 0);
  // Per (query, key) admitted count, over all Q tiles of one (b, h).
  std::vector<std::vector<int>> admitted(ntok);
  for (int t0 = 0; t0 < p.dim[0].q_tiling.num_tiles; ++t0)
    for (int t1 = 0; t1 < p.dim[1].q_tiling.num_tiles; ++t1)
      for (int t2 = 0; t2 < p.dim[2].q_tiling.num_tiles; ++t2) {
        const int tt[3] = {t0, t1, t2};
        QTileDim qd[3];
        for (int i = 0; i < 3; ++i) qd[i] = q_tile_dim(p.dim[i], tt[i]);
        // Rows: validity == TMA in-bounds; coverage.
        RowWindow rw[128];
        int row_tok[128];
        int valid_rows = 0;
        for (int r = 0; r < 128; ++r) {
          rw[r] = row_window(p, qd, r);
          int t[3];
          split_row(r, p.dim[0].q_log2, p.dim[1].q_log2, p.dim[2].q_log2, t);
          bool inb = true;
          int x[3];
          for (int i = 0; i < 3; ++i) {
            x[i] = token_coord(p.dim[i], qd[i].group, qd[i].q0 + t[i]);
            inb = inb && x[i] < L[i];
          }
          CHECK(inb == rw[r].valid, "row validity %d vs TMA bounds %d", rw[r].valid, inb);
          CHECK(row_valid(p, qd, r) == rw[r].valid, "row_valid disagrees with row_window");
          row_tok[r] = rw[r].valid ? (x[0] * L[1] + x[1]) * L[2] + x[2] : -1;
          if (rw[r].valid) ++q_cover[row_tok[r]];
          valid_rows += rw[r].valid;
        }
        CHECK(valid_rows > 0, "Q tile (%d, %d, %d) has no valid row", t0, t1, t2);
        // KV tiles.
        const int n_spatial = num_spatial_kv_tiles(qd);
        int expect_tiles = 1;
        for (int i = 0; i < 3; ++i) {
          const Range kr = q_tile_kv_tiles(qd[i].q0, qd[i].q1, qd[i].lg, p.dim[i].kernel,
                                           p.dim[i].stride, p.dim[i].causal != 0, p.dim[i].kv_tile);
          expect_tiles *= kr.end - kr.begin;
        }
        CHECK(n_spatial == expect_tiles, "visited tiles %d vs %d", n_spatial, expect_tiles);
        KVCursor cur = kv_cursor_begin(qd);
        bool any_boundary = false;
        for (int j = 0; j < n_spatial; ++j) {
          const bool interior = kv_interior(p, qd, cur);
          any_boundary = any_boundary || !interior;
          int col_tok[128];
          for (int c = 0; c < N; ++c) {
            int u[3];
            split_row(c, p.dim[0].kv_log2, p.dim[1].kv_log2, p.dim[2].kv_log2, u);
            bool inb = true, ingroup = true;
            int x[3];
            for (int i = 0; i < 3; ++i) {
              const int jj = cur.n[i] * p.dim[i].kv_tile + u[i];
              x[i] = token_coord(p.dim[i], qd[i].group, jj);
              inb = inb && x[i] < L[i];
              ingroup = ingroup && jj < qd[i].lg;
            }
            CHECK(inb == ingroup, "KV TMA bounds vs group");
            col_tok[c] = inb ? (x[0] * L[1] + x[1]) * L[2] + x[2] : -1;
          }
          // Kernel's admitted set, through the fragment layout: warpgroup wg, warp w, lane l.
          for (int wg = 0; wg < 2; ++wg)
            for (int w = 0; w < 4; ++w)
              for (int l = 0; l < 32; ++l) {
                const int quad = l % 4;
                const int row0 = wg * 64 + w * 16 + l / 4;
                uint32_t m[2];
                for (int h = 0; h < 2; ++h)
                  m[h] = interior ? ~0u : row_mask(p, table.data(), quad, rw[row0 + 8 * h], cur);
                for (int h = 0; h < 2; ++h) {
                  const int r = row0 + 8 * h;
                  for (int k = 0; k < N / 4; ++k) {
                    const int c = fragment_column(k, quad);
                    const bool vis = (m[h] >> k) & 1u;
                    if (!rw[r].valid) continue;
                    const int qt = row_tok[r];
                    const int kt = col_tok[c];
                    bool expect = kt >= 0;
                    if (expect) {
                      int qx[3] = {qt / (L[1] * L[2]), (qt / L[2]) % L[1], qt % L[2]};
                      int kx[3] = {kt / (L[1] * L[2]), (kt / L[2]) % L[1], kt % L[2]};
                      for (int i = 0; i < 3; ++i)
                        expect = expect && spec_sees(qx[i], kx[i], L[i], pr.dims[i].kernel_size,
                                                     pr.dims[i].stride, pr.dims[i].dilation,
                                                     pr.dims[i].causal);
                    }
                    if (interior) CHECK(expect, "interior tile has an invisible pair");
                    CHECK(vis == expect, "mask mismatch: row %d col %d kernel %d spec %d", r, c,
                          vis, expect);
                    if (vis && kt >= 0) {
                      if (admitted[qt].empty()) admitted[qt].assign(ntok, 0);
                      ++admitted[qt][kt];
                    }
                  }
                }
              }
          kv_cursor_next(cur, qd);
        }
        // The kernel skips row windows for items without boundary tiles.
        CHECK(q_tile_has_boundary(p, qd) == any_boundary, "q_tile_has_boundary %d, tiles say %d",
              q_tile_has_boundary(p, qd), any_boundary);
      }
  for (int t = 0; t < ntok; ++t) CHECK(q_cover[t] == 1, "query %d covered %d times", t, q_cover[t]);
  // Every query's admitted keys == the spec neighbourhood, each exactly once.
  for (int qt = 0; qt < ntok; ++qt) {
    int qx[3] = {qt / (L[1] * L[2]), (qt / L[2]) % L[1], qt % L[2]};
    for (int kt = 0; kt < ntok; ++kt) {
      int kx[3] = {kt / (L[1] * L[2]), (kt / L[2]) % L[1], kt % L[2]};
      bool expect = true;
      for (int i = 0; i < 3; ++i)
        expect = expect && spec_sees(qx[i], kx[i], L[i], pr.dims[i].kernel_size, pr.dims[i].stride,
                                     pr.dims[i].dilation, pr.dims[i].causal);
      const int got = admitted[qt].empty() ? 0 : admitted[qt][kt];
      CHECK(got == (expect ? 1 : 0), "query %d key %d admitted %d times, spec %d", qt, kt, got,
            expect);
    }
  }
  // Extra tokens.
  for (int e = 0; e < p.num_extra_tiles; ++e) {
    const int e0 = e * N;
    for (int quad = 0; quad < 4; ++quad) {
      const uint32_t m = extra_mask(p, quad, e0);
      for (int k = 0; k < N / 4; ++k) {
        const bool vis = (m >> k) & 1u;
        CHECK(vis == (e0 + fragment_column(k, quad) < p.num_extra), "extra mask");
      }
    }
  }
}

// With a query range (ProblemShape::query_begin/end): the work items are the Q tiles of the
// restricted tiling (window.h group_tiling_range); every query of the range is a valid row of
// exactly one of them per (batch, head), none twice.
static void check_query_range(const Problem& pr, std::mt19937& rng) {
  FwdParams fp = make_params(pr);
  for (int i = 0; i < 3; ++i) {
    const int L = pr.dims[i].length;
    const int lo = static_cast<int>(rng() % L);
    fp.shape.query_begin[i] = lo;
    fp.shape.query_end[i] = lo + 1 + static_cast<int>(rng() % (L - lo));
  }
  ProblemDesc p;
  std::string why;
  if (!admit_fwd(fp, pr.head_dim, pr.block_m, pr.block_n, &p, &why)) {
    CHECK(false, "admission refused with a query range: %s", why.c_str());
    return;
  }
  const int L[3] = {pr.dims[0].length, pr.dims[1].length, pr.dims[2].length};
  const int ntok = L[0] * L[1] * L[2];
  std::vector<int> cover(size_t(ntok) * pr.batch * pr.hq, 0);
  for (int w = 0; w < p.total_work; ++w) {
    const WorkCoord c = decode_work(p, w);
    QTileDim qd[3];
    for (int i = 0; i < 3; ++i) qd[i] = q_tile_dim(p.dim[i], c.t[i]);
    for (int r = 0; r < 128; ++r) {
      if (!row_valid(p, qd, r)) continue;
      int t[3], x[3];
      split_row(r, p.dim[0].q_log2, p.dim[1].q_log2, p.dim[2].q_log2, t);
      for (int i = 0; i < 3; ++i) x[i] = token_coord(p.dim[i], qd[i].group, qd[i].q0 + t[i]);
      ++cover[(size_t(c.b) * pr.hq + c.hq) * ntok + (x[0] * L[1] + x[1]) * L[2] + x[2]];
    }
  }
  for (int b = 0; b < pr.batch; ++b)
    for (int h = 0; h < pr.hq; ++h)
      for (int x0 = 0; x0 < L[0]; ++x0)
        for (int x1 = 0; x1 < L[1]; ++x1)
          for (int x2 = 0; x2 < L[2]; ++x2) {
            const int x[3] = {x0, x1, x2};
            bool in = true;
            for (int i = 0; i < 3; ++i)
              in = in && x[i] >= fp.shape.query_begin[i] && x[i] < fp.shape.query_end[i];
            const int n = cover[(size_t(b) * pr.hq + h) * ntok + (x0 * L[1] + x1) * L[2] + x2];
            CHECK(in ? n == 1 : n <= 1, "query range: token (%d, %d, %d) covered %d times",
                  x0, x1, x2, n);
          }
}

static void check_refusals() {
  Problem pr{};
  pr.rank = 2;
  pr.dims[0] = {1, 1, 1, 1, false};
  pr.dims[1] = {32, 8, 1, 1, false};
  pr.dims[2] = {32, 8, 1, 1, false};
  pr.q[0] = 1; pr.q[1] = 16; pr.q[2] = 8;
  pr.kv[0] = 1; pr.kv[1] = 16; pr.kv[2] = 8;
  pr.batch = 1; pr.hq = 2; pr.hkv = 1; pr.extra = 0; pr.head_dim = 128; pr.block_m = 128;
  pr.block_n = 128;
  ProblemDesc p;
  std::string why;
  FwdParams fp = make_params(pr);
  CHECK(admit_fwd(fp, 128, 128, 128, &p, &why), "baseline refused: %s", why.c_str());
  FwdParams bad = fp;
  bad.tiles.q[2] = 4;  // 64 tokens
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "Q tile of 64 tokens admitted");
  bad = fp;
  bad.tiles.kv[1] = 8; bad.tiles.kv[2] = 16; bad.shape.dims[1].dilation = 9;
  bad.shape.dims[1].kernel_size = 3;
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "dilation 9 admitted");
  bad = fp;
  bad.shape.dims[2].dilation = 2;  // kv box 8 * 2 = 16 fine, q box 8 * 2 fine
  bad.shape.dims[2].kernel_size = 4;
  CHECK(admit_fwd(bad, 128, 128, 128, &p, &why), "dilation 2 refused: %s", why.c_str());
  bad = fp;
  bad.q_strides.head = 256;
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "non-contiguous heads admitted");
  bad = fp;
  bad.dtype = DType::kFloat32;
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "float32 admitted");
  bad = fp;
  bad.shape.head_dim_v = 64;
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "head_dim_v mismatch admitted");
  bad = fp;
  bad.tiles.q[1] = 128; bad.tiles.q[2] = 1;
  bad.shape.dims[1].dilation = 4;
  bad.shape.dims[1].kernel_size = 4;
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "box 512 admitted");
  // The epilogue writes O in 16-byte row chunks.
  bad = fp;
  bad.out = static_cast<char*>(fp.out) + 8;
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "8-byte aligned output admitted");
  bad = fp;
  bad.out_strides.spatial[1] += 4;
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "output stride not a multiple of 8 admitted");
  // The epilogue's TMA map folds (heads, head_dim) of O into one dim, as for Q.
  bad = fp;
  bad.out_strides.head += 8;
  CHECK(!admit_fwd(bad, 128, 128, 128, &p, &why), "non-contiguous output heads admitted");
}

// The backward's tile map against the brute force (see the top of this file).
static void check_bwd_problem(Problem pr) {
  pr.extra = 0;
  FwdParams fp = make_params(pr);
  BwdParams bp;
  bp.fwd = fp;
  alignas(16) static char dummy[64];
  bp.dout = bp.dk = bp.dv = dummy;
  bp.dq_accum = reinterpret_cast<float*>(dummy);
  bp.delta = reinterpret_cast<float*>(dummy);
  bp.dout_strides = bp.dq_strides = fp.q_strides;
  bp.dk_strides = bp.dv_strides = fp.k_strides;
  BwdDesc d;
  std::string why;
  const bool ok = admit_bwd(bp, pr.head_dim, pr.block_m, pr.block_n, &d, &why);
  CHECK(ok, "backward refused: %s", why.c_str());
  if (!ok) return;
  const int L[3] = {pr.dims[0].length, pr.dims[1].length, pr.dims[2].length};
  const int tokens = L[0] * L[1] * L[2];
  std::vector<uint32_t> table(d.q_cols.entries);
  for (int i = 0; i < d.q_cols.entries; ++i) table[i] = column_table_entry(d.q_cols, i);
  // seen[b][hkv][key] and admitted[b][hq][key][query]
  std::vector<int> key_seen(size_t(pr.batch) * pr.hkv * tokens, 0);
  std::vector<int> admitted(size_t(pr.batch) * pr.hq * tokens * tokens, 0);
  auto coord = [&](const int x[3]) { return (x[0] * L[1] + x[1]) * L[2] + x[2]; };
  for (int w = 0; w < d.total_work; ++w) {
    const BwdItem it = make_bwd_item(d, w);
    for (int r = 0; r < pr.block_n; ++r) {
      int t[3], kx[3];
      split_row(r, d.prob.dim[0].kv_log2, d.prob.dim[1].kv_log2, d.prob.dim[2].kv_log2, t);
      bool kvalid = true;
      for (int i = 0; i < 3; ++i) {
        const int jj = it.kd[i].k0 + t[i];
        kvalid = kvalid && jj < it.kd[i].lg;
        kx[i] = token_coord(d.prob.dim[i], it.kd[i].group, jj);
      }
      if (kvalid) ++key_seen[(size_t(it.b) * pr.hkv + it.hkv) * tokens + coord(kx)];
      const RowWindow rw = key_row_window(d, it, r);
      VisitCursor cur = visit_begin(it);
      for (int v = 0; v < num_visits(d, it); ++v, visit_next(cur, it)) {
        const BwdVisit vis = make_visit(d, it, cur);
        for (int c = 0; c < pr.block_m; ++c) {
          int u[3], qx[3];
          split_row(c, d.prob.dim[0].q_log2, d.prob.dim[1].q_log2, d.prob.dim[2].q_log2, u);
          bool qvalid = true;
          for (int i = 0; i < 3; ++i) {
            const int ii = vis.q0[i] + u[i];
            qvalid = qvalid && ii < it.kd[i].lg;
            qx[i] = token_coord(d.prob.dim[i], it.kd[i].group, ii);
          }
          const int quad = (c % 8) / 2, k = 2 * (c / 8) + (c % 2);
          const bool in = vis.interior ||
                          ((window_word(table.data(), d.q_cols, quad, rw.ws, rw.we, vis.q0) >> k) & 1u);
          if (vis.interior && qvalid && kvalid) {
            bool all = true;
            for (int i = 0; i < 3; ++i)
              all = all && spec_sees(qx[i], kx[i], L[i], pr.dims[i].kernel_size,
                                     pr.dims[i].stride, pr.dims[i].dilation, pr.dims[i].causal);
            CHECK(all, "bwd interior pair not visible (w=%d r=%d c=%d)", w, r, c);
          }
          // Rows past a group's end must admit nothing (their K is zero-filled but their
          // probabilities would still reach dQ through dS).
          if (!kvalid && !vis.interior) CHECK(!in, "bwd phantom key row admitted (w=%d r=%d)", w, r);
          if (in && qvalid && kvalid)
            ++admitted[((size_t(it.b) * pr.hq + vis.hq) * tokens + coord(kx)) * tokens + coord(qx)];
        }
      }
    }
  }
  for (size_t i = 0; i < key_seen.size(); ++i)
    CHECK(key_seen[i] == 1, "bwd key %zu covered %d times", i, key_seen[i]);
  int bad = 0;
  for (int b = 0; b < pr.batch; ++b)
    for (int h = 0; h < pr.hq; ++h)
      for (int kk = 0; kk < tokens; ++kk)
        for (int qq = 0; qq < tokens; ++qq) {
          int kx[3] = {kk / (L[1] * L[2]), (kk / L[2]) % L[1], kk % L[2]};
          int qx[3] = {qq / (L[1] * L[2]), (qq / L[2]) % L[1], qq % L[2]};
          bool sees = true;
          for (int i = 0; i < 3; ++i)
            sees = sees && spec_sees(qx[i], kx[i], L[i], pr.dims[i].kernel_size, pr.dims[i].stride,
                                     pr.dims[i].dilation, pr.dims[i].causal);
          const int got = admitted[((size_t(b) * pr.hq + h) * tokens + kk) * tokens + qq];
          if (got != (sees ? 1 : 0) && bad++ < 5)
            CHECK(false, "bwd pair query %d key %d head %d: admitted %d times, sees %d", qq, kk, h,
                  got, int(sees));
        }
}

int main(int argc, char** argv) {
  const int iters = argc > 1 ? std::atoi(argv[1]) : 300;
  std::mt19937 rng(1234);
  check_refusals();
  // Every sm90 forward instantiation of the kernel manifest (bf16: the index math does not
  // depend on the dtype).
  std::vector<manifest::Instance> sm90_fwd;
  for (const manifest::Instance& k : manifest::kInstances)
    if (k.family == "sm90" && k.direction == "fwd" && k.dtype == DType::kBFloat16)
      sm90_fwd.push_back(k);
  int done = 0;
  for (int it = 0; it < iters; ++it) {
    Problem pr{};
    pr.rank = 1 + static_cast<int>(rng() % 3);
    const manifest::Instance& k = sm90_fwd[rng() % sm90_fwd.size()];
    pr.head_dim = k.head_dim;
    pr.block_m = k.q_tile_tokens;
    pr.block_n = k.kv_tile_tokens;
    for (int i = 0; i < 3; ++i) pr.dims[i] = {1, 1, 1, 1, false};
    // Keep token counts small: rank 1 up to 300, rank 2 up to ~24^2, rank 3 up to ~10^3.
    const int max_len = pr.rank == 1 ? 300 : (pr.rank == 2 ? 24 : 10);
    for (int i = 3 - pr.rank; i < 3; ++i) {
      DimParams& d = pr.dims[i];
      d.length = 2 + static_cast<int>(rng() % (max_len - 1));
      d.dilation = 1 + (rng() % 3 == 0 ? static_cast<int>(rng() % 4) : 0);
      while (2 * d.dilation > d.length) --d.dilation;
      const int kmax = d.length / d.dilation;
      d.kernel_size = 2 + static_cast<int>(rng() % (kmax - 1));
      d.stride = 1 + (rng() % 2 ? static_cast<int>(rng() % d.kernel_size) : 0);
      d.causal = rng() % 4 == 0;
    }
    random_tile(rng, pr.rank, ilog2(pr.block_m), pr.q);
    random_tile(rng, pr.rank, ilog2(pr.block_n), pr.kv);
    // Respect the TMA box limit (box = tile * dilation <= kMaxBox); redraw otherwise.
    bool fits = true;
    for (int i = 0; i < 3; ++i)
      fits = fits && pr.q[i] * pr.dims[i].dilation <= kMaxBox &&
             pr.kv[i] * pr.dims[i].dilation <= kMaxBox;
    if (!fits) continue;
    pr.batch = 1 + static_cast<int>(rng() % 2);
    pr.hkv = 1 + static_cast<int>(rng() % 2);
    pr.hq = pr.hkv * (1 + static_cast<int>(rng() % 3));
    pr.extra = rng() % 3 == 0 ? static_cast<int>(rng() % 200) : 0;
    check_problem(pr);
    check_query_range(pr, rng);
    // The backward instantiation of this head dim, if the manifest has one (its own tiles).
    const manifest::Instance* bk =
        manifest::find("sm90", "bwd", DType::kBFloat16, pr.head_dim);
    if (bk != nullptr && (pr.rank > 1 || pr.dims[2].length <= 150)) {
      Problem bp = pr;
      bp.block_m = bk->q_tile_tokens;
      bp.block_n = bk->kv_tile_tokens;
      random_tile(rng, pr.rank, ilog2(bp.block_m), bp.q);
      random_tile(rng, pr.rank, ilog2(bp.block_n), bp.kv);
      bool bfits = true;
      for (int i = 0; i < 3; ++i)
        bfits = bfits && bp.q[i] * bp.dims[i].dilation <= kMaxBox &&
                bp.kv[i] * bp.dims[i].dilation <= kMaxBox;
      if (bfits) check_bwd_problem(bp);
    }
    ++done;
  }
  std::printf("sm90 host check: %d random problems, %d failures\n", done, g_failures);
  return g_failures == 0 ? 0 : 1;
}
