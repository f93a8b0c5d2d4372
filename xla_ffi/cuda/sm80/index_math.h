// Index math of the sm80 kernels that is not window math: how rows of a tile box map to
// tokens, how a CTA index maps to its work, and the packed-coordinate mask test. Plain C++
// (host + device) with no CUDA/CuTe dependency, so tests/cpp/sm80_index_math_check.cc can
// check it with g++ on a machine without a GPU. The window math itself (windows, inverse
// windows, tile map, tile numbering over dilation groups) lives in jax_gna/window.h only.
//
// Conventions
// - Problems are 3-D (params.h pads rank 1-2 with leading dims of length 1, kernel size 1).
// - A tile is a box of tokens, shape (a0, a1, a2), in group-local coordinates of one dilation
//   group per dim. Row r of a box (the r-th token of the tile, i.e. the r-th row of the Q or
//   K/V tile in shared memory) has box coordinates (y0, y1, y2), row-major (last dim
//   fastest): r = (y0 * a1 + y1) * a2 + y2.
// - Token coordinate along dim d of box row y in a tile at group-local origin o of group g:
//   c = g + dilation * (o + y); the row exists when o + y < Lg (partial tiles at a group's
//   end).
#pragma once

#include <cstdint>

#include "jax_gna/params.h"
#include "jax_gna/window.h"

