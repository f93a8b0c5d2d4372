// The halo forward's index math, plan and admission. Plain C++ (host + device), no CUDA or
// CuTe: xla_ffi/cuda/halo/test/host_check.cc runs all of it with g++, and the FFI handler
// calls unsupported_reason (the one C++ statement of what the family serves).
//
// Vocabulary (docs/semantics.md, "Tiles"; xla_ffi/cuda/sm80/index_math.h conventions)
// - A Q tile is a box of kBlockM = 64 queries, power-of-two sides, in group-local
//   coordinates of one dilation group per dim (the sm80 forward's Q tiles, at 64 tokens).
// - Its halo is the box of keys its queries see together: along each dim the union of their
//   windows, from the window start of the tile's first query to the window end of its last
//   one (window.h q_tile_kv_range; windows are monotone), in the same dilation group. The
//   halo never leaves the group, so every halo token exists.
// - The CTA's key list is the halo's tokens row-major (last dim fastest), then the additional
//   tokens; it is processed in chunks of kChunk = 64 keys (one S = Q K^T step each). Key j
//   of the list is halo token j (box coordinate halo_code(j)) for j < H, additional token
//   j - H for H <= j < H + E, and padding (never visible) beyond.
// - A query sees halo token j iff its box coordinate lies in the query's window, per dim,
//   shifted into the halo box: the packed-interval test of index_math.h. It sees every
//   additional token.
#pragma once

#include <cstdint>
#include <cstdio>
#include <initializer_list>
#include <string>

#include "jax_gna/kernel_manifest.h"
#include "jax_gna/params.h"
#include "jax_gna/window.h"
#include "sm80/index_math.h"

namespace jax_gna::halo {

using sm80::BoxInterval;
using sm80::DimTile;

constexpr int kBlockM = 64;  // queries per Q tile: 4 warps x 16 rows
constexpr int kChunk = 64;   // keys per step of the key list
// Largest halo a Q tile may have (the kernel manifest's statement of it) and largest halo
// extent along one dim (box coordinates are 9-bit fields of the packed code, index_math.h).
constexpr int kMaxHaloTokens = manifest::family("halo").max_halo_tokens;
constexpr int kMaxHaloSide = manifest::kMaxTileSide;
static_assert(sm80::kMaxBoxDim >= kMaxHaloSide, "packed box coordinates hold a halo side");
// CTAs per SM below which the plan keeps one query head per CTA (heads_per_cta).
constexpr int kMinCtasPerSm = 8;

// ---- One work item ----------------------------------------------------------------------

// The halo box of a Q tile: group-local first key and key count per dim (the groups are the
// Q tile's).
struct HaloBox {
  int origin[kMaxRank];
  int extent[kMaxRank];

