// Host-side check of the halo forward's index math (no GPU, plain g++):
//
// (tests/test_host_checks_cpp.py builds and runs it; <gen> is the output of
// `python3 xla_ffi/generate_kernels.py --out <gen>`, for jax_gna/kernel_manifest.h)
//   g++ -std=c++17 -O2 -I xla_ffi/include -I xla_ffi/cuda -I <gen>
//       xla_ffi/cuda/halo/test/host_check.cc -o /tmp/halo_check && /tmp/halo_check [n]
//
// For random problems (rank 1-3, windows 2..13 and some larger ones, odd/even kernels,
// strides, dilations up to length / kernel_size, groups of two lengths, causal dims, GQA,
// additional tokens, every power-of-two 64-token Q box, query ranges) it runs the kernel's own
// code of halo_plan.h (plan_call, q_tile_dim, halo_box, halo_code, halo_token_delta,
// halo_origin_offset, row_interval, key_visible; the Q-row tables of sm80/index_math.h) and
// checks it against a per-element brute force over window.h's windows:
//  - admission: a call is refused exactly when some Q tile's halo (brute force: the hull of
//    its queries' windows) exceeds kMaxHaloTokens tokens or kMaxHaloSide along a dim; the
//    plan's largest halo is the brute-force largest one;
//  - the grid's CTAs cover every (query head, Q tile) of the computed range once, and the Q
//    tiles' existing rows cover every query of the range once;
//  - every key of every query's window lies in its Q tile's halo box (per dim);
//  - the halo tokens are distinct keys of the Q tile's dilation groups, inside the grid, and
//    the gather's element offset of each is that key's offset in the tensor;
//  - per query row, the keys key_visible admits over the whole padded key list are exactly
//    the spec's neighbourhood (each once) plus every additional token (each once); rows past
//    a group's end still see at least one key (finite, never stored); the halo keys it
//    admits lie in its row_key_span (the kernels skip a warp's chunks outside its rows'
//    spans);
//  - the plan: ring of >= 2 slots unless every key list is one chunk, a resident plan holds
//    every CTA's key list, heads_per_cta divides G and is 1 unless resident;
//  - the ring's cp.async groups (stream_pending): every chunk complete at its step's wait,
//    loaded into a slot no warp still reads.
//
// `host_check plan RANK  L k s d causal q_side  [per dim]...` prints the plan of one
// problem (tests/test_halo.py compares it with jax_gna.tiles.halo_stats).
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <random>
#include <set>
#include <string>
#include <tuple>
#include <vector>

#include "halo/halo_plan.h"

using namespace jax_gna;
using namespace jax_gna::halo;

static int g_failures = 0;
#define CHECK(cond, ...)                                            \
  do {                                                              \
    if (!(cond)) {                                                  \
      if (++g_failures <= 20) {                                     \
        std::printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
        std::printf(__VA_ARGS__);                                   \
        std::printf("\n");                                          \
      }                                                             \
    }                                                               \
  } while (0)

// Does query i see key j along one dim? window.h's per-query window (the one C++ copy of the
// window math, checked against jax_gna/semantics.py by tests/test_window_cpp.py); what is
// checked here is the halo kernel's tile-level code.
static bool spec_sees(int i, int j, const DimParams& p) {
  if (i % p.dilation != j % p.dilation) return false;
  const Range r = window(i, p);
  return j / p.dilation >= r.begin && j / p.dilation < r.end;
}

struct Problem {
  int rank;
  DimParams dims[kMaxRank];
  int q[kMaxRank];
  int batch, hq, hkv, extra, num_sms;
  int qbegin[kMaxRank], qend[kMaxRank];
};

static FwdParams make_params(const Problem& pr) {
  FwdParams fp;
  ProblemShape& s = fp.shape;
  s.batch = pr.batch;
  s.heads_q = pr.hq;
  s.heads_kv = pr.hkv;
  s.head_dim = s.head_dim_v = 64;
  s.num_extra = pr.extra;
  for (int d = 0; d < kMaxRank; ++d) {
    s.dims[d] = pr.dims[d];
    s.query_begin[d] = pr.qbegin[d];
    s.query_end[d] = pr.qend[d];
    fp.tiles.q[d] = pr.q[d];
    fp.tiles.kv[d] = pr.q[d];
  }
  fp.dtype = DType::kBFloat16;
  fp.num_sms = pr.num_sms;
  // Strides of a [B, S0, S1, S2, H, D] tensor (the handler's MakeTokenStrides).
  const int64_t dh = s.head_dim;
  TokenStrides kst;
  kst.head = dh;
  int64_t stride = int64_t(pr.hkv) * dh;
  for (int d = kMaxRank - 1; d >= 0; --d) {
    kst.spatial[d] = stride;
    stride *= s.dims[d].length;
  }
  kst.batch = stride;
  fp.k_strides = fp.v_strides = kst;
  return fp;
}

static std::string dims_str(const Problem& pr) {
  std::string out;
  for (int d = kMaxRank - pr.rank; d < kMaxRank; ++d) {
    const DimParams& p = pr.dims[d];
    char buf[160];
    std::snprintf(buf, sizeof(buf), "[L%d k%d s%d d%d c%d q%d r%d-%d]", p.length, p.kernel_size,
                  p.stride, p.dilation, int(p.causal), pr.q[d], pr.qbegin[d], pr.qend[d]);
    out += buf;
  }
  char buf[96];
  std::snprintf(buf, sizeof(buf), " B%d H%d/%d E%d", pr.batch, pr.hq, pr.hkv, pr.extra);
  return out + buf;
}

// Brute force: along one dim, the largest hull of the windows of the queries of one Q tile
// (all groups, all tiles of `tile` tokens), from per-query windows.
static int brute_max_extent(const DimParams& p, int tile) {
  int best = 0;
  for (int g = 0; g < p.dilation; ++g) {
    const int lg = group_length(g, p.length, p.dilation);
    for (int q0 = 0; q0 < lg; q0 += tile) {
      int lo = 1 << 30, hi = -1;
      for (int ii = q0; ii < std::min(q0 + tile, lg); ++ii) {
        const Range w = window(g + p.dilation * ii, p);
        lo = std::min(lo, w.begin);
        hi = std::max(hi, w.end);
      }
      best = std::max(best, hi - lo);
    }
  }
  return best;
}

