// Which work a CTA does and in which order it visits tiles (host + device, no CUDA
// dependency: tests/cpp/sm80_index_math_check.cc runs it on the host).
//
// Forward and deterministic dQ: grid (Q tiles x G, heads_kv, batch), G = heads_q / heads_kv;
// CTA x owns Q tile decode_tile(x / G) (heavy-first along causal dims, index_math.h) and
// query head blockIdx.y * G + x % G. It visits the KV-tile box of
// its Q tile (q_tile_kv_tiles per dim) row-major, then the additional-KV tiles.
//
// Backward dK/dV: grid (extra CTAs + KV tiles, heads_kv, batch). A spatial CTA owns one KV
// tile and visits, for every query head of its KV head's group, the Q-tile box of its
// inverse neighborhood (kv_tile_q_range per dim). An extra CTA owns one additional-KV tile
// and one split of all Q tiles (every query sees the extra tokens).
#pragma once

#include <cstdint>

#include "index_math.h"

namespace jax_gna::sm80 {

// One KV tile visited by a Q tile: a spatial box or a chunk of additional tokens.
struct KvTileDesc {
  bool extra;
  bool interior;            // no element mask needed
  DimTile kv[kMaxRank];     // spatial: the tile per dim
  int extra_begin;          // extra: tokens [extra_begin, extra_begin + extra_count)
  int extra_count;
};

struct FwdSchedule {
  DimTile q[kMaxRank];
  TileBox box;                          // KV tiles visited, per dim
  TileBounds bounds[kMaxRank];   // per dim, for the interior test
  int num_spatial;                      // box.total()
  int num_extra_tiles;                  // ceil(num_extra / kv_tile_tokens)

  GNA_HD int num_tiles() const { return num_spatial + num_extra_tiles; }
};

// The schedule in three steps, so that the forward kernel can run the middle one on one
// lane per dim (the per-dim chains of integer divisions then overlap; fwd_kernel.h):
// split the CTA's Q-tile number into per-dim numbers, fill dim d (its Q tile, heavy first,
// the KV tiles it visits along d, the interior bounds), then the totals.
GNA_HD void fwd_schedule_dim(FwdSchedule& w, int d, int t, const GroupTiling& tiling,
                             const ProblemShape& s, const TileShape& tiles) {
  const DimParams& p = s.dims[d];
  w.q[d] = decode_dim(t, tiling, s, d, tiles.q[d], /*heavy_first=*/true);
  const Range r = q_tile_kv_tiles(w.q[d].begin, w.q[d].end, w.q[d].group_len, p.kernel_size,
                                  p.stride, p.causal, tiles.kv[d]);
  w.box.first[d] = r.begin;
  w.box.count[d] = r.end - r.begin;
  w.bounds[d] = q_tile_bounds(w.q[d].begin, w.q[d].end, w.q[d].group_len, p.kernel_size,
                              p.stride, p.causal);
}

// num_spatial: w.box.total() (the kernel multiplies the per-dim counts across lanes).
GNA_HD void fwd_schedule_totals(FwdSchedule& w, int num_spatial, const ProblemShape& s,
                                int kv_tile_tokens) {
  w.num_spatial = num_spatial;
  w.num_extra_tiles = ceil_div(s.num_extra, kv_tile_tokens);
}

GNA_HD FwdSchedule make_fwd_schedule(int cta, const TileGrid& grid, const ProblemShape& s,
                                     const TileShape& tiles, int kv_tile_tokens) {
  FwdSchedule w;
  int t[kMaxRank];
  split_tile_index(cta, grid.tiles, t);
  for (int d = 0; d < kMaxRank; ++d) fwd_schedule_dim(w, d, t[d], grid.tiling[d], s, tiles);
  fwd_schedule_totals(w, w.box.total(), s, kv_tile_tokens);
  return w;
}

// The spatial KV tile at in-box index idx (per dim, row-major position in w.box).
GNA_HD KvTileDesc spatial_kv_tile(const FwdSchedule& w, const int idx[kMaxRank],
                                  const TileShape& tiles) {
  KvTileDesc t;
  t.extra = false;
  t.interior = true;
  for (int d = 0; d < kMaxRank; ++d) {
    const int b = (w.box.first[d] + idx[d]) * tiles.kv[d];
    const int e = imin(b + tiles.kv[d], w.q[d].group_len);
    t.kv[d] = {w.q[d].group, w.q[d].group_len, b, e};
    t.interior = t.interior && kv_tile_interior(w.bounds[d], b, e, tiles.kv[d]);
  }
  t.extra_begin = 0;
  t.extra_count = 0;
  return t;
}

// Additional-KV tile number e (0-based, after the spatial ones).
GNA_HD KvTileDesc extra_kv_tile(int e, const ProblemShape& s, int kv_tile_tokens) {
  KvTileDesc t;
  t.extra = true;
  t.extra_begin = e * kv_tile_tokens;
  t.extra_count = imin(kv_tile_tokens, s.num_extra - t.extra_begin);
  t.interior = t.extra_count == kv_tile_tokens;
  for (int d = 0; d < kMaxRank; ++d) t.kv[d] = {0, 1, 0, 1};
  return t;
}

// Tile `it` of a Q tile's visit list: the KV box row-major, then the additional-KV tiles.
GNA_HD KvTileDesc fwd_kv_tile(const FwdSchedule& w, int it, const ProblemShape& s,
                              const TileShape& tiles, int kv_tile_tokens) {
  if (it < w.num_spatial) {
    int idx[kMaxRank];
    box_index(w.box, it, idx);
    return spatial_kv_tile(w, idx, tiles);
  }
  return extra_kv_tile(it - w.num_spatial, s, kv_tile_tokens);
}

// The same visit list walked one tile at a time without divisions (the forward kernel's
// warp 0 advances it as it publishes tiles): an odometer over the KV box, last dim fastest.
// tile() after n advance() calls equals fwd_kv_tile(w, n, ...) (host-checked).
struct FwdTileCursor {
  int it = 0;
  int idx[kMaxRank] = {0, 0, 0};