  GNA_HD int tokens() const { return extent[0] * extent[1] * extent[2]; }
};

// Along one dim: the keys [origin, origin + extent) the queries [q.begin, q.end) of a Q tile
// see together.
GNA_HD Range halo_range(const DimTile& q, const DimParams& p) {
  return q_tile_kv_range(q.begin, q.end, q.group_len, p.kernel_size, p.stride, p.causal);
}

GNA_HD HaloBox halo_box(const DimTile q[kMaxRank], const ProblemShape& s) {
  HaloBox h;
  for (int d = 0; d < kMaxRank; ++d) {
    const Range r = halo_range(q[d], s.dims[d]);
    h.origin[d] = r.begin;
    h.extent[d] = r.end - r.begin;
  }
  return h;
}

// The Q tile of CTA column `tile_index` (blockIdx.x / head_groups) along dim d: the tile
// number of d in the row-major split over grid_tiles (the Q tiles per dim of
// sm80::q_tile_grid), heavy-first along causal dims (index_math.h decode_dim), as the sm80
// forward orders its Q tiles. The kernel runs it on lane d of warp 0.
GNA_HD DimTile q_tile_dim(int tile_index, const int grid_tiles[kMaxRank],
                          const GroupTiling& tiling, const ProblemShape& s, int d,
                          const TileShape& tiles) {
  int t[kMaxRank];
  sm80::split_tile_index(tile_index, grid_tiles, t);
  const int t_d = d == 0 ? t[0] : d == 1 ? t[1] : t[2];  // (t[d] would go to the stack)
  return sm80::decode_dim(t_d, tiling, s, d, tiles.q[d], /*heavy_first=*/true);
}

// Packed box coordinate (index_math.h) of halo token j: row-major over the halo box.
GNA_HD uint32_t halo_code(int j, const int extent[kMaxRank]) {
  return sm80::box_code(j, extent);
}

// Element offset of halo token `code` from the halo's token (0, 0, 0) in a tensor of
// spatial strides `stride` (per dim: dilation x box coordinate x stride; index_math.h
// row_delta), and of the halo's token (0, 0, 0) from the (batch, head) base.
GNA_HD int64_t halo_token_delta(uint32_t code, const ProblemShape& s,
                                const int64_t stride[kMaxRank]) {
  int step[kMaxRank];
  sm80::box_steps(s, step);
  return sm80::row_delta(step, code, stride);
}

GNA_HD int64_t halo_origin_offset(const DimTile q[kMaxRank], const HaloBox& h,
                                  const ProblemShape& s, const int64_t stride[kMaxRank]) {
  int64_t off = 0;
  for (int d = 0; d < kMaxRank; ++d) {
    off += int64_t(q[d].group + s.dims[d].dilation * h.origin[d]) * stride[d];
  }
  return off;
}

// The packed interval of halo box coordinates inside the window [begin, end) (group-local,
// per dim) of one query: the row's mask interval (index_math.h shifted_interval).
GNA_HD BoxInterval row_interval(const int begin[kMaxRank], const int end[kMaxRank],
                                const HaloBox& h) {
  return sm80::shifted_interval(begin, end, h.origin);
}

// The positions of the key list a query with window [begin, end) (group-local, per dim) can
// see among the halo tokens: [first, last + 1) of its window's first and last tokens, as the
// halo is row-major (dim 2 fastest). Every key it sees lies inside; most of the span is
// outside the window along the faster dims.
GNA_HD Range row_key_span(const int begin[kMaxRank], const int end[kMaxRank], const HaloBox& h) {
  int first = 0, last = 0;
  for (int d = 0; d < kMaxRank; ++d) {
    first = first * h.extent[d] + (begin[d] - h.origin[d]);
    last = last * h.extent[d] + (end[d] - 1 - h.origin[d]);
  }
  return {first, last + 1};
}

// Does a query with mask interval `iv` see key j of the key list (halo_tokens halo tokens,
// num_keys keys in all)? `code` is halo_code(j) for j < halo_tokens (ignored otherwise).
GNA_HD bool key_visible(BoxInterval iv, int j, int halo_tokens, int num_keys, uint32_t code) {
  if (j < halo_tokens) return sm80::in_box_interval(code, code | sm80::kCodeGuard, iv);
  return j < num_keys;  // an additional token (every query sees them) or padding
}

// ---- Plan of one call (host) ---------------------------------------------------------------

// The largest halo extent along a dim over every Q tile of `tile` tokens in every dilation
// group: the whole grid, also for a call restricted to a query range (jax_gna/tiles.py
// halo_stats takes the same figure, so the Python rule and this one agree).
// The largest extent of range(t0, t1, lg) over every tile [t0, t1) of `tile` tokens of a
// dim's dilation groups (group 0 is the longest group, group d - 1 the shortest: the only
// two lengths).
template <class TileRange>
inline int max_tile_extent(const DimParams& p, int tile, TileRange&& range) {
  int best = 0;
  for (int g : {0, p.dilation - 1}) {
    const int lg = group_length(g, p.length, p.dilation);
    for (int t0 = 0; t0 < lg; t0 += tile) {
      const Range r = range(t0, imin(t0 + tile, lg), lg);
      best = imax(best, r.end - r.begin);
    }
  }
  return best;
}

inline int max_halo_extent(const DimParams& p, int tile) {
  return max_tile_extent(p, tile, [&](int q0, int q1, int lg) {
    return q_tile_kv_range(q0, q1, lg, p.kernel_size, p.stride, p.causal);
  });
}

// The key list through the ring (fwd_kernel.h, bwd_dq_kernel.h): before step 0 the CTA
// issues chunks 0 .. ring - 1, one cp.async group each; step c waits, passes a barrier and
// commits one group: empty at step 0 (no slot is free yet), from step 1 on chunk
// c - 1 + ring, into the slot chunk c - 1 freed. So chunk c >= ring is group c + 1 of the
// ring + c groups committed at step c's wait: the groups that may still be pending when
// chunk c must have landed (test/host_check.cc simulates it).
GNA_HD int stream_pending(int c, int ring) { return c < ring ? ring - 1 : ring - 2; }

// The loads of a forward CTA that computes `items` items in a row (query heads sharing its
// halo, or (batch, KV head) units), the n chunks of its key list each, as one stream of
// global chunks g = item x n + chunk, one step each. Before step 0 the CTA issues chunks
// 0 .. ring - 1, one cp.async group each; step g waits until at most stream_pending(g, ring)
// groups are pending (chunk g landed), passes a barrier, issues chunk refill(g) (one group,
// maybe empty: step 0's always is) and computes, as a single key list does (above).
// An item's Q tile loads with its chunk 0, into Q buffer item % 2.
//   - ring <= n + 1: item w's Q tile is issued at step w n - ring + 1 >= (w - 1) n, after
//     item w - 2 last read that buffer (its first step, its epilogue: the O tile is staged
//     there), and before step w n;
//   - shared (heads of one KV head on a resident key list): item 0 loads the chunks into
//     slots 0 .. n - 1 and every item reads them there; later items load only Q;
//   - else chunk g reads slot g % ring, refilled at step g + 1 (after every warp left step
//     g) with chunk g + ring.
// test/host_check.cc simulates it (stream mode) for these properties.
struct ChunkStream {
  int n;        // chunks per item
  int items;
  int ring;     // chunks loading or resident at a step's wait
  bool shared;  // the items share K and V

