// Tile map and element mask of the sm90 GNA forward kernel, host and device.
//
// Pure C++ on top of jax_gna/window.h (no CuTe, no CUDA headers): the host check
// (test/host_check.cc, g++) runs exactly this code against brute force.
//
// Vocabulary (docs/semantics.md "Tiles"): a work item is one (batch, query head, Q tile). A Q tile
// is a box of q[0] x q[1] x q[2] tokens in group-local coordinates of one dilation group
// per dim; its 128 rows are the box's tokens in row-major order (dim 2 fastest). A KV tile
// is a box of kv[0] x kv[1] x kv[2] tokens of the same groups; its rows (the GEMM's N
// columns) are ordered the same way. Every tile extent is a power of two, so a row index
// splits into per-dim offsets with shifts and masks.
//
// Along dim i, group-local token jj of group g is the tensor coordinate x = g + d * jj;
// x >= L exactly when jj >= the group's length, so TMA's out-of-bounds zero fill covers
// the tail of every group, and one tensor map (traversal stride d) serves every group.
#pragma once

#include <cstdint>

#include "jax_gna/window.h"

namespace jax_gna {
namespace sm90 {

// One spatial dim as the kernel sees it (ranks below 3 are padded with L = k = 1 dims).
struct DimDesc {
  int length;
  int kernel;
  int stride;
  int dilation;
  int causal;
  int q_tile;    // Q tile extent along this dim (power of two)
  int kv_tile;   // KV tile extent (power of two)
  int q_log2;
  int kv_log2;
  GroupTiling q_tiling;  // the Q tiles of this dim over its dilation groups
};

// Everything about the problem that the kernel's index math needs (no pointers).
struct ProblemDesc {
  DimDesc dim[3];
  int batch;
  int heads_q;
  int heads_kv;
  int q_per_kv;         // heads_q / heads_kv
  int num_q_tiles;      // spatial Q tiles per (batch, head)
  int total_work;       // batch * heads_q * num_q_tiles work items
  int num_extra;        // additional KV tokens (0: none)
  int num_extra_tiles;  // ceil(num_extra / kv_tile_tokens)
  int kv_tile_tokens;   // N of the S = Q K^T GEMM
  int tab_entries;      // mask table entries in use
};

// ---- Work items ---------------------------------------------------------------------------
// Order, slowest to fastest: batch, KV head, Q tile along dim 0, 1, 2, query head within the
// KV head's group. Consecutive items share K/V in L2: GQA heads of one KV head run back to
// back on the same Q tile, and neighbouring Q tiles (whose neighbourhoods overlap) follow.
struct WorkCoord {
  int b;
  int hq;
  int hkv;
  int t[3];  // Q tile number along each dim (GroupTiling numbering)
};

GNA_HD WorkCoord decode_work(const ProblemDesc& p, int w) {
  WorkCoord c;
  const int hg = w % p.q_per_kv;
  w /= p.q_per_kv;
  c.t[2] = w % p.dim[2].q_tiling.num_tiles;
  w /= p.dim[2].q_tiling.num_tiles;
  c.t[1] = w % p.dim[1].q_tiling.num_tiles;
  w /= p.dim[1].q_tiling.num_tiles;
  c.t[0] = w % p.dim[0].q_tiling.num_tiles;
  w /= p.dim[0].q_tiling.num_tiles;
  c.hkv = w % p.heads_kv;
  c.b = w / p.heads_kv;
  c.hq = c.hkv * p.q_per_kv + hg;
  // Longest first along causal dims: there a Q tile's visited-KV-tile count grows with its
  // position in the group, so visiting tiles from the end makes the sequence (roughly)
  // cost-descending and the greedy scheduler's last items the cheapest (LPT). Non-causal
  // counts are flat except at the borders, where the natural order is kept.
  for (int i = 0; i < 3; ++i) {
    if (p.dim[i].causal) c.t[i] = p.dim[i].q_tiling.num_tiles - 1 - c.t[i];
  }
  return c;
}

// ---- One dim of one Q tile -----------------------------------------------------------------
struct QTileDim {
  int group;     // dilation group g
  int lg;        // its length
  int q0, q1;    // group-local queries [q0, q1) (q1 clipped to the group)
  int kv_first;  // first visited KV tile (index within the group)
  int kv_count;  // number of visited KV tiles along this dim (>= 1)
  TileBounds bounds;  // for kv_tile_interior
};

GNA_HD QTileDim q_tile_dim(const DimDesc& d, int t) {
  const GroupTile gt = group_tile(d.q_tiling, t, d.q_tile);
  const bool c = d.causal != 0;
  const Range kv = q_tile_kv_tiles(gt.begin, gt.end, gt.group_len, d.kernel, d.stride, c,
                                   d.kv_tile);
  QTileDim q;
  q.group = gt.group;
  q.lg = gt.group_len;
  q.q0 = gt.begin;
  q.q1 = gt.end;
  q.kv_first = kv.begin;
  q.kv_count = kv.end - kv.begin;
  q.bounds = q_tile_bounds(gt.begin, gt.end, gt.group_len, d.kernel, d.stride, c);
  return q;
}

// A work item as the Q producer hands it to the K/V producer and the consumers (through
// shared memory, beside its Q tile): decoded once, by the thread that needs it first for its
// TMA coordinates. Decoded in every consumer thread it cost ~600 of the 2149 once-per-item
// instructions per consumer warp (divisions of decode_work and q_tile_dim's window math;
// Nsight Compute, seq32k).
struct WorkItem {
  int w;  // work item index; -1: no more work
  int has_boundary;  // q_tile_has_boundary: some visited spatial KV tile needs the mask
  WorkCoord wc;
  QTileDim qd[3];
};

// Does any visited spatial KV tile of the Q tile need the element mask? Along a dim the
// interior tiles are the whole tiles inside [max_start, min_end) (the intersection of the Q
// tile's row windows, an interval), and only a group's last tile can be partial, so the
// visited tiles of a dim are all interior iff its first and last are; a tile is interior iff
// it is along every dim. Items without boundary tiles (every block-sparse case) skip the row
// windows and the per-tile interior test in the consumers. The Q producer computes it into
// WorkItem: in each consumer warp it and tile 0's interior test were ~9% of the stall
// samples outside the KV-tile loop (seq32k); in the producer's 40 registers it costs
// spills, off the consumers' path.
GNA_HD bool q_tile_has_boundary(const ProblemDesc& p, const QTileDim q[3]) {
  for (int i = 0; i < 3; ++i) {
    const int kv = p.dim[i].kv_tile;
    const int f0 = q[i].kv_first * kv;
    const int l0 = (q[i].kv_first + q[i].kv_count - 1) * kv;
    if (!kv_tile_interior(q[i].bounds, f0, imin(f0 + kv, q[i].lg), kv) ||
        !kv_tile_interior(q[i].bounds, l0, imin(l0 + kv, q[i].lg), kv)) {
      return true;
    }
  }
  return false;
}

GNA_HD WorkItem make_work_item(const ProblemDesc& p, int w) {
  WorkItem it;
  it.w = w;
  it.wc = decode_work(p, w);
  for (int i = 0; i < 3; ++i) it.qd[i] = q_tile_dim(p.dim[i], it.wc.t[i]);
  it.has_boundary = q_tile_has_boundary(p, it.qd) ? 1 : 0;
  return it;
}

// Tensor coordinate (TMA) of group-local token jj of group g along a dim.
GNA_HD int token_coord(const DimDesc& d, int group, int jj) { return group + d.dilation * jj; }

// Per-dim offsets of row r of a box with the given log2 extents (dim 2 fastest).
GNA_HD void split_row(int r, int log2_0, int log2_1, int log2_2, int t[3]) {
  (void)log2_0;
  t[2] = r & ((1 << log2_2) - 1);
  t[1] = (r >> log2_2) & ((1 << log2_1) - 1);
  t[0] = r >> (log2_2 + log2_1);
}

// ---- Visiting the KV tiles of a Q tile -----------------------------------------------------
// Spatial KV tiles first, row-major over the per-dim visited ranges, then the extra tiles.
struct KVCursor {
  int n[3];  // current KV tile index within the group, per dim
};

GNA_HD KVCursor kv_cursor_begin(const QTileDim q[3]) {
  return KVCursor{{q[0].kv_first, q[1].kv_first, q[2].kv_first}};
}

GNA_HD void kv_cursor_next(KVCursor& c, const QTileDim q[3]) {
  if (++c.n[2] == q[2].kv_first + q[2].kv_count) {
    c.n[2] = q[2].kv_first;
    if (++c.n[1] == q[1].kv_first + q[1].kv_count) {
      c.n[1] = q[1].kv_first;
      ++c.n[0];
    }
  }
}

GNA_HD int num_spatial_kv_tiles(const QTileDim q[3]) {
  return q[0].kv_count * q[1].kv_count * q[2].kv_count;
}

// Is the spatial KV tile at the cursor interior (every query of the Q tile sees every key)?
GNA_HD bool kv_interior(const ProblemDesc& p, const QTileDim q[3], const KVCursor& c) {
  bool interior = true;
  for (int i = 0; i < 3; ++i) {
    const int k0 = c.n[i] * p.dim[i].kv_tile;
    const int k1 = imin(k0 + p.dim[i].kv_tile, q[i].lg);
    interior = interior && kv_tile_interior(q[i].bounds, k0, k1, p.dim[i].kv_tile);
  }
  return interior;
}

// ---- Element mask ----------------------------------------------------------------------------
// A consumer thread holds, of each 64 x N accumulator (SM90 GMMA C layout), two rows and
// N/4 columns: fragment column k (0 <= k < N/4) is S column c(k) = 8 * (k / 2) + 2 * quad +
// (k % 2), quad = lane % 4. Masks are N/4-bit words over k.
GNA_HD int fragment_column(int k, int quad) { return 8 * (k >> 1) + 2 * quad + (k & 1); }

// Column tables. The N columns of an accumulator are the rows of a tile box (extents
// ext[i], powers of two, dim 2 fastest): the KV tile for the forward's S = Q K^T, the Q tile
// for the backward's S^T = K Q^T. For dim i, quad q and 0 <= v <= ext[i], table entry
// tab_off[i] + q * (ext[i] + 1) + v holds the bits k (fragment column k of the thread, k <
// cols4 = N / 4) whose column's offset along dim i is below v. The columns whose offset lies
// in [lo, hi) along dim i are then table(hi) & ~table(lo).
struct ColumnBox {
  int ext[3];
  int log2[3];
  int tab_off[3];
  int cols4;    // fragment columns per thread: N / 4 (at most 32)
  int entries;  // table entries in use
};

GNA_HD ColumnBox make_column_box(const int (&ext)[3], const int (&log2)[3], int tokens) {
  ColumnBox b;
  int tab = 0;
  for (int i = 0; i < 3; ++i) {
    b.ext[i] = ext[i];
    b.log2[i] = log2[i];
    b.tab_off[i] = tab;
    tab += 4 * (ext[i] + 1);
  }
  b.cols4 = tokens / 4;
  b.entries = tab;
  return b;
}

GNA_HD int mask_table_size(const int kv_tile[3]) {
  return 4 * (kv_tile[0] + 1 + kv_tile[1] + 1 + kv_tile[2] + 1);
}

GNA_HD uint32_t column_table_entry(const ColumnBox& b, int idx) {
  // (Written without run-time indexing of b's arrays, which would put them in local memory.)
  int off, ext, shift;
  if (idx >= b.tab_off[2]) {
    off = b.tab_off[2];
    ext = b.ext[2];
    shift = 0;
  } else if (idx >= b.tab_off[1]) {
    off = b.tab_off[1];
    ext = b.ext[1];
    shift = b.log2[2];
  } else {
    off = b.tab_off[0];
    ext = b.ext[0];
    shift = b.log2[2] + b.log2[1];
  }
  const int local = idx - off;
  const int q = local / (ext + 1);
  const int v = local - q * (ext + 1);
  uint32_t bits = 0;
  for (int k = 0; k < b.cols4; ++k) {
    const int u = (fragment_column(k, q) >> shift) & (ext - 1);  // split_row, one dim
    if (u < v) bits |= 1u << k;
  }
  return bits;
}

// Visible-column word of a row whose window along dim i is [ws[i], we[i]) (group-local),
// against the column box whose first token sits at group-local origin org[i].
GNA_HD uint32_t window_word(const uint32_t* table, const ColumnBox& b, int quad,
                            const int (&ws)[3], const int (&we)[3], const int (&org)[3]) {
  uint32_t m = ~0u;
  for (int i = 0; i < 3; ++i) {
    const int lo = imax(imin(ws[i] - org[i], b.ext[i]), 0);
    const int hi = imax(imin(we[i] - org[i], b.ext[i]), 0);
    const uint32_t* t = table + b.tab_off[i] + quad * (b.ext[i] + 1);
    m &= t[hi] & ~t[lo];
  }
  return m;
}

// The forward's column box: the KV tile.
GNA_HD ColumnBox kv_column_box(const ProblemDesc& p) {
  const int ext[3] = {p.dim[0].kv_tile, p.dim[1].kv_tile, p.dim[2].kv_tile};
  const int lg[3] = {p.dim[0].kv_log2, p.dim[1].kv_log2, p.dim[2].kv_log2};
  return make_column_box(ext, lg, p.kv_tile_tokens);
}

GNA_HD uint32_t mask_table_entry(const ProblemDesc& p, int idx) {
  return column_table_entry(kv_column_box(p), idx);
}

// The window of one Q row, per dim, group-local: keys [ws, we) with we clipped to the group.
// A row beyond the group (partial Q tile) takes the window of the group's last query so that
// its softmax stays finite; it is never stored.
struct RowWindow {
  int ws[3];
  int we[3];
  bool valid;
};

GNA_HD RowWindow row_window(const ProblemDesc& p, const QTileDim q[3], int r) {
  int t[3];
  split_row(r, p.dim[0].q_log2, p.dim[1].q_log2, p.dim[2].q_log2, t);
  RowWindow w;
  w.valid = true;
  for (int i = 0; i < 3; ++i) {
    const int ii = q[i].q0 + t[i];
    w.valid = w.valid && ii < q[i].q1;
    const DimDesc& d = p.dim[i];
    const Range win = window_in_group(imin(ii, q[i].lg - 1), q[i].lg, d.kernel, d.stride,
                                      d.causal != 0);
    w.ws[i] = win.begin;
    w.we[i] = imin(win.end, q[i].lg);
  }
  return w;
}

// Is row r of the Q tile a real query (inside its group along every dim)?
GNA_HD bool row_valid(const ProblemDesc& p, const QTileDim q[3], int r) {
  int t[3];
  split_row(r, p.dim[0].q_log2, p.dim[1].q_log2, p.dim[2].q_log2, t);
  return q[0].q0 + t[0] < q[0].q1 && q[1].q0 + t[1] < q[1].q1 && q[2].q0 + t[2] < q[2].q1;
}

// Visible-column word of one row for the spatial KV tile at the cursor.
GNA_HD uint32_t row_mask(const ProblemDesc& p, const uint32_t* table, int quad,
                         const RowWindow& w, const KVCursor& c) {
  const int org[3] = {c.n[0] * p.dim[0].kv_tile, c.n[1] * p.dim[1].kv_tile,
                      c.n[2] * p.dim[2].kv_tile};
  return window_word(table, kv_column_box(p), quad, w.ws, w.we, org);
}

// Visible-column word of the extra-token tile whose first token is e0 (columns past the
// last extra token are masked).
GNA_HD uint32_t extra_mask(const ProblemDesc& p, int quad, int e0) {
  const int rem = p.num_extra - e0;
  uint32_t m = 0;
  const int cols = p.kv_tile_tokens / 4;
  for (int k = 0; k < cols; ++k) {
    if (fragment_column(k, quad) < rem) m |= 1u << k;
  }
  return m;
}

// Visited-KV-tile count of one work item (its cost, for scheduling and the simulator).
GNA_HD int work_kv_tiles(const ProblemDesc& p, int w) {
  const WorkCoord c = decode_work(p, w);
  int n = 1;
  for (int i = 0; i < 3; ++i) n *= q_tile_dim(p.dim[i], c.t[i]).kv_count;
  return n + p.num_extra_tiles;
}

}  // namespace sm90
}  // namespace jax_gna
