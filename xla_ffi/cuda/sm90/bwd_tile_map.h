// Tile map of the sm90 GNA backward (KV-tile-major), host and device.
//
// Pure C++ on top of jax_gna/window.h and tile_map.h (no CuTe, no CUDA headers), so host
// code can run exactly this math.
//
// A work item is one (batch, KV head, KV tile); its CTA loads K and V of the tile once and
// visits, for every query head of the KV head's group, the Q tiles of the tile's inverse
// neighborhood (window.h kv_tile_q_range per dim, rounded out to Q tiles, restricted to the
// computed queries of a query box). Tiles are boxes in group-local coordinates of one
// dilation group per dim, as in the forward (tile_map.h); a KV tile only meets Q tiles of
// its own groups.
//
// The consumers compute S^T = K Q^T: accumulator rows are keys, columns are the Q tile's
// queries. A key row's visible columns are those inside its inverse window (the queries that
// see the key: one interval per dim), so the forward's column tables (tile_map.h ColumnBox)
// mask it with the Q tile as the column box.
#pragma once

#include "tile_map.h"

namespace jax_gna {
namespace sm90 {

// Everything about a backward problem that the kernel's index math needs (no pointers): the
// forward's description (dims with their Q and KV tile extents, heads, the Q tilings of the
// computed query range), the KV tilings that number the work items and the Q tile as the
// column box of the element mask.
struct BwdDesc {
  ProblemDesc prob;
  GroupTiling kv_tiling[3];  // all KV tiles of each dim, over its dilation groups
  ColumnBox q_cols;          // the Q tile as the N columns of S^T = K Q^T
  int num_kv_tiles;          // spatial KV tiles per (batch, KV head)
  int total_work;            // batch * heads_kv * num_kv_tiles
};

// One dim of a work item: its KV tile and the Q tiles that see it.
struct KvTileDim {
  int group;    // dilation group
  int lg;       // its length
  int k0, k1;   // group-local keys [k0, k1) (k1 clipped to the group)
  int q_first;  // first visited Q tile (in-group tile index)
  int q_count;  // visited Q tiles along this dim (0: no computed query sees the tile)
};

struct BwdItem {
  int b;
  int hkv;
  KvTileDim kd[3];
};

// Work item w: batch slowest, then KV head, then the KV tile row-major (dim 2 fastest).
// Along causal dims the keys near a group's end are seen by fewer queries, so the natural
// order already issues the costlier tiles first.
GNA_HD BwdItem make_bwd_item(const BwdDesc& d, int w) {
  BwdItem it;
  int t[3];
  t[2] = w % d.kv_tiling[2].num_tiles;
  w /= d.kv_tiling[2].num_tiles;
  t[1] = w % d.kv_tiling[1].num_tiles;
  w /= d.kv_tiling[1].num_tiles;
  t[0] = w % d.kv_tiling[0].num_tiles;
  w /= d.kv_tiling[0].num_tiles;
  it.hkv = w % d.prob.heads_kv;
  it.b = w / d.prob.heads_kv;
  for (int i = 0; i < 3; ++i) {
    const DimDesc& dd = d.prob.dim[i];
    const GroupTile gt = group_tile(d.kv_tiling[i], t[i], dd.kv_tile);
    KvTileDim& kd = it.kd[i];
    kd.group = gt.group;
    kd.lg = gt.group_len;
    kd.k0 = gt.begin;
    kd.k1 = gt.end;
    const Range q = kv_tile_q_range(gt.begin, gt.end, gt.group_len, dd.kernel, dd.stride,
                                    dd.causal != 0);
    const Range span = group_tile_span(dd.q_tiling, gt.group);  // computed Q tiles
    const int first = imax(q.begin / dd.q_tile, span.begin);
    const int last = imin(ceil_div(q.end, dd.q_tile), span.end);
    kd.q_first = first;
    kd.q_count = imax(last - first, 0);
  }
  return it;
}

GNA_HD int num_visits(const BwdDesc& d, const BwdItem& it) {
  return d.prob.q_per_kv * it.kd[0].q_count * it.kd[1].q_count * it.kd[2].q_count;
}

// The visit order: query heads of the KV head's group outermost, then the Q tiles row-major
// (dim 2 fastest). An odometer, so the producer never divides.
struct VisitCursor {
  int hg;    // query head within the group
  int n[3];  // Q tile index within the group, per dim
};

GNA_HD VisitCursor visit_begin(const BwdItem& it) {
  return VisitCursor{0, {it.kd[0].q_first, it.kd[1].q_first, it.kd[2].q_first}};
}

GNA_HD void visit_next(VisitCursor& c, const BwdItem& it) {
  if (++c.n[2] == it.kd[2].q_first + it.kd[2].q_count) {
    c.n[2] = it.kd[2].q_first;
    if (++c.n[1] == it.kd[1].q_first + it.kd[1].q_count) {
      c.n[1] = it.kd[1].q_first;
      if (++c.n[0] == it.kd[0].q_first + it.kd[0].q_count) {
        c.n[0] = it.kd[0].q_first;
        ++c.hg;
      }
    }
  }
}

// What the consumers need of one visit; the producer publishes it beside the visit's Q tile.
struct BwdVisit {
  int hq;        // query head
  int interior;  // every query of the Q tile sees every key of the KV tile: no element mask
  int q0[3];     // group-local origin of the Q tile per dim
};

GNA_HD BwdVisit make_visit(const BwdDesc& d, const BwdItem& it, const VisitCursor& c) {
  BwdVisit v;
  v.hq = it.hkv * d.prob.q_per_kv + c.hg;
  v.interior = 1;
  for (int i = 0; i < 3; ++i) {
    const DimDesc& dd = d.prob.dim[i];
    const KvTileDim& kd = it.kd[i];
    const int q0 = c.n[i] * dd.q_tile;
    v.q0[i] = q0;
    // A KV tile cut short by its group's end is never interior: its missing keys are rows
    // the mask must empty (tile_interior_1d).
    if (!tile_interior_1d(q0, imin(q0 + dd.q_tile, kd.lg), kd.k0, kd.k1, kd.lg, dd.kernel,
                          dd.stride, dd.causal != 0, dd.kv_tile)) {
      v.interior = 0;
    }
  }
  return v;
}

// The queries that see key row r of the work item's KV tile: per dim the group-local
// interval [ws, we) (window.h inverse_window_in_group). A row past its group's end (a
// partial KV tile) sees no query: its window is empty, so its probabilities are 0.
GNA_HD RowWindow key_row_window(const BwdDesc& d, const BwdItem& it, int r) {
  int t[3];
  split_row(r, d.prob.dim[0].kv_log2, d.prob.dim[1].kv_log2, d.prob.dim[2].kv_log2, t);
  RowWindow w;
  w.valid = true;
  for (int i = 0; i < 3; ++i) {
    const DimDesc& dd = d.prob.dim[i];
    const int jj = it.kd[i].k0 + t[i];
    w.valid = w.valid && jj < it.kd[i].lg;
    const Range inv = inverse_window_in_group(imin(jj, it.kd[i].lg - 1), it.kd[i].lg,
                                              dd.kernel, dd.stride, dd.causal != 0);
    w.ws[i] = inv.begin;
    w.we[i] = inv.end;
  }
  if (!w.valid) {
    for (int i = 0; i < 3; ++i) w.ws[i] = w.we[i] = 0;
  }
  return w;
}

// Element offset of row r of the visit's Q tile in a [B, S0, S1, S2, H] tensor (the LSE and
// the row sums of the backward); false for a row past its group's end.
GNA_HD bool visit_row_offset(const BwdDesc& d, const BwdItem& it, const BwdVisit& v, int r,
                             const int64_t (&stride)[5], int64_t* off) {
  int t[3];
  split_row(r, d.prob.dim[0].q_log2, d.prob.dim[1].q_log2, d.prob.dim[2].q_log2, t);
  int64_t o = static_cast<int64_t>(it.b) * stride[0] + static_cast<int64_t>(v.hq) * stride[4];
  for (int i = 0; i < 3; ++i) {
    const int jj = v.q0[i] + t[i];
    if (jj >= it.kd[i].lg) return false;
    o += static_cast<int64_t>(token_coord(d.prob.dim[i], it.kd[i].group, jj)) * stride[1 + i];
  }
  *off = o;
  return true;
}

}  // namespace sm90
}  // namespace jax_gna