  GNA_HD int total() const { return items * n; }
  GNA_HD int slot(int g) const { return shared ? g % n : g % ring; }
  GNA_HD bool loads_kv(int g) const { return !shared || g < n; }
  GNA_HD int pending(int g) const { return stream_pending(g, ring); }
  // The chunk whose loads are issued after step g's barrier; -1 if none.
  GNA_HD int refill(int g) const {
    const int r = g - 1 + ring;
    return g > 0 && r < total() ? r : -1;
  }
};

// `ring_slots`: the call's (Plan), >= 2 when a CTA has 2 chunks or more in all.
GNA_HD ChunkStream make_chunk_stream(int n, int items, int ring_slots, bool shared) {
  ChunkStream cs;
  cs.n = n;
  cs.items = items;
  cs.shared = shared;
  cs.ring = shared ? n + 1 : imin(ring_slots, n + 1);
  return cs;
}

// The items of one Q-tile-major CTA (the forward's and the dQ kernel's): CTA column x
// (blockIdx.x) holds Q tile x / head_groups and head group x % head_groups; unit block
// `unit_block` (blockIdx.y + gridDim.y x blockIdx.z) the units [unit_block x
// units_per_cta, ..) of batch x heads_kv + KV head; each unit heads_per_cta query heads
// (one of units_per_cta and heads_per_cta is 1). Item w is unit w / heads_per_cta, its head
// w % heads_per_cta.
struct CtaItems {
  int64_t unit0;
  int units;  // 0: a unit block past the last unit (the launch's y x z split)
  int heads_per_cta, head0_in_group, group, heads_kv;