namespace jax_gna::sm80 {

// ---- Packed box coordinates and the SWAR interval test -----------------------------------
// A box coordinate (y0, y1, y2) is packed into one 32-bit word, 10 bits per dim (bits 0-8 the
// value, bit 9 a guard bit that is always 0 in a code). Box dims are <= kMaxBoxDim = 256, so
// y <= 255. An interval [lo_d, hi_d) per dim, each clamped to [0, 256], is packed into
// (lo, hi_g1 = (hi | guard) - ones). Per field, (y | guard) - lo = y + 512 - lo lies in
// [256, 767] and keeps its guard bit iff y >= lo; hi_g1 - y = hi + 511 - y lies in [256, 767]
// and keeps its guard bit iff y < hi. No field borrows from its neighbour, so one subtract
// per side and an AND test all three dims at once: ~5 integer ops per mask element instead of
// 6 compares.
constexpr int kMaxBoxDim = 256;
constexpr uint32_t kCodeGuard = (1u << 9) | (1u << 19) | (1u << 29);
constexpr uint32_t kCodeOnes = 1u | (1u << 10) | (1u << 20);

GNA_HD uint32_t pack_code(int y0, int y1, int y2) {
  return uint32_t(y0) | (uint32_t(y1) << 10) | (uint32_t(y2) << 20);
}

GNA_HD int code_field(uint32_t code, int d) { return int((code >> (10 * d)) & 0x3ffu); }

// Box coordinate of row r of a box of shape a[3] (row-major, last dim fastest).
GNA_HD uint32_t box_code(int r, const int a[3]) {
  const int y2 = r % a[2];
  const int rest = r / a[2];
  return pack_code(rest / a[1], rest % a[1], y2);
}

GNA_HD int clamp_box(int v) { return imin(imax(v, 0), kMaxBoxDim); }

struct BoxInterval {
  uint32_t lo;     // packed lower bounds
  uint32_t hi_g1;  // packed (upper bounds | guard) - ones
};

// The interval [lo_d, hi_d) per dim (any ints: clamped to the representable [0, 256]).
GNA_HD BoxInterval box_interval(int lo0, int lo1, int lo2, int hi0, int hi1, int hi2) {
  return {pack_code(clamp_box(lo0), clamp_box(lo1), clamp_box(lo2)),
          (pack_code(clamp_box(hi0), clamp_box(hi1), clamp_box(hi2)) | kCodeGuard) -
              kCodeOnes};
}

// Is every field of `code` inside its interval? `code_g` is code | kCodeGuard (callers
// precompute it once per column and test it against several rows).
GNA_HD bool in_box_interval(uint32_t code, uint32_t code_g, BoxInterval iv) {
  return (((code_g - iv.lo) & (iv.hi_g1 - code)) & kCodeGuard) == kCodeGuard;
}

// ---- One dim of a tile ------------------------------------------------------------------

// One dim of a tile: its dilation group, the group's length and the group-local token range
// [begin, end) it covers (end < begin + tile size for a partial tile at the group's end).
using DimTile = GroupTile;

// Where the rows of one tile live: along dim d, box coordinate y is token
// base[d] + step[d] * y (base = g + dilation * origin, step = dilation) and exists when
// y < end - begin. `valid` is that test as a packed interval [0, end - begin).
struct TileRows {
  int base[kMaxRank];
  int step[kMaxRank];
  BoxInterval valid;
};

// The step per dim between neighbouring box rows: the dilation. The same for every tile of a
// problem, which is what lets a kernel tabulate row_delta once per CTA.
GNA_HD void box_steps(const ProblemShape& s, int step[kMaxRank]) {
  for (int d = 0; d < kMaxRank; ++d) step[d] = s.dims[d].dilation;
}

GNA_HD TileRows tile_rows(const DimTile t[kMaxRank], const ProblemShape& s) {
  TileRows r;
  box_steps(s, r.step);
  for (int d = 0; d < kMaxRank; ++d) r.base[d] = t[d].group + r.step[d] * t[d].begin;
  r.valid = box_interval(0, 0, 0, t[0].end - t[0].begin, t[1].end - t[1].begin,
                         t[2].end - t[2].begin);
  return r;
}

// Element offset (int64) of the tile's box row 0 in a tensor with spatial strides `stride`.
GNA_HD int64_t origin_offset(const TileRows& r, const int64_t stride[kMaxRank]) {
  int64_t off = 0;
  for (int d = 0; d < kMaxRank; ++d) off += int64_t(r.base[d]) * stride[d];
  return off;
}

// Element offset of box row `code` from box row 0 (steps from box_steps): independent of
// the tile.
GNA_HD int64_t row_delta(const int step[kMaxRank], uint32_t code,
                         const int64_t stride[kMaxRank]) {
  int64_t off = 0;
  for (int d = 0; d < kMaxRank; ++d) {
    off += int64_t(step[d]) * code_field(code, d) * stride[d];
  }
  return off;
}

// Element offset of the token of box row `code` (origin_offset + row_delta); returns whether
// the row exists.
GNA_HD bool row_offset(const TileRows& r, uint32_t code, const int64_t stride[kMaxRank],
                       int64_t* offset) {
  *offset = origin_offset(r, stride) + row_delta(r.step, code, stride);
  return in_box_interval(code, code | kCodeGuard, r.valid);
}

// Window [begin[d], end[d]) (group-local keys) per dim of the query at box row `code` of a Q
// tile. Rows past the group's end (never stored) take the window of the group's last query,
// so every row stays finite.
GNA_HD void query_row_window(uint32_t code, const DimTile q[kMaxRank], const ProblemShape& s,
                             int begin[kMaxRank], int end[kMaxRank]) {
  for (int d = 0; d < kMaxRank; ++d) {
    const DimParams& p = s.dims[d];
    const int ii = imin(q[d].begin + code_field(code, d), q[d].group_len - 1);
    const Range w = window_in_group(ii, q[d].group_len, p.kernel_size, p.stride, p.causal);
    begin[d] = w.begin;
    end[d] = w.end;
  }
}

// Inverse window [begin[d], end[d]) (group-local queries that see it) per dim of the key at
// box row `code` of a KV tile; empty for keys past the group's end.
GNA_HD void key_inverse_window(uint32_t code, const DimTile kv[kMaxRank],
                               const ProblemShape& s, int begin[kMaxRank], int end[kMaxRank]) {
  for (int d = 0; d < kMaxRank; ++d) {
    const DimParams& p = s.dims[d];
    const int jj = kv[d].begin + code_field(code, d);
    if (jj < kv[d].group_len) {
      const Range w = inverse_window_in_group(jj, kv[d].group_len, p.kernel_size, p.stride,
                                              p.causal);
      begin[d] = w.begin;
      end[d] = w.end;
    } else {
      begin[d] = 0;
      end[d] = 0;
    }
  }
}

// The packed interval of box coordinates (inside a tile at group-local origin `origin`) that
// lie in the group-local ranges [begin[d], end[d]).
GNA_HD BoxInterval shifted_interval(const int begin[kMaxRank], const int end[kMaxRank],
                                    const int origin[kMaxRank]) {
  return box_interval(begin[0] - origin[0], begin[1] - origin[1], begin[2] - origin[2],
                      end[0] - origin[0], end[1] - origin[1], end[2] - origin[2]);
}

// ---- Boxes of tiles ----------------------------------------------------------------------

// A box of tiles: tile indices (inside the group) [first[d], first[d] + count[d]) per dim.
struct TileBox {
  int first[kMaxRank];
  int count[kMaxRank];