// The forward's chunk stream (halo_plan.h ChunkStream) of one CTA, simulated step by step:
// every chunk's loads are issued once, into a slot (and for an item's chunk 0 a Q buffer)
// whose last reader has passed a barrier, and complete at its step's wait; shared items
// read the first item's slots.
static void check_stream(const ChunkStream& cs, int ring_slots, const std::string& where) {
  const int total = cs.total();
  CHECK(cs.ring >= 1 && (cs.ring >= 2 || total == 1), "%s: stream ring %d for %d chunks",
        where.c_str(), cs.ring, total);
  CHECK(cs.shared || cs.ring <= ring_slots, "%s: ring %d above the %d slots", where.c_str(),
        cs.ring, ring_slots);
  CHECK(cs.ring <= cs.n + 1, "%s: ring %d, n %d", where.c_str(), cs.ring, cs.n);
  std::vector<int> issued_at(size_t(total), -2);  // -1: before step 0
  std::vector<int> group_of(size_t(total), -1);
  // What a slot / Q buffer holds: the chunk / item whose loads went there last (-1: none).
  std::vector<int> slot_holds(size_t(cs.ring > cs.n ? cs.ring : cs.n), -1);
  int q_holds[2] = {-1, -1};
  // Loads of chunk r issued after the barrier of step g (-1: before step 0): the slot's last
  // chunk was read by its step, before this barrier; the Q buffer's last item has stored its
  // output (its epilogue precedes the barrier of its successor's first step).
  auto load = [&](int r, int g) {
    if (cs.loads_kv(r)) {
      int& held = slot_holds[size_t(cs.slot(r))];
      CHECK(held < 0 || held < g, "%s: chunk %d loads at step %d into slot %d, chunk %d's, "
            "not read yet", where.c_str(), r, g, cs.slot(r), held);
      held = r;
    }
    if (r % cs.n == 0) {
      int& held = q_holds[(r / cs.n) % 2];
      CHECK(held < 0 || (held + 1) * cs.n <= g, "%s: Q tile of item %d loads at step %d over "
            "item %d's", where.c_str(), r / cs.n, g, held);
      held = r / cs.n;
    }
  };
  int groups = 0;
  for (int g = 0; g < cs.ring; ++g) {
    if (g < total) issued_at[size_t(g)] = -1, group_of[size_t(g)] = groups, load(g, -1);
    ++groups;
  }
  for (int g = 0; g < total; ++g) {
    const int w = g / cs.n, c = g % cs.n;
    // At the wait: at most pending(g) groups pending, so groups 0 .. groups - pending(g) - 1
    // are done.
    CHECK(issued_at[size_t(g)] >= -1 && issued_at[size_t(g)] < g, "%s: chunk %d not issued",
          where.c_str(), g);
    CHECK(cs.pending(g) >= 0 && group_of[size_t(g)] <= groups - cs.pending(g) - 1,
          "%s: chunk %d (group %d) pending at its step (%d groups, ring %d)", where.c_str(), g,
          group_of[size_t(g)], groups, cs.ring);
    // After the barrier: the refill.
    const int r = cs.refill(g);
    if (r >= 0) {
      CHECK(issued_at[size_t(r)] == -2, "%s: chunk %d issued twice", where.c_str(), r);
      issued_at[size_t(r)] = g;
      group_of[size_t(r)] = groups;
      load(r, g);
    }
    ++groups;  // one group per step
    // The step reads its chunk from its slot, and the item's Q tile from its buffer.
    const int slot = cs.slot(g);
    CHECK(slot >= 0 && slot < (cs.shared ? cs.n : cs.ring), "%s: slot %d", where.c_str(), slot);
    const int want = cs.shared ? c : g;  // shared items read the first item's chunks
    CHECK(slot_holds[size_t(slot)] == want, "%s: step %d reads slot %d holding chunk %d",
          where.c_str(), g, slot, slot_holds[size_t(slot)]);
    CHECK(q_holds[w % 2] == w, "%s: item %d reads Q buffer %d holding item %d", where.c_str(),
          w, w % 2, q_holds[w % 2]);
  }
  for (int g = cs.ring; g < total; ++g) {
    CHECK(issued_at[size_t(g)] >= 0, "%s: chunk %d never issued", where.c_str(), g);
  }
}

