// The window math of Generalized Neighborhood Attention, host and device: the C++ twin of
// jax_gna/semantics.py (docs/semantics.md, NATTEN 0.21 semantics). Kernels, FFI handlers and the
// CPU FFI target `gna_window_bounds` include this header and nothing else for the math; the
// tests call that target to prove this file and the Python module agree.
//
// Along one spatial dim of length L, query i lives in dilation group g = i % d at group-local
// position ii = i / d. Inside a group the problem is an undilated one of the group's own
// length Lg, so windows, inverse windows and the tile map are group-local (dilation 1);
// key coordinates are j = g + d * jj.
#pragma once

#include <cstdint>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GNA_HD __host__ __device__ __forceinline__
#else
#define GNA_HD inline
#endif

namespace jax_gna {

// Up to 3 spatial dims; lower ranks are padded with dims of length 1 and kernel size 1
// (whose window is always [0, 1)), so kernels see one 3-D problem shape.
constexpr int kMaxRank = 3;

struct DimParams {
  int length = 1;
  int kernel_size = 1;
  int stride = 1;
  int dilation = 1;
  bool causal = false;
};

// Half-open range [begin, end) of group-local coordinates.
struct Range {
  int begin;
  int end;
};

// The rules GNA parameters obey along one real (not padding) dim, in the order they are
// checked (docs/semantics.md; jax_gna.semantics.make_params is the Python statement): the one C++
// validation of them, used by the FFI handlers and the CPU targets, which word the error.
enum class DimRule : int {
  kValid = 0,
  kLength,      // length >= 1
  kKernelSize,  // kernel_size >= 2
  kDilation,    // dilation >= 1
  kWindowFits,  // kernel_size * dilation <= length
  kStride,      // 1 <= stride <= kernel_size
};

// The first rule (length, kernel_size, stride, dilation) break, or kValid. Host only; int64
// arguments as the attributes arrive, compared before any product can overflow.
inline DimRule first_broken_rule(int64_t length, int64_t kernel_size, int64_t stride,
                                 int64_t dilation) {
  if (length < 1) return DimRule::kLength;
  if (kernel_size < 2) return DimRule::kKernelSize;
  if (dilation < 1) return DimRule::kDilation;
  if (kernel_size > length || dilation > length || kernel_size * dilation > length)
    return DimRule::kWindowFits;
  if (stride < 1 || stride > kernel_size) return DimRule::kStride;
  return DimRule::kValid;
}

GNA_HD int imin(int a, int b) { return a < b ? a : b; }
GNA_HD int imax(int a, int b) { return a > b ? a : b; }
GNA_HD int ceil_div(int a, int b) { return (a + b - 1) / b; }

// Length of dilation group g (groups differ in length when d does not divide L).
GNA_HD int group_length(int g, int length, int dilation) {
  return length / dilation + (g < length % dilation ? 1 : 0);
}

// Window of group-local query ii in a group of length lg (undilated inside the group).
GNA_HD Range window_in_group(int ii, int lg, int k, int s, bool causal) {
  if (!causal) {
    const int leader = imin((ii / s) * s + s / 2, lg - 1);  // centre of the stride group
    const int start = imax(imin(leader - k / 2, lg - k), 0);  // shifts at borders: k keys
    return {start, start + k};
  }
  const int leader = imin((ii / s) * s + s - 1, lg - 1);  // last query of the stride group
  return {imax(leader - k + 1, 0), ii + 1};               // never past the query itself
}

// Group-local window [start, end) of the query at coordinate i along one dim; its keys are
// i % d + d * jj for jj in the range.
GNA_HD Range window(int i, const DimParams& p) {
  const int g = i % p.dilation;
  return window_in_group(i / p.dilation, group_length(g, p.length, p.dilation),
                         p.kernel_size, p.stride, p.causal);
}

// Group-local queries [first, last) that see group-local key jj. Window starts and ends are
// non-decreasing in the query, so this is one contiguous range; binary search finds it
// (O(log lg), once per tile in kernels).
GNA_HD Range inverse_window_in_group(int jj, int lg, int k, int s, bool causal) {
  int lo = 0, hi = lg;  // first query whose window end > jj
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (window_in_group(mid, lg, k, s, causal).end > jj) hi = mid; else lo = mid + 1;
  }
  const int first = lo;
  lo = first; hi = lg;  // first query whose window start > jj
  while (lo < hi) {
    const int mid = (lo + hi) / 2;
    if (window_in_group(mid, lg, k, s, causal).begin > jj) hi = mid; else lo = mid + 1;
  }
  return {first, lo};
}

// ---- Tile map (one dim, group-local) ---------------------------------------------------

// Keys [begin, end) needed by the Q tile of queries [q0, q1): the window start of its first
// query to the window end of its last one (windows are monotone).
GNA_HD Range q_tile_kv_range(int q0, int q1, int lg, int k, int s, bool causal) {
  return {window_in_group(q0, lg, k, s, causal).begin,
          window_in_group(q1 - 1, lg, k, s, causal).end};
}

// The same rounded out to KV-tile boundaries: KV tile indices [first, last) within the group.
GNA_HD Range q_tile_kv_tiles(int q0, int q1, int lg, int k, int s, bool causal, int kv_tile) {
  const Range r = q_tile_kv_range(q0, q1, lg, k, s, causal);
  return {r.begin / kv_tile, ceil_div(r.end, kv_tile)};
}

// Queries [begin, end) that see any key of the KV tile [k0, k1) (backward: the inverse
// neighborhood).
GNA_HD Range kv_tile_q_range(int k0, int k1, int lg, int k, int s, bool causal) {
  return {inverse_window_in_group(k0, lg, k, s, causal).begin,
          inverse_window_in_group(k1 - 1, lg, k, s, causal).end};
}