  GNA_HD int items() const { return units * heads_per_cta; }
  GNA_HD int64_t batch(int w) const { return (unit0 + w / heads_per_cta) / heads_kv; }
  GNA_HD int64_t kv_head(int w) const { return (unit0 + w / heads_per_cta) % heads_kv; }
  GNA_HD int64_t q_head(int w) const {
    return kv_head(w) * group + head0_in_group + w % heads_per_cta;
  }
};

GNA_HD CtaItems cta_items(const ProblemShape& s, int64_t x, int64_t unit_block,
                          int units_per_cta, int heads_per_cta, int head_groups) {
  CtaItems it;
  const int64_t num_units = int64_t(s.batch) * s.heads_kv;
  it.unit0 = unit_block * units_per_cta;
  const int64_t left = num_units - it.unit0;
  it.units = left <= 0 ? 0 : int(left < units_per_cta ? left : units_per_cta);
  it.heads_per_cta = heads_per_cta;
  it.head0_in_group = int(x % head_groups) * heads_per_cta;
  it.group = s.heads_q / s.heads_kv;
  it.heads_kv = s.heads_kv;
  return it;
}

// A launch grid of `columns` CTA columns (x) and `unit_blocks` unit blocks split over y and
// z (y at most 65535); false when it does not fit (x above INT32_MAX, z above 65535).
inline bool unit_grid(int64_t columns, int64_t unit_blocks, int64_t dims[3]) {
  dims[0] = columns;
  dims[1] = unit_blocks < 65535 ? unit_blocks : 65535;
  dims[2] = dims[1] > 0 ? (unit_blocks + dims[1] - 1) / dims[1] : 0;
  return dims[0] <= INT32_MAX && dims[2] <= 65535;
}

struct Plan {
  int max_extent[kMaxRank];  // largest halo extent per dim (max_halo_extent)
  int max_halo_tokens;       // their product: the largest halo of any Q tile
  int max_chunks;            // ceil((max_halo_tokens + num_extra) / kChunk)
  // Chunks of K and V in shared memory (the ring): min(max_chunks, the instantiation's
  // ring). At least 2 whenever a CTA has 2 chunks or more, so a chunk is never loaded into
  // the slot being read.
  int ring_slots;
  bool resident;             // max_chunks <= ring_slots: every chunk is loaded once
  int group;                 // query heads per KV head, G = heads_q / heads_kv
  // Query heads per CTA (a divisor of G), sharing the CTA's halo: > 1 only when resident and
  // the grid keeps kMinCtasPerSm CTAs per SM with it (or the test hook asks for it).
  int heads_per_cta;
  int head_groups;           // G / heads_per_cta: CTAs per (Q tile, KV head)
  int64_t num_q_tiles;       // Q tiles holding a computed query (sm80::q_tile_grid)
  int64_t num_ctas;          // num_q_tiles x head_groups x unit_blocks
  // The forward's units (plan_units; 1 and batch x heads_kv before it): a CTA computes
  // units_per_cta consecutive (batch, KV head) units of its Q tile, unit_blocks CTAs per
  // (Q tile, head group).
  int units_per_cta = 1;
  int64_t unit_blocks = 0;

  // The launch grid: (Q tiles x head_groups, unit blocks split over y and z).
  bool grid(int64_t dims[3]) const {
    return unit_grid(num_q_tiles * head_groups, unit_blocks, dims);
  }
};

template <class... Args>
inline std::string format(const char* f, Args... args) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), f, args...);
  return std::string(buf);
}