// The forward's units (plan_units) on top of plan_call's plan: every (batch, query head,
// Q tile) is computed by exactly one CTA item, and the ring and shared heads stay
// consistent; every CTA's chunk stream is checked.
static void check_units(const FwdParams& fp, const Plan& base, int max_ring_multi,
                        int units_hook, const std::string& where) {
  const ProblemShape& s = fp.shape;
  Plan plan = base;
  plan_units(fp, max_ring_multi, units_hook, &plan);
  const int G = s.heads_q / s.heads_kv;
  const int64_t units = int64_t(s.batch) * s.heads_kv;
  CHECK(plan.units_per_cta >= 1 && plan.units_per_cta <= kMaxUnitsPerCta, "%s: upc %d",
        where.c_str(), plan.units_per_cta);
  CHECK(plan.units_per_cta == 1 || plan.heads_per_cta == 1, "%s: units with shared heads",
        where.c_str());
  CHECK(plan.heads_per_cta * plan.head_groups == G, "%s", where.c_str());
  CHECK(plan.heads_per_cta == 1 || plan.resident, "%s: shared heads not resident", where.c_str());
  const bool multi = plan.heads_per_cta * plan.units_per_cta > 1;
  CHECK(!multi || max_ring_multi >= 2, "%s: several items without a second Q tile",
        where.c_str());
  CHECK(!multi || plan.ring_slots <= max_ring_multi, "%s: ring %d above %d", where.c_str(),
        plan.ring_slots, max_ring_multi);
  CHECK(plan.ring_slots >= 2 || (plan.max_chunks == 1 && plan.units_per_cta == 1), "%s: ring %d",
        where.c_str(), plan.ring_slots);
  CHECK(plan.resident == (plan.max_chunks <= plan.ring_slots), "%s", where.c_str());
  if (units_hook > 0 && plan.heads_per_cta == 1 && max_ring_multi >= 2) {
    const int64_t want = std::min<int64_t>(std::min(units_hook, kMaxUnitsPerCta), units);
    CHECK(plan.units_per_cta == want, "%s: units hook %d, upc %d", where.c_str(), units_hook,
          plan.units_per_cta);
  }
  CHECK(plan.unit_blocks * plan.units_per_cta >= units &&
            (plan.unit_blocks - 1) * plan.units_per_cta < units,
        "%s: %lld unit blocks", where.c_str(), static_cast<long long>(plan.unit_blocks));
  // Coverage: the launch grid's CTAs (x below 64), their items decoded as the kernels do
  // (cta_items): every (Q tile, batch, query head) once.
  int64_t dims[3];
  CHECK(plan.grid(dims) && dims[1] * dims[2] >= plan.unit_blocks &&
            (dims[2] - 1) * dims[1] < plan.unit_blocks,
        "%s: grid", where.c_str());
  std::set<std::tuple<int64_t, int64_t, int64_t>> seen;
  const int64_t columns = std::min<int64_t>(dims[0], 64);
  for (int64_t x = 0; x < columns; ++x) {
    for (int64_t ub = 0; ub < dims[1] * dims[2]; ++ub) {
      const CtaItems it = cta_items(s, x, ub, plan.units_per_cta, plan.heads_per_cta,
                                    plan.head_groups);
      CHECK((it.units > 0) == (ub < plan.unit_blocks), "%s: unit block %lld", where.c_str(),
            static_cast<long long>(ub));
      for (int w = 0; w < it.items(); ++w) {
        const int64_t b = it.batch(w), h = it.q_head(w);
        CHECK(h / G == it.kv_head(w) && b < s.batch && h < s.heads_q, "%s: item (%lld, %lld)",
              where.c_str(), static_cast<long long>(b), static_cast<long long>(h));
        CHECK(seen.insert({x / plan.head_groups, b, h}).second, "%s: item twice",
              where.c_str());
      }
    }
  }
  // Whole tiles among the first `columns` columns hold every (batch, query head).
  const int64_t whole = columns / plan.head_groups;
  int64_t in_whole = 0;
  for (const auto& e : seen) in_whole += std::get<0>(e) < whole;
  CHECK(in_whole == whole * int64_t(s.batch) * s.heads_q, "%s: %lld items in %lld tiles",
        where.c_str(), static_cast<long long>(in_whole), static_cast<long long>(whole));
  // Streams: every chunk count a CTA can have, at every item count it can have.
  const int max_items = plan.units_per_cta * plan.heads_per_cta;
  for (int n = 1; n <= plan.max_chunks; ++n) {
    for (int items = 1; items <= max_items; ++items) {
      if (plan.heads_per_cta > 1 && items != plan.heads_per_cta) continue;
      check_stream(make_chunk_stream(n, items, plan.ring_slots, plan.heads_per_cta > 1),
                   plan.ring_slots, where + " stream n=" + std::to_string(n) +
                                        " items=" + std::to_string(items));
    }
  }
}

// The ring's cp.async groups (halo_plan.h stream_pending), simulated: a key list of n chunks
// through `ring` slots; chunk c must be complete at step c's wait with stream_pending(c,
// ring) groups allowed pending, and the slot it loads into must have been read last at a
// step before the one issuing it.
static void check_stream_waits() {
  for (int ring = 1; ring <= 8; ++ring) {
    for (int n = 1; n <= 24; ++n) {
      if (ring < 2 && n > 1) continue;  // the plan gives a ring of 2 for 2 chunks or more
      std::vector<int> group(size_t(n), -1), issued(size_t(n), -2);
      int committed = 0;
      for (int c = 0; c < ring; ++c) {
        if (c < n) group[size_t(c)] = committed, issued[size_t(c)] = -1;
        ++committed;
      }
      std::vector<int> last_read(size_t(ring), -1);
      for (int c = 0; c < n; ++c) {
        const int pending = stream_pending(c, ring);
        CHECK(pending >= 0 && issued[size_t(c)] >= -1 && issued[size_t(c)] < c &&
                  group[size_t(c)] <= committed - pending - 1,
              "ring %d, %d chunks: chunk %d (group %d) may be pending at its step (%d "
              "committed, %d allowed pending)", ring, n, c, group[size_t(c)], committed,
              pending);
        const int r = c - 1 + ring;  // the refill after the step's barrier
        if (c > 0 && r < n) {
          CHECK(last_read[size_t(r % ring)] < c, "ring %d: slot of chunk %d still read", ring,
                r);
          group[size_t(r)] = committed;
          issued[size_t(r)] = c;
        }
        ++committed;
        last_read[size_t(c % ring)] = c;
      }
    }
  }
}