// Is KV tile [k0, k1) interior for Q tile [q0, q1) along this dim: does every query of the Q
// tile see every key of the KV tile? A KV tile cut short by the group's end (k1 - k0 <
// kv_tile) is never interior: its missing keys need the mask.
GNA_HD bool tile_interior_1d(int q0, int q1, int k0, int k1, int lg, int k, int s,
                             bool causal, int kv_tile) {
  if (k1 - k0 != kv_tile) return false;
  const int max_start = window_in_group(q1 - 1, lg, k, s, causal).begin;
  const int min_end = window_in_group(q0, lg, k, s, causal).end;
  return max_start <= k0 && k1 <= min_end;
}

// Does group-local query ii see group-local key jj (same dilation group assumed)?
GNA_HD bool sees(int ii, int jj, int lg, int k, int s, bool causal) {
  const Range w = window_in_group(ii, lg, k, s, causal);
  return jj >= w.begin && jj < w.end;
}

// ---- Tile map helpers for kernels (added for the sm90 kernel; same math as above) -------

// The Q-tile constants of tile_interior_1d, computed once per Q tile [q0, q1) so that the
// per-KV-tile test is two compares: the largest window start and the smallest window end
// over the tile's queries (windows are monotone).
struct TileBounds {
  int max_start;
  int min_end;
};

GNA_HD TileBounds q_tile_bounds(int q0, int q1, int lg, int k, int s, bool causal) {
  return {window_in_group(q1 - 1, lg, k, s, causal).begin,
          window_in_group(q0, lg, k, s, causal).end};
}

// tile_interior_1d with the Q-tile bounds precomputed (identical result).
GNA_HD bool kv_tile_interior(TileBounds b, int k0, int k1, int kv_tile) {
  return k1 - k0 == kv_tile && b.max_start <= k0 && k1 <= b.min_end;
}

// Tiles of `tile` tokens covering every dilation group of one dim separately, group-major
// (the order of semantics.TileMap1D): groups g < num_big have length len_small + 1, the
// others len_small; each group has ceil(len / tile) tiles, the last one possibly partial.
struct GroupTiling {
  int num_big;      // L % d
  int len_small;    // L / d
  int tiles_big;    // tiles per group of length len_small + 1
  int tiles_small;  // tiles per group of length len_small
  int num_tiles;    // over all groups
  int first;        // in-group index of every group's first tile (0 unless restricted)
};

GNA_HD GroupTiling group_tiling(int length, int dilation, int tile) {
  GroupTiling t;
  t.num_big = length % dilation;
  t.len_small = length / dilation;
  t.tiles_big = ceil_div(t.len_small + 1, tile);
  t.tiles_small = ceil_div(t.len_small, tile);
  t.num_tiles = t.num_big * t.tiles_big + (dilation - t.num_big) * t.tiles_small;
  t.first = 0;
  return t;
}

// The tiles of group_tiling that can hold a query of [lo, hi) (coordinates along the dim):
// in every group, in-group tiles [first, first + count) with first = floor(floor(lo / d) / tile)
// and the end ceil(ceil(hi / d) / tile) capped at the group's tile count. The range is the
// same in every group (the hull of the groups' exact ranges: a group may keep a tile whose
// own queries all miss [lo, hi), at most one per side), so the tiling keeps its form. Context parallelism computes only the queries of a device's
// slab this way (jax_gna/context_parallel.py); [0, L) gives group_tiling itself.
GNA_HD GroupTiling group_tiling_range(int length, int dilation, int tile, int lo, int hi) {
  GroupTiling t = group_tiling(length, dilation, tile);
  lo = imax(lo, 0);
  hi = imin(hi, length);
  if (hi <= lo) {
    t.tiles_big = t.tiles_small = t.num_tiles = 0;
    return t;
  }
  const int first = (lo / dilation) / tile;
  const int last = ceil_div(ceil_div(hi, dilation), tile);
  t.tiles_big = imax(imin(last, t.tiles_big) - first, 0);
  t.tiles_small = imax(imin(last, t.tiles_small) - first, 0);
  t.num_tiles = t.num_big * t.tiles_big + (dilation - t.num_big) * t.tiles_small;
  t.first = first;
  return t;
}

// In-group tile indices [begin, end) of group g in a (possibly restricted) tiling.
GNA_HD Range group_tile_span(const GroupTiling& gt, int g) {
  return {gt.first, gt.first + (g < gt.num_big ? gt.tiles_big : gt.tiles_small)};
}

// Tile number t (0 <= t < num_tiles) of a GroupTiling: its group, the group's length and
// the group-local token range [begin, end) (end clipped to the group).
struct GroupTile {
  int group;
  int group_len;
  int begin;
  int end;
};

GNA_HD GroupTile group_tile(const GroupTiling& gt, int t, int tile) {
  GroupTile r;
  const int big_tiles = gt.num_big * gt.tiles_big;
  int local;
  if (t < big_tiles) {
    r.group = t / gt.tiles_big;
    local = t - r.group * gt.tiles_big;
    r.group_len = gt.len_small + 1;
  } else {
    const int u = t - big_tiles;
    const int gs = u / gt.tiles_small;
    local = u - gs * gt.tiles_small;
    r.group = gt.num_big + gs;
    r.group_len = gt.len_small;
  }
  r.begin = (gt.first + local) * tile;
  r.end = imin(r.begin + tile, r.group_len);
  return r;
}

}  // namespace jax_gna