// Why the halo forward cannot serve `p` with Q tiles of q_tile_tokens tokens and key chunks
// of chunk_tokens keys (its registry entry); "" when it can. The one C++ statement of the
// family's admission (jax_gna/backends.py _halo_rule is the Python one; the handler passes
// this text on). Fills *plan (ring_slots from `max_ring`, heads_per_cta from the device's
// `num_sms` and `heads_hook`: > 0 forces the largest divisor of G not above it, resident
// calls only) when it returns "".
inline std::string plan_call(const FwdParams& p, int q_tile_tokens, int chunk_tokens,
                             int max_ring, int heads_hook, Plan* plan) {
  const ProblemShape& s = p.shape;
  if (p.dtype != DType::kBFloat16 && p.dtype != DType::kFloat16)
    return "dtype must be bfloat16 or float16";
  if (s.head_dim != s.head_dim_v)
    return format("head_dim %d != value head_dim %d", s.head_dim, s.head_dim_v);
  if (q_tile_tokens != kBlockM || chunk_tokens != kChunk)
    return format("instantiation tiles %d/%d, the kernel computes %d/%d", q_tile_tokens,
                  chunk_tokens, kBlockM, kChunk);
  if (s.heads_kv < 1 || s.heads_q % s.heads_kv != 0)
    return format("query heads %d are not a multiple of key heads %d", s.heads_q, s.heads_kv);
  int q_tokens = 1;
  for (int d = 0; d < kMaxRank; ++d) q_tokens *= p.tiles.q[d];
  if (q_tokens != kBlockM)
    return format("q_tile box %dx%dx%d has %d tokens, the kernel takes %d", p.tiles.q[0],
                  p.tiles.q[1], p.tiles.q[2], q_tokens, kBlockM);
  int64_t tokens = 1;
  for (int d = 0; d < kMaxRank; ++d) {
    plan->max_extent[d] = max_halo_extent(s.dims[d], p.tiles.q[d]);
    tokens *= plan->max_extent[d];
  }
  for (int d = 0; d < kMaxRank; ++d) {
    if (plan->max_extent[d] > kMaxHaloSide)
      return format("the halo of a %dx%dx%d Q tile spans up to %d keys along padded dim %d, "
                    "above %d (box coordinates)", p.tiles.q[0], p.tiles.q[1], p.tiles.q[2],
                    plan->max_extent[d], d, kMaxHaloSide);
  }
  if (tokens > kMaxHaloTokens)
    return format("the halo of a %dx%dx%d Q tile holds up to %lld keys (%dx%dx%d), above the "
                  "limit of %d", p.tiles.q[0], p.tiles.q[1], p.tiles.q[2],
                  static_cast<long long>(tokens), plan->max_extent[0], plan->max_extent[1],
                  plan->max_extent[2], kMaxHaloTokens);
  // Key-list positions are int: halo + additional tokens + a chunk of padding must fit.
  if (int64_t(s.num_extra) > int64_t(INT32_MAX) - kMaxHaloTokens - kChunk)
    return format("%d additional tokens: the key list would not fit in int32", s.num_extra);
  if (max_ring < 2) return "the instantiation's ring holds fewer than 2 chunks";
  plan->max_halo_tokens = int(tokens);
  plan->max_chunks = int(ceil_div(int(tokens) + s.num_extra, kChunk));
  plan->ring_slots = imin(plan->max_chunks, max_ring);
  plan->resident = plan->max_chunks <= plan->ring_slots;
  plan->group = s.heads_q / s.heads_kv;
  plan->num_q_tiles = sm80::q_tile_grid(s, p.tiles.q).total();
  const int64_t per_head = plan->num_q_tiles * s.heads_kv * int64_t(s.batch);
  int hpc = 1;
  if (plan->resident && plan->group > 1) {
    const int64_t floor = int64_t(kMinCtasPerSm) * (p.num_sms > 0 ? p.num_sms : 1);
    for (int c = plan->group; c > 1; --c) {
      if (plan->group % c == 0 && per_head * (plan->group / c) >= floor) {
        hpc = c;
        break;
      }
    }
    if (heads_hook > 0) {
      hpc = 1;
      for (int c = imin(heads_hook, plan->group); c >= 1; --c) {
        if (plan->group % c == 0) {
          hpc = c;
          break;
        }
      }
    }
  }
  plan->heads_per_cta = hpc;
  plan->head_groups = plan->group / hpc;
  plan->num_ctas = per_head * plan->head_groups;
  plan->units_per_cta = 1;
  plan->unit_blocks = int64_t(s.batch) * s.heads_kv;
  if (plan->num_q_tiles * plan->head_groups > INT32_MAX)
    return "too many Q tiles for one launch";
  return std::string();
}

// Most (batch, KV head) units one CTA computes (the forward's, the dQ and dK/dV kernels').
constexpr int kMaxUnitsPerCta = 8;

// Units per CTA for a grid of `columns` CTA columns (Q tiles or KV boxes, with head groups)
// and `units` (batch, KV head) units: the most, up to kMaxUnitsPerCta, that keep
// kMinCtasPerSm CTAs per SM; `units_hook` > 0 (the test hook) forces up to it.
inline int choose_units_per_cta(int64_t columns, int64_t units, int num_sms, int units_hook) {
  if (units <= 1) return 1;
  int upc = 1;
  const int64_t floor = int64_t(kMinCtasPerSm) * (num_sms > 0 ? num_sms : 1);
  for (int c = kMaxUnitsPerCta; c > 1; --c) {
    if (columns * ((units + c - 1) / c) >= floor) {
      upc = c;
      break;
    }
  }
  if (units_hook > 0) upc = imin(units_hook, kMaxUnitsPerCta);
  return int(units < upc ? units : upc);
}