static void check_problem(const Problem& pr, int max_ring, int hook) {
  const FwdParams fp = make_params(pr);
  const ProblemShape& s = fp.shape;
  const std::string where = dims_str(pr);
  Plan plan;
  const std::string why = plan_call(fp, kBlockM, kChunk, max_ring, hook, &plan);
  CHECK(why == unsupported_reason(fp, kBlockM, kChunk), "%s: admission differs by ring",
        where.c_str());

  // Admission against the brute-force halos.
  int64_t tokens = 1;
  bool side_ok = true;
  for (int d = 0; d < kMaxRank; ++d) {
    const int e = brute_max_extent(s.dims[d], pr.q[d]);
    tokens *= e;
    side_ok = side_ok && e <= kMaxHaloSide;
    if (why.empty()) CHECK(plan.max_extent[d] == e, "%s: dim %d extent %d, brute %d",
                           where.c_str(), d, plan.max_extent[d], e);
  }
  const bool serves = side_ok && tokens <= kMaxHaloTokens;
  CHECK(serves == why.empty(), "%s: brute force %s (halo %lld), plan_call says '%s'",
        where.c_str(), serves ? "serves" : "refuses", static_cast<long long>(tokens),
        why.c_str());
  if (!why.empty()) {
    CHECK(why.find("halo") != std::string::npos, "%s: reason '%s' names no halo", where.c_str(),
          why.c_str());
    return;
  }

  // The plan.
  const int G = s.heads_q / s.heads_kv;
  CHECK(plan.max_halo_tokens == tokens, "%s", where.c_str());
  CHECK(plan.max_chunks == ceil_div(int(tokens) + s.num_extra, kChunk), "%s", where.c_str());
  CHECK(plan.ring_slots >= 2 || plan.max_chunks == 1, "%s: ring %d", where.c_str(),
        plan.ring_slots);
  CHECK(plan.ring_slots <= max_ring && plan.ring_slots <= plan.max_chunks, "%s", where.c_str());
  CHECK(plan.resident == (plan.max_chunks <= plan.ring_slots), "%s", where.c_str());
  CHECK(plan.group == G && G % plan.heads_per_cta == 0 &&
            plan.head_groups * plan.heads_per_cta == G,
        "%s: hpc %d", where.c_str(), plan.heads_per_cta);
  CHECK(plan.heads_per_cta == 1 || plan.resident, "%s: shared halo not resident", where.c_str());
  if (hook > 0 && plan.resident) {
    int want = 1;
    for (int c = 1; c <= std::min(hook, G); ++c)
      if (G % c == 0) want = c;
    CHECK(plan.heads_per_cta == want, "%s: hook %d, hpc %d", where.c_str(), hook,
          plan.heads_per_cta);
  }

  const int rings_multi[] = {0, 2, 4, 8};
  for (int m : rings_multi) {
    if (m > max_ring) continue;
    check_units(fp, plan, m, 0, where + " multi-ring " + std::to_string(m));
    check_units(fp, plan, m, 1 + int(pr.batch % 5), where + " units-hook");
  }

  // Grid and heads: every (query head, Q tile) once.
  const sm80::TileGrid grid = sm80::q_tile_grid(s, fp.tiles.q);
  CHECK(grid.total() == plan.num_q_tiles, "%s", where.c_str());
  std::set<std::pair<int64_t, int>> items;
  for (int64_t x = 0; x < plan.num_q_tiles * plan.head_groups; ++x) {
    for (int hkv = 0; hkv < s.heads_kv; ++hkv) {
      const int head0 = hkv * G + int(x % plan.head_groups) * plan.heads_per_cta;
      for (int i = 0; i < plan.heads_per_cta; ++i) {
        const int h = head0 + i;
        CHECK(h / G == hkv, "%s: head %d of KV head %d", where.c_str(), h, hkv);
        CHECK(items.insert({x / plan.head_groups, h}).second, "%s: item twice", where.c_str());
      }
    }
  }
  CHECK(int64_t(items.size()) == plan.num_q_tiles * s.heads_q, "%s", where.c_str());

  // Per Q tile: rows, halo, gathers, masks.
  const int64_t n_tokens = s.tokens();
  std::vector<int> covered(size_t(n_tokens), 0);
  for (int64_t t = 0; t < plan.num_q_tiles; ++t) {
    DimTile q[kMaxRank];
    for (int d = 0; d < kMaxRank; ++d)
      q[d] = q_tile_dim(int(t), grid.tiles, grid.tiling[d], s, d, fp.tiles);
    const HaloBox h = halo_box(q, s);
    const int H = h.tokens();
    const int num_keys = H + s.num_extra;
    const int num_chunks = ceil_div(num_keys, kChunk);
    for (int d = 0; d < kMaxRank; ++d) {
      CHECK(h.extent[d] >= 1 && h.extent[d] <= plan.max_extent[d], "%s", where.c_str());
      CHECK(h.origin[d] >= 0 && h.origin[d] + h.extent[d] <= q[d].group_len,
            "%s: halo leaves the group", where.c_str());
    }
    CHECK(H <= plan.max_halo_tokens && num_chunks <= plan.max_chunks, "%s", where.c_str());
    if (plan.resident) CHECK(num_chunks <= plan.ring_slots, "%s", where.c_str());

    // Halo tokens: distinct keys of the groups, gather offsets.
    std::vector<uint32_t> codes(static_cast<size_t>(H));
    std::vector<int64_t> key_flat(static_cast<size_t>(H));
    std::set<int64_t> distinct;
    const int64_t origin_off = halo_origin_offset(q, h, s, fp.k_strides.spatial);
    for (int j = 0; j < H; ++j) {
      codes[j] = halo_code(j, h.extent);
      int64_t flat = 0, off = 0;
      for (int d = 0; d < kMaxRank; ++d) {
        const int y = sm80::code_field(codes[j], d);
        CHECK(y < h.extent[d], "%s: code field", where.c_str());
        const int c = q[d].group + s.dims[d].dilation * (h.origin[d] + y);
        CHECK(c >= 0 && c < s.dims[d].length && c % s.dims[d].dilation == q[d].group,
              "%s: key coordinate %d along dim %d", where.c_str(), c, d);
        flat = flat * s.dims[d].length + c;
        off += int64_t(c) * fp.k_strides.spatial[d];
      }
      key_flat[j] = flat;
      CHECK(distinct.insert(flat).second, "%s: halo token %d twice", where.c_str(), j);
      CHECK(origin_off + halo_token_delta(codes[j], s, fp.k_strides.spatial) == off,
            "%s: gather offset of halo token %d", where.c_str(), j);
    }

    const sm80::TileRows q_rows = sm80::tile_rows(q, s);
    int box[kMaxRank];
    for (int d = 0; d < kMaxRank; ++d) box[d] = fp.tiles.q[d];
    for (int r = 0; r < kBlockM; ++r) {
      const uint32_t qcode = sm80::box_code(r, box);
      int64_t qoff = 0;
      const bool exists = sm80::row_offset(q_rows, qcode, fp.k_strides.spatial, &qoff);
      int qc[kMaxRank];
      bool in_group = true;
      int64_t qflat = 0;
      for (int d = 0; d < kMaxRank; ++d) {
        const int ii = q[d].begin + sm80::code_field(qcode, d);
        in_group = in_group && ii < q[d].group_len;
        qc[d] = q[d].group + s.dims[d].dilation * ii;
        qflat = qflat * s.dims[d].length + qc[d];
      }
      CHECK(exists == in_group, "%s: row %d existence", where.c_str(), r);
      int wb[kMaxRank], we[kMaxRank];
      sm80::query_row_window(qcode, q, s, wb, we);
      const BoxInterval iv = row_interval(wb, we, h);
      const Range span = row_key_span(wb, we, h);
      CHECK(span.begin >= 0 && span.begin < span.end && span.end <= H,
            "%s: row %d key span [%d, %d) outside the halo's %d tokens", where.c_str(), r,
            span.begin, span.end, H);
      std::set<int64_t> admitted;
      int extras = 0;
      for (int j = 0; j < num_chunks * kChunk; ++j) {
        const uint32_t code = j < H ? codes[j] : 0u;
        if (!key_visible(iv, j, H, num_keys, code)) continue;
        CHECK(j < num_keys, "%s: padding key %d visible", where.c_str(), j);
        CHECK(j >= H || (j >= span.begin && j < span.end),
              "%s: row %d sees halo key %d outside its span [%d, %d)", where.c_str(), r, j,
              span.begin, span.end);
        if (j < H) {
          CHECK(admitted.insert(key_flat[j]).second, "%s", where.c_str());
        } else {
          ++extras;
        }
      }
      if (!exists) {
        CHECK(!admitted.empty(), "%s: row %d past the group sees no key", where.c_str(), r);
        continue;
      }
      ++covered[size_t(qflat)];
      CHECK(extras == s.num_extra, "%s: row %d sees %d of %d additional tokens", where.c_str(),
            r, extras, s.num_extra);
      // Its window lies in the halo, and the admitted keys are the neighbourhood.
      std::set<int64_t> spec;
      std::vector<int> keys[kMaxRank];
      for (int d = 0; d < kMaxRank; ++d) {
        const Range w = window(qc[d], s.dims[d]);
        CHECK(w.begin >= h.origin[d] && w.end <= h.origin[d] + h.extent[d],
              "%s: window [%d, %d) of row %d outside the halo [%d, %d) along dim %d",
              where.c_str(), w.begin, w.end, r, h.origin[d], h.origin[d] + h.extent[d], d);
        for (int c = 0; c < s.dims[d].length; ++c)
          if (spec_sees(qc[d], c, s.dims[d])) keys[d].push_back(c);
      }
      for (int a : keys[0])
        for (int b : keys[1])
          for (int c : keys[2])
            spec.insert((int64_t(a) * s.dims[1].length + b) * s.dims[2].length + c);
      CHECK(admitted == spec, "%s: row %d admits %zu keys, the neighbourhood has %zu",
            where.c_str(), r, admitted.size(), spec.size());
    }
  }
  // Every query of the computed range in exactly one existing row.
  for (int64_t f = 0; f < n_tokens; ++f) {
    int c[kMaxRank];
    int64_t rest = f;
    for (int d = kMaxRank - 1; d >= 0; --d) {
      c[d] = int(rest % s.dims[d].length);
      rest /= s.dims[d].length;
    }
    bool in_range = true;
    for (int d = 0; d < kMaxRank; ++d)
      in_range = in_range && c[d] >= s.query_begin[d] && c[d] < s.query_end[d];
    if (in_range) CHECK(covered[size_t(f)] == 1, "%s: query %lld in %d rows", where.c_str(),
                        static_cast<long long>(f), covered[size_t(f)]);
    else CHECK(covered[size_t(f)] <= 1, "%s", where.c_str());
  }
}