  GNA_HD void advance(const FwdSchedule& w) {
    ++it;
    for (int d = kMaxRank - 1; d >= 0; --d) {
      if (++idx[d] < w.box.count[d] || d == 0) break;
      idx[d] = 0;
    }
  }
  GNA_HD KvTileDesc tile(const FwdSchedule& w, const ProblemShape& s, const TileShape& tiles,
                         int kv_tile_tokens) const {
    return it < w.num_spatial ? spatial_kv_tile(w, idx, tiles)
                              : extra_kv_tile(it - w.num_spatial, s, kv_tile_tokens);
  }
};

// ---- Backward, KV-tile-major --------------------------------------------------------------

// One Q tile visited by a KV-tile CTA.
struct QTileDesc {
  int head;                 // query head
  bool interior;            // spatial pair without element mask
  DimTile q[kMaxRank];
};

struct BwdSchedule {
  bool extra;                   // an additional-KV CTA
  DimTile kv[kMaxRank];         // spatial: the KV tile
  int extra_begin, extra_count; // extra: its tokens
  TileBox box;                  // spatial: Q tiles visited per head
  int64_t q_begin, q_end;       // extra: flattened Q tile numbers of its split
  int per_head;                 // Q tiles per head
  int head_begin;               // first query head of the KV head's group
  int num_heads;                // heads_q / heads_kv
  int split;                    // extra: its split index
  TileGrid q_grid;              // Q tiles per dim over all dilation groups

  GNA_HD int num_iters() const { return per_head * num_heads; }
};

GNA_HD BwdSchedule make_bwd_schedule(int cta, int hkv, const TileGrid& kv_grid,
                                     const TileGrid& q_grid, const ProblemShape& s,
                                     const TileShape& tiles, int kv_tile_tokens,
                                     int num_splits) {
  BwdSchedule w;
  w.q_grid = q_grid;
  w.num_heads = s.heads_q / s.heads_kv;
  w.head_begin = hkv * w.num_heads;
  const int num_extra_tiles = ceil_div(s.num_extra, kv_tile_tokens);
  const int num_extra_ctas = num_extra_tiles * num_splits;
  if (cta < num_extra_ctas) {
    w.extra = true;
    const ExtraSplit e = extra_split(cta, num_splits, q_grid.total());
    w.split = cta % num_splits;
    w.extra_begin = e.extra_tile * kv_tile_tokens;
    w.extra_count = imin(kv_tile_tokens, s.num_extra - w.extra_begin);
    w.q_begin = e.q_begin;
    w.q_end = e.q_end;
    w.per_head = int(e.q_end - e.q_begin);
    for (int d = 0; d < kMaxRank; ++d) {
      w.kv[d] = {0, 1, 0, 1};
      w.box.first[d] = 0;
      w.box.count[d] = 0;
    }
  } else {
    w.extra = false;
    w.split = 0;
    w.extra_begin = w.extra_count = 0;
    w.q_begin = w.q_end = 0;
    decode_tile(cta - num_extra_ctas, kv_grid, s, tiles.kv, /*heavy_first=*/false, w.kv);
    w.box = q_box_of_kv_tile(w.kv, s, tiles, q_grid);
    w.per_head = w.box.total();
  }
  return w;
}

// Iteration `it` of a backward CTA: head-major (it / per_head is the head offset inside the
// group), then the Q tiles of the box (spatial) or of the split (extra), in order.
GNA_HD QTileDesc bwd_q_tile(const BwdSchedule& w, int it, const ProblemShape& s,
                            const TileShape& tiles) {
  QTileDesc t;
  t.head = w.head_begin + it / w.per_head;
  if (w.extra) {
    // Every query sees the extra tokens: no spatial mask (partial Q tiles are handled by
    // rows that do not exist having LSE = +inf, hence P = 0).
    decode_tile(w.q_begin + it % w.per_head, w.q_grid, s, tiles.q, /*heavy_first=*/false,
                t.q);
    t.interior = true;
    return t;
  }
  int idx[kMaxRank];
  box_index(w.box, it % w.per_head, idx);
  for (int d = 0; d < kMaxRank; ++d) idx[d] += w.box.first[d];
  tile_at(w.kv, idx, tiles.q, t.q);
  t.interior = true;
  for (int d = 0; d < kMaxRank; ++d) {
    const DimParams& p = s.dims[d];
    const TileBounds b = q_tile_bounds(t.q[d].begin, t.q[d].end,
                                                     t.q[d].group_len, p.kernel_size,
                                                     p.stride, p.causal);
    t.interior = t.interior && kv_tile_interior(b, w.kv[d].begin, w.kv[d].end, tiles.kv[d]);
  }
  return t;
}

}  // namespace jax_gna::sm80