// The forward's CTAs of several items (plan_call's plan of `p` in, adjusted): a CTA that
// computes more than one item (query heads sharing its halo, or units) double-buffers its Q
// tile, and its ring then holds at most `max_ring_multi` chunks (the instantiation's, beside
// the second Q tile; < 2: one item per CTA, heads_per_cta 1). Without shared heads, a CTA
// computes up to kMaxUnitsPerCta consecutive (batch, KV head) units of its Q tile: the most
// that keep kMinCtasPerSm CTAs per SM (`units_hook` > 0 forces up to it). With units its
// ring holds up to max_chunks + 1 chunks (q_tile_cta.h ChunkStream: the next unit's first
// chunk and Q tile load while this one computes).
inline void plan_units(const FwdParams& p, int max_ring_multi, int units_hook, Plan* plan) {
  const ProblemShape& s = p.shape;
  const int64_t units = int64_t(s.batch) * s.heads_kv;
  if (plan->heads_per_cta > 1) {  // shared heads: the key list must stay resident
    if (max_ring_multi >= 2) plan->ring_slots = imin(plan->ring_slots, max_ring_multi);
    if (max_ring_multi < 2 || plan->max_chunks > plan->ring_slots) {
      plan->heads_per_cta = 1;
      plan->head_groups = plan->group;
    }
  }
  const int64_t columns = plan->num_q_tiles * plan->head_groups;
  const int upc = plan->heads_per_cta == 1 && max_ring_multi >= 2
                      ? choose_units_per_cta(columns, units, p.num_sms, units_hook)
                      : 1;
  if (upc > 1) plan->ring_slots = imin(plan->max_chunks + 1, max_ring_multi);
  plan->resident = plan->max_chunks <= plan->ring_slots;
  plan->units_per_cta = upc;
  plan->unit_blocks = (units + upc - 1) / upc;
  plan->num_ctas = columns * plan->unit_blocks;
}

inline std::string unsupported_reason(const FwdParams& p, int q_tile_tokens,
                                      int chunk_tokens) {
  Plan plan;
  // The ring size only sets ring_slots; admission does not depend on it (any ring >= 2).
  return plan_call(p, q_tile_tokens, chunk_tokens, /*max_ring=*/2, /*heads_hook=*/0, &plan);
}

// ---- Backward: the inverse halo of a KV box ------------------------------------------------
//
// The dK/dV kernel's work item is a KV box: kChunk keys, power-of-two sides, group-local
// coordinates of one dilation group per dim (sm80 KV tiles at 64 tokens, p.tiles.kv). Its
// inverse halo is the box of queries that see any of its keys: per dim the union of the keys'
// inverse windows, from the first query seeing its first key to one past the last query
// seeing its last one (window.h kv_tile_q_range; inverse windows are monotone), restricted to
// the Q tiles the call computes (the dQ kernel's: query_tiling, tile-granular like the sm80
// backward). The CTA's query list is the inverse halo's tokens row-major, in chunks of
// kBlockM queries, padding past the end. Query q of the list (box coordinate
// halo_code(q, extent)) sees key c of the box iff the query's coordinate lies in the key's
// inverse window shifted into the inverse halo: the packed-interval test of index_math.h.

GNA_HD Range inverse_halo_range(const DimTile& kv, const DimParams& p,
                                const GroupTiling& q_tiling, int q_tile) {
  const Range r =
      kv_tile_q_range(kv.begin, kv.end, kv.group_len, p.kernel_size, p.stride, p.causal);
  const Range span = group_tile_span(q_tiling, kv.group);
  const int lo = imax(r.begin, span.begin * q_tile);
  const int hi = imin(r.end, imin(span.end * q_tile, kv.group_len));
  return {lo, imax(hi, lo)};
}

GNA_HD HaloBox inverse_halo_box(const DimTile kv[kMaxRank], const ProblemShape& s,
                                const int q_tile[kMaxRank]) {
  HaloBox h;
  for (int d = 0; d < kMaxRank; ++d) {
    const Range r = inverse_halo_range(kv[d], s.dims[d], query_tiling(s, d, q_tile[d]),
                                       q_tile[d]);
    h.origin[d] = r.begin;
    h.extent[d] = r.end - r.begin;
  }
  return h;
}

// Box coordinate of query-list position q: the inverse halo's token q, or for padding
// (q >= tokens) a code no interval holds (every field 511 > kMaxBoxDim).
GNA_HD uint32_t query_list_code(int q, int tokens, const int extent[kMaxRank]) {
  return q < tokens ? sm80::box_code(q, extent) : sm80::pack_code(511, 511, 511);
}

// The largest inverse-halo extent along a dim over every KV box of `tile` keys (the whole
// grid, unrestricted by a query range, like max_halo_extent).
inline int max_inverse_halo_extent(const DimParams& p, int tile) {
  return max_tile_extent(p, tile, [&](int k0, int k1, int lg) {
    return kv_tile_q_range(k0, k1, lg, p.kernel_size, p.stride, p.causal);
  });
}