static void random_box(std::mt19937& rng, int rank, int* q) {
  for (int d = 0; d < kMaxRank; ++d) q[d] = 1;
  for (int b = 0; b < 6; ++b) q[kMaxRank - rank + int(rng() % unsigned(rank))] *= 2;
}

static Problem random_problem(std::mt19937& rng) {
  Problem pr{};
  pr.rank = 1 + int(rng() % 3);
  const int max_len = pr.rank == 1 ? 400 : (pr.rank == 2 ? 40 : 14);
  for (int d = 0; d < kMaxRank; ++d) {
    pr.dims[d] = DimParams{};
    pr.qbegin[d] = 0;
    pr.qend[d] = 1;
  }
  for (int d = kMaxRank - pr.rank; d < kMaxRank; ++d) {
    DimParams& p = pr.dims[d];
    p.length = 2 + int(rng() % unsigned(max_len - 1));
    // Windows of the halo regime (2..13) mostly, now and then any that fits.
    p.kernel_size = rng() % 5 == 0 ? 2 + int(rng() % unsigned(p.length - 1))
                                   : 2 + int(rng() % 12);
    p.kernel_size = std::min(p.kernel_size, p.length);
    const int max_dil = p.length / p.kernel_size;  // DiNAT: up to length / kernel_size
    p.dilation = rng() % 3 == 0 ? 1 + int(rng() % unsigned(max_dil)) : 1;
    p.stride = rng() % 3 == 0 ? 1 + int(rng() % unsigned(p.kernel_size)) : 1;
    p.causal = rng() % 4 == 0;
    pr.qbegin[d] = 0;
    pr.qend[d] = p.length;
    if (rng() % 3 == 0) {
      pr.qbegin[d] = int(rng() % unsigned(p.length));
      pr.qend[d] = pr.qbegin[d] + 1 + int(rng() % unsigned(p.length - pr.qbegin[d]));
    }
  }
  random_box(rng, pr.rank, pr.q);
  pr.batch = 1 + int(rng() % 2);
  pr.hkv = 1 + int(rng() % 2);
  pr.hq = pr.hkv * (1 + int(rng() % 4));
  pr.extra = rng() % 3 == 0 ? int(rng() % 100) : 0;
  const int sms[] = {1, 4, 132};
  pr.num_sms = sms[rng() % 3];
  return pr;
}