  GNA_HD int total() const { return count[0] * count[1] * count[2]; }
};

// Tile i of a TileBox, row-major (last dim fastest): in-box indices per dim.
GNA_HD void box_index(const TileBox& box, int i, int idx[kMaxRank]) {
  idx[2] = i % box.count[2];
  i /= box.count[2];
  idx[1] = i % box.count[1];
  idx[0] = i / box.count[1];
}

// ---- Grids -------------------------------------------------------------------------------

// The tiles per dim over all dilation groups, for tiles of shape `tile` (window.h
// GroupTiling numbering).
struct TileGrid {
  GroupTiling tiling[kMaxRank];
  int tiles[kMaxRank];  // tiling[d].num_tiles

  GNA_HD int64_t total() const { return int64_t(tiles[0]) * tiles[1] * tiles[2]; }
};

// Every tile (the KV tiles).
GNA_HD TileGrid tile_grid(const ProblemShape& s, const int tile[kMaxRank]) {
  TileGrid g;
  for (int d = 0; d < kMaxRank; ++d) {
    g.tiling[d] = group_tiling(s.dims[d].length, s.dims[d].dilation, tile[d]);
    g.tiles[d] = g.tiling[d].num_tiles;
  }
  return g;
}

// The Q tiles that hold a query of the computed range (ProblemShape::query_begin/end).
GNA_HD TileGrid q_tile_grid(const ProblemShape& s, const int tile[kMaxRank]) {
  TileGrid g;
  for (int d = 0; d < kMaxRank; ++d) {
    g.tiling[d] = query_tiling(s, d, tile[d]);
    g.tiles[d] = g.tiling[d].num_tiles;
  }
  return g;
}

// The Q tiles of `q_grid` that see any key of a KV tile (kv_tile_q_range per dim, rounded
// out to Q tiles), in the KV tile's groups: the backward's inverse neighborhood.
GNA_HD TileBox q_box_of_kv_tile(const DimTile kv[kMaxRank], const ProblemShape& s,
                                const TileShape& tiles, const TileGrid& q_grid) {
  TileBox box;
  for (int d = 0; d < kMaxRank; ++d) {
    const DimParams& p = s.dims[d];
    const Range r = kv_tile_q_range(kv[d].begin, kv[d].end, kv[d].group_len, p.kernel_size,
                                    p.stride, p.causal);
    const Range span = group_tile_span(q_grid.tiling[d], kv[d].group);
    box.first[d] = imax(r.begin / tiles.q[d], span.begin);
    // A key no query sees has an empty (possibly inverted) range: visit nothing.
    const int end = imin(ceil_div(r.end, tiles.q[d]), span.end);
    box.count[d] = r.end > r.begin ? imax(end - box.first[d], 0) : 0;
  }
  return box;
}

// Tile number `idx` in [0, grid.total()) -> the tile per dim (row-major over the per-dim
// tile numbers of window.h's group_tile: groups in order, tiles in order inside a group).
//
// Launch order (heavy first): along a causal dim the tiles late in a group see the most keys,
// so with `heavy_first` the tile number is reversed along causal dims and CTAs with the most
// KV tiles are issued first (a cheap longest-processing-time-first order with no sort and no
// workspace; non-causal windows shift at borders, so their Q tiles all visit about the same
// number of KV tiles and natural order, which keeps neighbouring CTAs on the same KV tiles
// in L2, is kept).
//
// decode_tile = split_tile_index (the per-dim tile numbers) + decode_dim per dim; the
// forward kernel runs the per-dim part on one lane per dim (tile_scheduler.h).
// Index is int where the caller knows the tile count is below 2^31 (forward grids: the FFI
// handler checks it), int64_t otherwise: 32-bit divisions are a few instructions, 64-bit ones
// a subroutine, and this runs at the head of every forward CTA.
template <class Index>
GNA_HD void split_tile_index(Index idx, const int tiles[kMaxRank], int t[kMaxRank]) {
  t[2] = int(idx % Index(tiles[2]));
  idx /= Index(tiles[2]);
  t[1] = int(idx % Index(tiles[1]));
  t[0] = int(idx / Index(tiles[1]));
}

// Along dim d: per-dim tile number t of `tiling` -> the tile (reversed along causal dims
// when heavy_first).
GNA_HD DimTile decode_dim(int t, const GroupTiling& tiling, const ProblemShape& s, int d,
                          int tile, bool heavy_first) {
  const int td = (heavy_first && s.dims[d].causal) ? tiling.num_tiles - 1 - t : t;
  return group_tile(tiling, td, tile);
}

template <class Index>
GNA_HD void decode_tile(Index idx, const TileGrid& grid, const ProblemShape& s,
                        const int tile[kMaxRank], bool heavy_first, DimTile out[kMaxRank]) {
  int t[kMaxRank];
  split_tile_index(idx, grid.tiles, t);
  for (int d = 0; d < kMaxRank; ++d) {
    out[d] = decode_dim(t[d], grid.tiling[d], s, d, tile[d], heavy_first);
  }
}

// Tile (per dim, groups of `groups`) with in-group tile indices idx[d] of shape `tile`.
GNA_HD void tile_at(const DimTile groups[kMaxRank], const int idx[kMaxRank],
                    const int tile[kMaxRank], DimTile out[kMaxRank]) {
  for (int d = 0; d < kMaxRank; ++d) {
    const int b = idx[d] * tile[d];
    out[d] = {groups[d].group, groups[d].group_len, b, imin(b + tile[d], groups[d].group_len)};
  }
}

// ---- Backward: KV-tile-major grid --------------------------------------------------------
// grid.x = num_extra_ctas + spatial KV tiles. The first num_extra_ctas CTAs own the
// additional-KV tiles: CTA x < num_extra_ctas handles extra tile x / num_splits over the
// split x % num_splits of all Q tiles (issued first: each is as long as the longest spatial
// CTA by the choice of num_splits). The rest own one spatial KV tile each.
struct ExtraSplit {
  int extra_tile;  // extra tokens [extra_tile * kv_tile_tokens, ...)
  int64_t q_begin;  // flattened Q tile numbers [q_begin, q_end) of the tile_grid
  int64_t q_end;
};

GNA_HD ExtraSplit extra_split(int cta, int num_splits, int64_t num_q_tiles) {
  const int split = cta % num_splits;
  return {cta / num_splits, num_q_tiles * split / num_splits,
          num_q_tiles * (split + 1) / num_splits};
}

}  // namespace jax_gna::sm80