struct BwdPlan {
  Plan dq;                    // the dQ kernel's: the forward's plan (Q tiles, halos, ring)
  int max_inv_extent[kMaxRank];
  int max_inv_tokens;         // the largest inverse halo of any KV box (queries per head)
  int64_t num_kv_tiles;       // KV boxes (sm80::tile_grid of p.tiles.kv)
  // The dK/dV kernel's units (plan_dkv_units; 1 and batch x heads_kv before it): a CTA
  // computes dkv_units_per_cta consecutive (batch, KV head) units of its KV box.
  int dkv_units_per_cta = 1;
  int64_t dkv_unit_blocks = 0;

  // The dK/dV launch grid: (KV boxes, unit blocks split over y and z).
  bool dkv_grid(int64_t dims[3]) const {
    return unit_grid(num_kv_tiles, dkv_unit_blocks, dims);
  }
};

inline void plan_dkv_units(const BwdParams& p, int units_hook, BwdPlan* plan) {
  const ProblemShape& s = p.fwd.shape;
  const int64_t units = int64_t(s.batch) * s.heads_kv;
  plan->dkv_units_per_cta =
      choose_units_per_cta(plan->num_kv_tiles, units, p.fwd.num_sms, units_hook);
  plan->dkv_unit_blocks = (units + plan->dkv_units_per_cta - 1) / plan->dkv_units_per_cta;
}

// Why the halo backward cannot serve `p` (q_tile_tokens / kv_tile_tokens: its registry
// entry); "" when it can, with *plan filled (the dQ kernel's ring from max_ring, heads per CTA
// as plan_call). The one C++ statement of the backward's admission
// (jax_gna/backends.py _halo_rule is the Python one): the forward's (the dQ kernel loads the
// same halos), no additional tokens, a KV box of kChunk tokens whose inverse halo holds at
// most kMaxHaloTokens queries and spans at most kMaxHaloSide along a dim.
inline std::string plan_bwd_call(const BwdParams& p, int q_tile_tokens, int kv_tile_tokens,
                                 int max_ring, int heads_hook, BwdPlan* plan) {
  const FwdParams& f = p.fwd;
  const ProblemShape& s = f.shape;
  if (s.num_extra > 0)
    return format("%d additional keys/values: the halo backward has no key list for them "
                  "(the sm80 backward serves them)", s.num_extra);
  if (std::string why = plan_call(f, q_tile_tokens, kv_tile_tokens, max_ring, heads_hook,
                                  &plan->dq);
      !why.empty())
    return why;
  int kv_tokens = 1;
  for (int d = 0; d < kMaxRank; ++d) kv_tokens *= f.tiles.kv[d];
  if (kv_tokens != kChunk)
    return format("kv_tile box %dx%dx%d has %d tokens, the dK/dV kernel takes %d",
                  f.tiles.kv[0], f.tiles.kv[1], f.tiles.kv[2], kv_tokens, kChunk);
  int64_t tokens = 1;
  for (int d = 0; d < kMaxRank; ++d) {
    plan->max_inv_extent[d] = max_inverse_halo_extent(s.dims[d], f.tiles.kv[d]);
    tokens *= plan->max_inv_extent[d];
    if (plan->max_inv_extent[d] > kMaxHaloSide)
      return format("the queries seeing a %dx%dx%d KV box span up to %d along padded dim %d, "
                    "above %d (box coordinates)", f.tiles.kv[0], f.tiles.kv[1],
                    f.tiles.kv[2], plan->max_inv_extent[d], d, kMaxHaloSide);
  }
  if (tokens > kMaxHaloTokens)
    return format("up to %lld queries (%dx%dx%d) see a %dx%dx%d KV box, above the limit of %d",
                  static_cast<long long>(tokens), plan->max_inv_extent[0],
                  plan->max_inv_extent[1], plan->max_inv_extent[2], f.tiles.kv[0],
                  f.tiles.kv[1], f.tiles.kv[2], kMaxHaloTokens);
  plan->max_inv_tokens = int(tokens);
  plan->num_kv_tiles = sm80::tile_grid(s, f.tiles.kv).total();
  plan->dkv_units_per_cta = 1;
  plan->dkv_unit_blocks = int64_t(s.batch) * s.heads_kv;
  return std::string();
}

inline std::string bwd_unsupported_reason(const BwdParams& p, int q_tile_tokens,
                                          int kv_tile_tokens) {
  BwdPlan plan;
  return plan_bwd_call(p, q_tile_tokens, kv_tile_tokens, /*max_ring=*/2, /*heads_hook=*/0,
                       &plan);
}

}  // namespace jax_gna::halo