// Hand-written problems of the halo regime, each served with the expected halo.
static void check_known() {
  struct Known {
    int rank;
    int L[3], k[3], dil[3], q[3];
    int max_halo;  // expected largest halo tokens; 0: refused
  };
  const Known known[] = {
      {2, {56, 56}, {7, 7}, {1, 1}, {8, 8}, 14 * 14},
      {2, {56, 56}, {13, 13}, {1, 1}, {8, 8}, 20 * 20},
      {2, {56, 56}, {7, 7}, {4, 4}, {8, 8}, 11 * 11},   // groups of 14: hulls 11 and 9
      {2, {56, 56}, {7, 7}, {8, 8}, {8, 8}, 7 * 7},     // dilation 56 / 7: groups of 7
      {3, {16, 16, 16}, {3, 3, 3}, {1, 1, 1}, {4, 4, 4}, 6 * 6 * 6},
      {3, {16, 32, 32}, {7, 7, 7}, {1, 1, 1}, {4, 4, 4}, 0},    // 1000 keys
      {2, {64, 64}, {31, 31}, {1, 1}, {8, 8}, 0},               // 38 x 38 keys
      {1, {4096}, {13}, {1}, {64}, 64 + 12},
      {1, {4096}, {300}, {1}, {64}, 0},                          // 363 > 256 along the dim
  };
  for (const Known& kn : known) {
    Problem pr{};
    pr.rank = kn.rank;
    for (int d = 0; d < kMaxRank; ++d) {
      pr.dims[d] = DimParams{};
      pr.q[d] = 1;
      pr.qbegin[d] = 0;
      pr.qend[d] = 1;
    }
    for (int a = 0; a < kn.rank; ++a) {
      const int d = kMaxRank - kn.rank + a;
      pr.dims[d] = DimParams{kn.L[a], kn.k[a], 1, kn.dil[a], false};
      pr.q[d] = kn.q[a];
      pr.qend[d] = kn.L[a];
    }
    pr.batch = 1;
    pr.hq = pr.hkv = 1;
    pr.num_sms = 132;
    Plan plan;
    const std::string why = plan_call(make_params(pr), kBlockM, kChunk, 4, 0, &plan);
    CHECK(why.empty() == (kn.max_halo > 0), "%s: '%s'", dims_str(pr).c_str(), why.c_str());
    if (why.empty()) CHECK(plan.max_halo_tokens == kn.max_halo, "%s: %d", dims_str(pr).c_str(),
                           plan.max_halo_tokens);
  }
}

// ---- Backward: the dK/dV kernel's KV boxes and inverse halos --------------------------------

// Brute force: along one dim, the largest hull of the queries that see a key of one KV box
// (all groups, all boxes of `tile` keys), from per-query windows.
static int brute_max_inverse_extent(const DimParams& p, int tile) {
  int best = 0;
  for (int g = 0; g < p.dilation; ++g) {
    const int lg = group_length(g, p.length, p.dilation);
    for (int k0 = 0; k0 < lg; k0 += tile) {
      int lo = 1 << 30, hi = -1;
      for (int ii = 0; ii < lg; ++ii) {
        const Range w = window(g + p.dilation * ii, p);
        if (w.begin < std::min(k0 + tile, lg) && w.end > k0) {
          lo = std::min(lo, ii);
          hi = std::max(hi, ii + 1);
        }
      }
      if (hi > lo) best = std::max(best, hi - lo);
    }
  }
  return best;
}

// Coordinates of box row `code` of a tile; whether the row exists.
static bool row_coords(const sm80::TileRows& rows, uint32_t code, int c[kMaxRank]) {
  for (int d = 0; d < kMaxRank; ++d) c[d] = rows.base[d] + rows.step[d] * sm80::code_field(code, d);
  return sm80::in_box_interval(code, code | sm80::kCodeGuard, rows.valid);
}

static int64_t token_index(const ProblemShape& s, const int c[kMaxRank]) {
  return (int64_t(c[0]) * s.dims[1].length + c[1]) * s.dims[2].length + c[2];
}

// For the problem with KV boxes `kv_box`: plan_bwd_call's admission against the brute-force
// inverse halos; every key in exactly one KV box; per KV box, the query list (inverse halo
// row-major, padded to whole steps) holds only queries of the computed Q tiles, and the
// element test of the dK/dV kernel (the key's inverse window shifted into the inverse halo,
// against the query-list code) admits exactly the spec's (computed query, key) pairs: each
// key's admitted pairs number the computed queries that see it, so every such query is in
// the inverse halo.
// The dK/dV kernel's units (plan_dkv_units, cta_items over the launch grid): every (KV box,
// batch, KV head) once; its step stream (bwd_dkdv_kernel.h), simulated: step s's rows and
// its unit's K, V are complete at its wait (one group allowed pending) and loaded into
// buffers whose last reader passed a barrier.
static void check_dkv_units(const BwdParams& bp, const BwdPlan& base, const std::string& where) {
  const ProblemShape& s = bp.fwd.shape;
  const int64_t units = int64_t(s.batch) * s.heads_kv;
  for (int hook : {0, 1, 2, 3, 8}) {
    BwdPlan plan = base;
    plan_dkv_units(bp, hook, &plan);
    const int upc = plan.dkv_units_per_cta;
    CHECK(upc >= 1 && upc <= kMaxUnitsPerCta && (hook == 0 || upc == std::min<int64_t>(hook, units)),
          "%s: dK/dV units %d (hook %d)", where.c_str(), upc, hook);
    int64_t dims[3];
    CHECK(plan.dkv_grid(dims) && dims[0] == plan.num_kv_tiles, "%s: dK/dV grid", where.c_str());
    std::set<std::pair<int64_t, int64_t>> seen;  // (batch, KV head) of box 0
    for (int64_t ub = 0; ub < dims[1] * dims[2]; ++ub) {
      const CtaItems it = cta_items(s, 0, ub, upc, 1, 1);
      CHECK((it.units > 0) == (ub < plan.dkv_unit_blocks), "%s: dK/dV unit block", where.c_str());
      for (int w = 0; w < it.items(); ++w) {
        CHECK(seen.insert({it.batch(w), it.kv_head(w)}).second && it.batch(w) < s.batch,
              "%s: dK/dV unit twice", where.c_str());
      }
    }
    CHECK(int64_t(seen.size()) == units, "%s: dK/dV units %zu of %lld", where.c_str(),
          seen.size(), static_cast<long long>(units));
  }
  for (int U = 1; U <= 4; ++U) {
    for (int S = 1; S <= 5; ++S) {
      const int total = U * S;
      std::vector<int> group_rows(static_cast<size_t>(total)), group_kv(static_cast<size_t>(U));
      int rows_holds[2] = {-1, -1}, kv_holds[2] = {-1, -1};
      int committed = 0;
      group_rows[0] = group_kv[0] = committed++;  // prologue: unit 0's K, V, step 0's rows
      rows_holds[0] = 0;
      kv_holds[0] = 0;
      for (int st = 0; st < total; ++st) {
        const int u = st / S, it = st % S;
        if (st + 1 < total) {
          // rows of step st + 1 into buffer (st + 1) % 2: its last step (st - 1) is done
          CHECK(rows_holds[(st + 1) % 2] < st, "U%d S%d: step rows overwritten", U, S);
          rows_holds[(st + 1) % 2] = st + 1;
          group_rows[size_t(st + 1)] = committed;
        }
        if (it == 0 && u + 1 < U) {
          // K, V of unit u + 1 into buffer (u + 1) % 2: its unit (u - 1) has stored its output
          CHECK(kv_holds[(u + 1) % 2] < u, "U%d S%d: K/V buffer overwritten", U, S);
          kv_holds[(u + 1) % 2] = u + 1;
          group_kv[size_t(u + 1)] = committed;
        }
        ++committed;
        // wait<1>: groups 0 .. committed - 2 done.
        CHECK(group_rows[size_t(st)] <= committed - 2 && group_kv[size_t(u)] <= committed - 2 &&
                  rows_holds[st % 2] == st && kv_holds[u % 2] == u,
              "U%d S%d: step %d's loads not landed", U, S, st);
      }
    }
  }
}

