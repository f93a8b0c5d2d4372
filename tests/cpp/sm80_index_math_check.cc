// Host-side self-check of the sm80 kernels' index math (xla_ffi/cuda/sm80/index_math.h,
// tile_scheduler.h), against brute force built from the spec formula (docs/semantics.md, written
// out again here independently of window.h). No GPU needed:
//
//   g++ -std=c++17 -O2 -I xla_ffi/include -I xla_ffi/cuda
//       tests/cpp/sm80_index_math_check.cc -o /tmp/sm80_check && /tmp/sm80_check [n]
//
// Checks, over random problems (rank 1-3, odd/even kernels, strides, dilations that do and
// do not divide L, causal dims, 1-D/2-D/3-D tile boxes, partial tiles):
//  1. the packed-interval (SWAR) test equals per-dim compares;
//  2. the forward grid decode visits every Q tile of every dilation-group combination once
//     (natural and heavy-first order), and rows map to the right tokens (partial tiles);
//  3. per Q tile, the visited KV box holds every key any of its queries sees; interior KV
//     tiles are really all-visible; the element mask of boundary tiles equals brute force;
//     the extra-token tiles cover [0, E) once;
//  4. backward: per KV tile, the Q box holds every query that sees any of its keys, interior
//     pairs are all-visible, the inverse-window mask equals brute force, and the extra-token
//     splits cover all Q tiles once;
//  5. with a query range (ProblemShape::query_begin/end, half the problems): the Q tiles of
//     the forward grid and of the backward's inverse boxes cover every query of the range
//     (each once), and each of them reaches into the range (window.h group_tiling_range).
#include <cstdio>
#include <cstdlib>
#include <random>
#include <set>
#include <tuple>
#include <vector>

#include "sm80/tile_scheduler.h"

using namespace jax_gna;
using namespace jax_gna::sm80;

static int g_failures = 0;
#define CHECK(cond, ...)                                   \
  do {                                                     \
    if (!(cond)) {                                         \
      if (++g_failures <= 20) {                            \
        std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
        std::printf(__VA_ARGS__);                          \
        std::printf("\n");                                 \
      }                                                    \
    }                                                      \
  } while (0)

// The spec, independently: does query coordinate i see key coordinate j along one dim?
static bool spec_sees(int i, int j, const DimParams& p) {
  const int k = p.kernel_size, s = p.stride, d = p.dilation, L = p.length;
  if (i % d != j % d) return false;
  const int g = i % d, ii = i / d, jj = j / d;
  const int lg = L / d + (g < L % d ? 1 : 0);
  int start, end;
  if (!p.causal) {
    const int leader = std::min((ii / s) * s + s / 2, lg - 1);
    start = std::max(std::min(leader - k / 2, lg - k), 0);
    end = start + k;
  } else {
    const int leader = std::min((ii / s) * s + s - 1, lg - 1);
    start = std::max(leader - k + 1, 0);
    end = ii + 1;
  }
  return jj >= start && jj < end;
}

struct Problem {
  ProblemShape shape;
  TileShape tiles;
  int q_tokens, kv_tokens;
};

static int rnd(std::mt19937& rng, int lo, int hi) {  // inclusive
  return std::uniform_int_distribution<int>(lo, hi)(rng);
}

// A random box of `tokens` tokens (power of two) over the active dims.
static void random_box(std::mt19937& rng, int rank, int tokens, int out[3]) {
  out[0] = out[1] = out[2] = 1;
  int left = tokens;
  while (left > 1) {
    const int d = 3 - rank + rnd(rng, 0, rank - 1);
    out[d] *= 2;
    left /= 2;
  }
}