static void check_backward(const Problem& pr, const int kv_box[kMaxRank]) {
  BwdParams bp;
  bp.fwd = make_params(pr);
  for (int d = 0; d < kMaxRank; ++d) bp.fwd.tiles.kv[d] = kv_box[d];
  const ProblemShape& s = bp.fwd.shape;
  std::string where = dims_str(pr);
  where += format(" kv %dx%dx%d", kv_box[0], kv_box[1], kv_box[2]);
  BwdPlan plan;
  const std::string why = plan_bwd_call(bp, kBlockM, kChunk, 4, 0, &plan);
  CHECK(why == bwd_unsupported_reason(bp, kBlockM, kChunk), "%s: admission differs by ring",
        where.c_str());
  if (s.num_extra > 0) {
    CHECK(why.find("additional") != std::string::npos, "%s: '%s'", where.c_str(), why.c_str());
    return;
  }
  const std::string fwd_why = unsupported_reason(bp.fwd, kBlockM, kChunk);
  int64_t tokens = 1;
  bool side_ok = true;
  int brute[kMaxRank];
  for (int d = 0; d < kMaxRank; ++d) {
    brute[d] = brute_max_inverse_extent(s.dims[d], kv_box[d]);
    tokens *= brute[d];
    side_ok = side_ok && brute[d] <= kMaxHaloSide;
  }
  const bool serves = fwd_why.empty() && side_ok && tokens <= kMaxHaloTokens;
  CHECK(serves == why.empty(), "%s: brute force %s (inverse halo %lld), plan_bwd_call '%s'",
        where.c_str(), serves ? "serves" : "refuses", static_cast<long long>(tokens),
        why.c_str());
  if (!why.empty()) return;
  check_dkv_units(bp, plan, where);
  for (int d = 0; d < kMaxRank; ++d)
    CHECK(plan.max_inv_extent[d] == brute[d], "%s: dim %d inverse extent %d, brute %d",
          where.c_str(), d, plan.max_inv_extent[d], brute[d]);
  CHECK(plan.max_inv_tokens == tokens, "%s", where.c_str());

  // The computed queries: every existing row of the computed Q tiles (the dQ kernel's).
  const int64_t num_tokens = s.tokens();
  std::vector<char> computed(num_tokens, 0);
  const sm80::TileGrid qg = sm80::q_tile_grid(s, bp.fwd.tiles.q);
  for (int64_t x = 0; x < qg.total(); ++x) {
    DimTile qt[kMaxRank];
    sm80::decode_tile(x, qg, s, bp.fwd.tiles.q, true, qt);
    const sm80::TileRows rows = sm80::tile_rows(qt, s);
    for (int r = 0; r < kBlockM; ++r) {
      int c[kMaxRank];
      if (row_coords(rows, sm80::box_code(r, bp.fwd.tiles.q), c)) computed[token_index(s, c)] = 1;
    }
  }
  // Per key: the computed queries that see it (spec, window.h per query).
  std::vector<int> seen_by(num_tokens, 0);
  for (int64_t i = 0; i < num_tokens; ++i) {
    if (!computed[i]) continue;
    const int qc[kMaxRank] = {int(i / (int64_t(s.dims[1].length) * s.dims[2].length)),
                              int(i / s.dims[2].length % s.dims[1].length),
                              int(i % s.dims[2].length)};
    Range w[kMaxRank];
    for (int d = 0; d < kMaxRank; ++d) w[d] = window(qc[d], s.dims[d]);
    for (int a = w[0].begin; a < w[0].end; ++a)
      for (int b2 = w[1].begin; b2 < w[1].end; ++b2)
        for (int c2 = w[2].begin; c2 < w[2].end; ++c2) {
          const int kc[kMaxRank] = {qc[0] % s.dims[0].dilation + s.dims[0].dilation * a,
                                    qc[1] % s.dims[1].dilation + s.dims[1].dilation * b2,
                                    qc[2] % s.dims[2].dilation + s.dims[2].dilation * c2};
          ++seen_by[token_index(s, kc)];
        }
  }

  std::vector<int> covered(num_tokens, 0);
  const sm80::TileGrid kvg = sm80::tile_grid(s, kv_box);
  CHECK(kvg.total() == plan.num_kv_tiles, "%s", where.c_str());
  for (int64_t x = 0; x < kvg.total(); ++x) {
    DimTile kv[kMaxRank];
    sm80::decode_tile(x, kvg, s, kv_box, false, kv);
    const HaloBox inv = inverse_halo_box(kv, s, bp.fwd.tiles.q);
    const int inv_tokens = inv.tokens();
    for (int d = 0; d < kMaxRank; ++d)
      CHECK(inv.extent[d] >= 0 && inv.extent[d] <= plan.max_inv_extent[d], "%s: box %lld",
            where.c_str(), static_cast<long long>(x));
    const sm80::TileRows kv_rows = sm80::tile_rows(kv, s);
    const int steps = ceil_div(inv_tokens, kBlockM);
    for (int c = 0; c < kChunk; ++c) {
      const uint32_t code = sm80::box_code(c, kv_box);
      int kc[kMaxRank];
      const bool exists = row_coords(kv_rows, code, kc);
      int b[kMaxRank], e[kMaxRank];
      sm80::key_inverse_window(code, kv, s, b, e);
      const BoxInterval iv = sm80::shifted_interval(b, e, inv.origin);
      if (exists) ++covered[token_index(s, kc)];
      int admitted = 0;
      for (int q = 0; q < steps * kBlockM; ++q) {
        const uint32_t qcode = query_list_code(q, inv_tokens, inv.extent);
        const bool in = sm80::in_box_interval(qcode, qcode | sm80::kCodeGuard, iv);
        bool expect = false;
        if (q < inv_tokens) {
          int qc[kMaxRank];
          for (int d = 0; d < kMaxRank; ++d)
            qc[d] = kv[d].group + s.dims[d].dilation * (inv.origin[d] + sm80::code_field(qcode, d));
          const bool q_ok = computed[token_index(s, qc)] != 0;
          if (c == 0) CHECK(q_ok, "%s: box %lld lists a query of no computed Q tile",
                            where.c_str(), static_cast<long long>(x));
          expect = exists && q_ok;
          for (int d = 0; d < kMaxRank; ++d) expect = expect && spec_sees(qc[d], kc[d], s.dims[d]);
        }
        CHECK(in == expect, "%s: box %lld key %d list %d: mask %d, spec %d", where.c_str(),
              static_cast<long long>(x), c, q, int(in), int(expect));
        admitted += in;
      }
      if (exists)
        CHECK(admitted == seen_by[token_index(s, kc)], "%s: key %d admits %d pairs, %d queries "
              "see it", where.c_str(), c, admitted, seen_by[token_index(s, kc)]);
    }
  }
  for (int64_t i = 0; i < num_tokens; ++i)
    CHECK(covered[i] == 1, "%s: key %lld in %d KV boxes", where.c_str(),
          static_cast<long long>(i), covered[i]);
}

// `plan RANK (L k s d causal q_side) x RANK`: the plan of one problem, for tests/test_halo.py.
static int print_plan(int argc, char** argv) {
  if (argc < 3) return 2;
  Problem pr{};
  pr.rank = std::atoi(argv[2]);
  if (pr.rank < 1 || pr.rank > 3 || argc != 3 + 6 * pr.rank) return 2;
  for (int d = 0; d < kMaxRank; ++d) {
    pr.dims[d] = DimParams{};
    pr.q[d] = 1;
    pr.qbegin[d] = 0;
    pr.qend[d] = 1;
  }
  for (int a = 0; a < pr.rank; ++a) {
    const int d = kMaxRank - pr.rank + a;
    char** v = argv + 3 + 6 * a;
    pr.dims[d] = DimParams{std::atoi(v[0]), std::atoi(v[1]), std::atoi(v[2]), std::atoi(v[3]),
                           std::atoi(v[4]) != 0};
    pr.q[d] = std::atoi(v[5]);
    pr.qend[d] = pr.dims[d].length;
  }
  pr.batch = pr.hq = pr.hkv = 1;
  pr.num_sms = 1;
  Plan plan;
  const std::string why = plan_call(make_params(pr), kBlockM, kChunk, 4, 0, &plan);
  int64_t tokens = 1;
  std::printf("extents");
  for (int d = kMaxRank - pr.rank; d < kMaxRank; ++d) {
    const int e = max_halo_extent(pr.dims[d], pr.q[d]);
    tokens *= e;
    std::printf(" %d", e);
  }
  std::printf("\ntokens %lld\nserves %d\nreason %s\n", static_cast<long long>(tokens),
              int(why.empty()), why.c_str());
  return 0;
}

int main(int argc, char** argv) {
  if (argc > 1 && std::strcmp(argv[1], "plan") == 0) return print_plan(argc, argv);
  const int iters = argc > 1 ? std::atoi(argv[1]) : 300;
  std::mt19937 rng(20240611);
  check_known();
  check_stream_waits();
  int served = 0, served_bwd = 0;
  for (int it = 0; it < iters; ++it) {
    const Problem pr = random_problem(rng);
    const int rings[] = {2, 4, 8};
    const int max_ring = rings[rng() % 3];
    const int hook = rng() % 3 == 0 ? 1 + int(rng() % 4) : 0;
    Plan plan;
    if (plan_call(make_params(pr), kBlockM, kChunk, max_ring, hook, &plan).empty()) ++served;
    check_problem(pr, max_ring, hook);
    int kv_box[kMaxRank];
    random_box(rng, pr.rank, kv_box);
    BwdParams bp;
    bp.fwd = make_params(pr);
    for (int d = 0; d < kMaxRank; ++d) bp.fwd.tiles.kv[d] = kv_box[d];
    if (bwd_unsupported_reason(bp, kBlockM, kChunk).empty()) ++served_bwd;
    check_backward(pr, kv_box);
  }
  std::printf("halo host check: %d random problems (%d served, backward %d), %d failures\n",
              iters, served, served_bwd, g_failures);
  return g_failures == 0 ? 0 : 1;
}