static Problem random_problem(std::mt19937& rng) {
  Problem pr;
  const int rank = rnd(rng, 1, 3);
  for (int d = 0; d < 3; ++d) pr.shape.dims[d] = DimParams{};
  for (int a = 0; a < rank; ++a) {
    DimParams& p = pr.shape.dims[3 - rank + a];
    p.dilation = rnd(rng, 1, 3);
    p.kernel_size = rnd(rng, 2, 7);
    const int lmin = p.kernel_size * p.dilation;
    p.length = rnd(rng, lmin, lmin + (rank == 1 ? 60 : 14));
    p.stride = rnd(rng, 1, p.kernel_size);
    p.causal = rnd(rng, 0, 3) == 0;
  }
  pr.shape.batch = 1;
  pr.shape.heads_q = pr.shape.heads_kv = 1;
  pr.shape.num_extra = rnd(rng, 0, 1) ? rnd(rng, 1, 40) : 0;
  for (int d = 0; d < 3; ++d) {
    const int L = pr.shape.dims[d].length;
    pr.shape.query_begin[d] = 0;
    pr.shape.query_end[d] = rnd(rng, 0, 1) ? kAllQueries : L;
    if (rnd(rng, 0, 1)) {  // a random non-empty range [lo, hi)
      const int lo = rnd(rng, 0, L - 1);
      pr.shape.query_begin[d] = lo;
      pr.shape.query_end[d] = rnd(rng, lo + 1, L);
    }
  }
  const int q_choices[] = {16, 32, 64, 128};
  const int kv_choices[] = {8, 16, 32, 64};
  pr.q_tokens = q_choices[rnd(rng, 0, 3)];
  pr.kv_tokens = kv_choices[rnd(rng, 0, 3)];
  random_box(rng, rank, pr.q_tokens, pr.tiles.q);
  random_box(rng, rank, pr.kv_tokens, pr.tiles.kv);
  return pr;
}

static void check_swar(std::mt19937& rng) {
  for (int t = 0; t < 200000; ++t) {
    int y[3], lo[3], hi[3];
    for (int d = 0; d < 3; ++d) {
      y[d] = rnd(rng, 0, 255);
      lo[d] = rnd(rng, -300, 300);
      hi[d] = rnd(rng, -300, 300);
    }
    const uint32_t code = pack_code(y[0], y[1], y[2]);
    for (int d = 0; d < 3; ++d) CHECK(code_field(code, d) == y[d], "field %d", d);
    const BoxInterval iv = box_interval(lo[0], lo[1], lo[2], hi[0], hi[1], hi[2]);
    bool want = true;
    for (int d = 0; d < 3; ++d) want = want && y[d] >= lo[d] && y[d] < hi[d];
    CHECK(in_box_interval(code, code | kCodeGuard, iv) == want, "y=(%d,%d,%d)", y[0], y[1], y[2]);
  }
  int shape[3] = {4, 2, 8};
  for (int r = 0; r < 64; ++r) {
    const uint32_t c = box_code(r, shape);
    CHECK((code_field(c, 0) * 2 + code_field(c, 1)) * 8 + code_field(c, 2) == r, "row %d", r);
  }
}

// Token coordinates (per dim) of box row r of a tile, or false when the row does not exist.
static bool row_coords(const DimTile t[3], const int box[3], int r, const ProblemShape& s,
                       int c[3]) {
  const uint32_t code = box_code(r, box);
  bool valid = true;
  for (int d = 0; d < 3; ++d) {
    const int local = t[d].begin + code_field(code, d);
    valid = valid && local < t[d].group_len;
    c[d] = t[d].group + s.dims[d].dilation * local;
  }
  return valid;
}

static bool in_query_range(const int qc[3], const ProblemShape& s) {
  for (int d = 0; d < 3; ++d) {
    if (qc[d] < s.query_begin[d] || qc[d] >= s.query_end[d]) return false;
  }
  return true;
}

static bool sees3(const int qc[3], const int kc[3], const ProblemShape& s) {
  for (int d = 0; d < 3; ++d) {
    if (!spec_sees(qc[d], kc[d], s.dims[d])) return false;
  }
  return true;
}

static void check_problem(const Problem& pr) {
  const ProblemShape& s = pr.shape;
  const TileShape& tiles = pr.tiles;
  const TileGrid qg = q_tile_grid(s, tiles.q);
  const TileGrid kg = tile_grid(s, tiles.kv);
  int64_t n_tokens = 1;
  for (int d = 0; d < 3; ++d) n_tokens *= s.dims[d].length;

  // 2. decode covers each Q tile once; rows cover each token once.
  for (int heavy = 0; heavy < 2; ++heavy) {
    std::set<std::tuple<int, int, int, int, int, int>> seen;
    std::vector<int> token_hits(n_tokens, 0);
    for (int64_t x = 0; x < qg.total(); ++x) {
      DimTile q[3];
      decode_tile(x, qg, s, tiles.q, heavy != 0, q);
      DimTile q32[3];  // the 32-bit path the forward kernels take
      decode_tile(int(x), qg, s, tiles.q, heavy != 0, q32);
      for (int d = 0; d < 3; ++d) {
        CHECK(q32[d].group == q[d].group && q32[d].begin == q[d].begin &&
                  q32[d].end == q[d].end && q32[d].group_len == q[d].group_len,
              "dim %d: 32-bit decode of tile %lld differs", d, (long long)x);
      }
      seen.insert({q[0].group, q[0].begin, q[1].group, q[1].begin, q[2].group, q[2].begin});
      for (int d = 0; d < 3; ++d) {  // the tile (unclipped) meets the range's group-local
        const int dil = s.dims[d].dilation;  // hull, the same for every group
        const int lo = s.query_begin[d] / dil;
        const int hi = ceil_div(imin(s.query_end[d], s.dims[d].length), dil);
        CHECK(q[d].begin < hi && q[d].begin + tiles.q[d] > lo,
              "dim %d: Q tile [%d, +%d) outside [%d, %d)", d, q[d].begin, tiles.q[d], lo, hi);
      }
      const TileRows rows = tile_rows(q, s);
      const int64_t strides[3] = {int64_t(s.dims[1].length) * s.dims[2].length,
                                  s.dims[2].length, 1};
      for (int r = 0; r < pr.q_tokens; ++r) {
        int c[3];
        const bool valid = row_coords(q, tiles.q, r, s, c);
        int64_t off = -1;
        const bool valid2 = row_offset(rows, box_code(r, tiles.q), strides, &off);
        CHECK(valid == valid2, "row validity r=%d", r);
        if (valid) {
          CHECK(off == c[0] * strides[0] + c[1] * strides[1] + c[2], "row offset");
          CHECK(off >= 0 && off < n_tokens, "offset range");
          if (off >= 0 && off < n_tokens) token_hits[off]++;
        }
      }
    }
    CHECK(int64_t(seen.size()) == qg.total(), "distinct tiles %zu vs %lld", seen.size(),
          (long long)qg.total());
    for (int64_t t = 0; t < n_tokens; ++t) {
      const int c[3] = {int(t / (int64_t(s.dims[1].length) * s.dims[2].length)),
                        int(t / s.dims[2].length % s.dims[1].length),
                        int(t % s.dims[2].length)};
      CHECK(in_query_range(c, s) ? token_hits[t] == 1 : token_hits[t] <= 1,
            "token %lld hit %d", (long long)t, token_hits[t]);
    }
  }

  // 3. forward visit lists and masks.
  for (int64_t x = 0; x < qg.total(); ++x) {
    const FwdSchedule w = make_fwd_schedule(int(x), qg, s, tiles, pr.kv_tokens);
    std::set<std::tuple<int, int, int>> visited;  // KV tile begins
    int extra_covered = 0;
    FwdTileCursor cursor;  // the kernel's division-free walk must give the same list
    for (int it = 0; it < w.num_tiles(); ++it, cursor.advance(w)) {
      const KvTileDesc t = fwd_kv_tile(w, it, s, tiles, pr.kv_tokens);
      const KvTileDesc tc = cursor.tile(w, s, tiles, pr.kv_tokens);
      CHECK(cursor.it == it && tc.extra == t.extra && tc.interior == t.interior &&
                tc.extra_begin == t.extra_begin && tc.extra_count == t.extra_count,
            "cursor tile");
      for (int d = 0; d < 3; ++d) {
        CHECK(tc.kv[d].group == t.kv[d].group && tc.kv[d].group_len == t.kv[d].group_len &&
                  tc.kv[d].begin == t.kv[d].begin && tc.kv[d].end == t.kv[d].end,
              "cursor tile dims");
      }
      if (t.extra) {
        CHECK(t.extra_begin == extra_covered && t.extra_count > 0, "extra order");
        extra_covered += t.extra_count;
        CHECK(t.interior == (t.extra_count == pr.kv_tokens), "extra interior");
        continue;
      }
      visited.insert({t.kv[0].begin, t.kv[1].begin, t.kv[2].begin});
      for (int d = 0; d < 3; ++d) {
        CHECK(t.kv[d].group == w.q[d].group && t.kv[d].begin < t.kv[d].group_len, "kv tile");
      }
      // KV row addresses as the forward forms them: the tile's origin_offset plus the
      // per-CTA row_delta table (box_steps), for every row that exists.
      {
        const TileRows rows = tile_rows(t.kv, s);
        const int64_t strides[3] = {int64_t(s.dims[1].length) * s.dims[2].length,
                                    s.dims[2].length, 1};
        int step[3];
        box_steps(s, step);
        for (int cidx = 0; cidx < pr.kv_tokens; ++cidx) {
          int kc[3];
          if (!row_coords(t.kv, tiles.kv, cidx, s, kc)) continue;
          const int64_t off = origin_offset(rows, strides) +
                              row_delta(step, box_code(cidx, tiles.kv), strides);
          CHECK(off == kc[0] * strides[0] + kc[1] * strides[1] + kc[2], "kv row offset");
        }
      }
      // Mask tables as the kernel builds them.
      const int origin[3] = {t.kv[0].begin, t.kv[1].begin, t.kv[2].begin};
      for (int r = 0; r < pr.q_tokens; ++r) {
        int qc[3];
        const bool qvalid = row_coords(w.q, tiles.q, r, s, qc);
        int wb[3], we[3];
        query_row_window(box_code(r, tiles.q), w.q, s, wb, we);
        const BoxInterval iv = shifted_interval(wb, we, origin);
        for (int cidx = 0; cidx < pr.kv_tokens; ++cidx) {
          int kc[3];
          const bool kvalid = row_coords(t.kv, tiles.kv, cidx, s, kc);
          const uint32_t code = box_code(cidx, tiles.kv);
          const bool masked_visible = in_box_interval(code, code | kCodeGuard, iv);
          if (!qvalid) continue;  // never stored
          const bool truth = kvalid && sees3(qc, kc, s);
          if (t.interior) {
            CHECK(truth, "interior tile not all-visible (r=%d c=%d)", r, cidx);
          } else {
            CHECK(masked_visible == truth, "fwd mask r=%d c=%d: %d vs %d", r, cidx,
                  masked_visible, truth);
          }
        }
      }
    }
    CHECK(extra_covered == s.num_extra, "extra coverage %d vs %d", extra_covered, s.num_extra);
    CHECK(int(visited.size()) == w.num_spatial, "duplicate KV tiles");
    // Every key seen by a valid query lies in a visited tile.
    for (int r = 0; r < pr.q_tokens; ++r) {
      int qc[3];
      if (!row_coords(w.q, tiles.q, r, s, qc)) continue;
      for (int64_t kt = 0; kt < n_tokens; ++kt) {
        int kc[3] = {int(kt / (int64_t(s.dims[1].length) * s.dims[2].length)),
                     int(kt / s.dims[2].length % s.dims[1].length), int(kt % s.dims[2].length)};
        if (!sees3(qc, kc, s)) continue;
        int tb[3];
        for (int d = 0; d < 3; ++d) {
          const int local = kc[d] / s.dims[d].dilation;
          tb[d] = local / tiles.kv[d] * tiles.kv[d];
        }
        CHECK(visited.count({tb[0], tb[1], tb[2]}) == 1, "seen key outside visited box");
      }
    }
  }

  // 4. backward: KV-tile-major.
  const int splits = 3;
  const int n_extra_tiles = ceil_div(s.num_extra, pr.kv_tokens);
  std::vector<int> extra_split_hits(size_t(n_extra_tiles) * qg.total(), 0);
  for (int64_t x = 0; x < kg.total() + int64_t(n_extra_tiles) * splits; ++x) {
    const BwdSchedule w =
        make_bwd_schedule(int(x), 0, kg, qg, s, tiles, pr.kv_tokens, splits);
    if (w.extra) {
      for (int it = 0; it < w.num_iters(); ++it) {
        const int64_t qt = w.q_begin + it % w.per_head;
        extra_split_hits[size_t(w.extra_begin / pr.kv_tokens) * qg.total() + qt]++;
        const QTileDesc t = bwd_q_tile(w, it, s, tiles);
        DimTile q2[3];
        decode_tile(qt, qg, s, tiles.q, false, q2);
        for (int d = 0; d < 3; ++d) CHECK(t.q[d].begin == q2[d].begin, "extra q tile");
      }
      continue;
    }
    // Inverse-window mask tables.
    std::vector<BoxInterval> unused;
    std::set<std::tuple<int, int, int>> visited;
    for (int it = 0; it < w.num_iters(); ++it) {
      const QTileDesc t = bwd_q_tile(w, it, s, tiles);
      visited.insert({t.q[0].begin, t.q[1].begin, t.q[2].begin});
      const int qo[3] = {t.q[0].begin, t.q[1].begin, t.q[2].begin};
      for (int cidx = 0; cidx < pr.kv_tokens; ++cidx) {
        int kc[3];
        const bool kvalid = row_coords(w.kv, tiles.kv, cidx, s, kc);
        int ib[3], ie[3];
        key_inverse_window(box_code(cidx, tiles.kv), w.kv, s, ib, ie);
        const BoxInterval iv = shifted_interval(ib, ie, qo);
        for (int r = 0; r < pr.q_tokens; ++r) {
          int qc[3];
          const bool qvalid = row_coords(t.q, tiles.q, r, s, qc);
          const uint32_t code = box_code(r, tiles.q);
          const bool masked_visible = in_box_interval(code, code | kCodeGuard, iv);
          const bool truth = qvalid && kvalid && sees3(qc, kc, s);
          if (t.interior) {
            if (qvalid) CHECK(truth, "bwd interior pair not all-visible");
          } else {
            CHECK(masked_visible == truth, "bwd mask r=%d c=%d: %d vs %d", r, cidx,
                  masked_visible, truth);
          }
        }
      }
    }
    CHECK(int(visited.size()) == w.per_head, "duplicate Q tiles");
    // Every query that sees a key of this KV tile lies in a visited Q tile.
    for (int cidx = 0; cidx < pr.kv_tokens; ++cidx) {
      int kc[3];
      if (!row_coords(w.kv, tiles.kv, cidx, s, kc)) continue;
      for (int64_t qt = 0; qt < n_tokens; ++qt) {
        int qc[3] = {int(qt / (int64_t(s.dims[1].length) * s.dims[2].length)),
                     int(qt / s.dims[2].length % s.dims[1].length), int(qt % s.dims[2].length)};
        if (!in_query_range(qc, s) || !sees3(qc, kc, s)) continue;
        int tb[3];
        for (int d = 0; d < 3; ++d) {
          tb[d] = qc[d] / s.dims[d].dilation / tiles.q[d] * tiles.q[d];
        }
        CHECK(visited.count({tb[0], tb[1], tb[2]}) == 1, "query outside the inverse box");
      }
    }
  }
  for (size_t i = 0; i < extra_split_hits.size(); ++i) {
    CHECK(extra_split_hits[i] == 1, "extra split coverage %zu: %d", i, extra_split_hits[i]);
  }
}

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 150;
  std::mt19937 rng(1234);
  check_swar(rng);
  for (int i = 0; i < n; ++i) {
    const Problem pr = random_problem(rng);
    const int before = g_failures;
    check_problem(pr);
    if (g_failures != before && before < 20) {
      const ProblemShape& s = pr.shape;
      std::printf("  problem %d: dims", i);
      for (int d = 0; d < 3; ++d) {
        std::printf(" (L=%d k=%d s=%d d=%d c=%d)", s.dims[d].length, s.dims[d].kernel_size,
                    s.dims[d].stride, s.dims[d].dilation, int(s.dims[d].causal));
      }
      std::printf(" q_tile %dx%dx%d kv_tile %dx%dx%d E=%d\n", pr.tiles.q[0], pr.tiles.q[1],
                  pr.tiles.q[2], pr.tiles.kv[0], pr.tiles.kv[1], pr.tiles.kv[2],
                  s.num_extra);
    }
  }
  std::printf("%s: %d random problems, %d failures\n", g_failures ? "FAIL" : "PASS", n,
              g_failures);
  return g_failures ? 1 : 0;
}
