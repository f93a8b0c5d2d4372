// Host-side admission of the sm90 GNA forward kernel: which FwdParams it serves, and the
// ProblemDesc it derives from them. Pure C++ (no CUDA headers), shared by the launch
// functions, sm90_fwd_unsupported_reason and the host check.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

#include "jax_gna/kernel_manifest.h"
#include "jax_gna/params.h"
#include "jax_gna/window.h"
#include "bwd_tile_map.h"
#include "tile_map.h"

namespace jax_gna {
namespace sm90 {

inline bool is_pow2(int x) { return x >= 1 && (x & (x - 1)) == 0; }

inline int ilog2(int x) {
  int l = 0;
  while ((1 << l) < x) ++l;
  return l;
}

template <class... Args>
inline std::string fmt(const char* f, Args... args) {
  char buf[512];
  std::snprintf(buf, sizeof(buf), f, args...);
  return std::string(buf);
}

// Per-thread message of the last refusal of a launch function (sm90_fwd_last_error).
inline std::string& last_error_message() {
  thread_local std::string msg;
  return msg;
}

// Largest TMA box extent and traversal stride (cuTensorMapEncodeTiled limits), as the
// kernel manifest states them for this family.
constexpr int kMaxBox = manifest::family("sm90").box_extent_limit;
constexpr int kMaxTraversalStride = manifest::family("sm90").max_dilation;

// A [B, S0, S1, S2, H, D] tensor as a TMA map reads or writes it: non-null, 16-byte aligned
// base, (heads, head_dim) contiguous, batch / token strides positive multiples of 16 bytes
// below 2^40 bytes (dims of extent 1 are free). Empty string when it fits, else the reason.
inline std::string token_layout_problem(const char* name, const void* ptr, const TokenStrides& st,
                                        int64_t esize, int head_dim, const ProblemShape& s) {
  if (ptr == nullptr) return fmt("%s pointer is null", name);
  if ((reinterpret_cast<uintptr_t>(ptr) & 15u) != 0)
    return fmt("%s base address is not 16-byte aligned", name);
  if (st.head != head_dim)
    return fmt("%s head stride %lld != head_dim %d: (heads, head_dim) must be contiguous", name,
               static_cast<long long>(st.head), head_dim);
  const int64_t strides[4] = {st.batch, st.spatial[0], st.spatial[1], st.spatial[2]};
  const int extents[4] = {s.batch, s.dims[0].length, s.dims[1].length, s.dims[2].length};
  for (int j = 0; j < 4; ++j) {
    if (extents[j] <= 1) continue;
    if (strides[j] <= 0 || (strides[j] * esize) % 16 != 0 ||
        strides[j] * esize >= (int64_t(1) << 40))
      return fmt("%s stride %lld (elements) of tensor dim %d must be positive, a multiple of "
                 "16 bytes and below 2^40 bytes", name, static_cast<long long>(strides[j]), j);
  }
  return std::string();
}

// Checks the problem, tiles and the q, k, v, out, lse, extra layouts of params against what
// an sm90 kernel of (head_dim, q_tile_tokens, kv_tile_tokens) reads through its TMA maps; on
// success fills *out and returns true, otherwise writes the reason, prefixed with `kernel`,
// to *why. The forward and the backward share it (the backward adds its own tensors).
inline bool admit_tiles(const FwdParams& fp, const char* kernel, int head_dim,
                        int q_tile_tokens, int kv_tile_tokens, ProblemDesc* out,
                        std::string* why) {
  const ProblemShape& s = fp.shape;
  auto fail = [&](std::string m) {
    *why = std::string(kernel) + ": " + m;
    return false;
  };
  if (fp.dtype != DType::kBFloat16 && fp.dtype != DType::kFloat16)
    return fail("dtype must be bfloat16 or float16 (float32 goes to sm80)");
  if (s.head_dim != head_dim || s.head_dim_v != head_dim)
    return fail(fmt("head_dim=%d head_dim_v=%d: this instantiation serves %d for both",
                    s.head_dim, s.head_dim_v, head_dim));
  if (s.batch < 0 || s.heads_q < 1 || s.heads_kv < 1 || s.heads_q % s.heads_kv != 0)
    return fail(fmt("batch=%d heads_q=%d heads_kv=%d: need heads_q %% heads_kv == 0", s.batch,
                    s.heads_q, s.heads_kv));
  if (!(fp.scale > 0.f) || fp.scale > 3.0e38f)
    return fail(fmt("scale=%g must be positive and finite", static_cast<double>(fp.scale)));
  if (s.num_extra < 0) return fail(fmt("num_extra=%d < 0", s.num_extra));

  int q_prod = 1, kv_prod = 1;
  for (int i = 0; i < kMaxRank; ++i) {
    const DimParams& d = s.dims[i];
    const int q = fp.tiles.q[i], kv = fp.tiles.kv[i];
    if (d.length < 1 || d.kernel_size < 1 || d.dilation < 1 || d.stride < 1 ||
        d.stride > d.kernel_size || static_cast<int64_t>(d.kernel_size) * d.dilation > d.length)
      return fail(fmt("invalid GNA parameters along padded dim %d (L=%d k=%d s=%d d=%d)", i,
                      d.length, d.kernel_size, d.stride, d.dilation));
    if (!is_pow2(q) || !is_pow2(kv))
      return fail(fmt("tile extents must be powers of two: q[%d]=%d kv[%d]=%d", i, q, i, kv));
    if (d.dilation > kMaxTraversalStride)
      return fail(fmt("dilation[%d]=%d > %d (TMA traversal stride limit)", i, d.dilation,
                      kMaxTraversalStride));
    if (q * d.dilation > kMaxBox || kv * d.dilation > kMaxBox)
      return fail(fmt("tile extent x dilation along dim %d exceeds the TMA box limit %d: "
                      "q=%d kv=%d dilation=%d", i, kMaxBox, q, kv, d.dilation));
    q_prod *= q;
    kv_prod *= kv;
  }
  if (q_prod != q_tile_tokens)
    return fail(fmt("Q tile must hold %d tokens; got %dx%dx%d", q_tile_tokens, fp.tiles.q[0],
                    fp.tiles.q[1], fp.tiles.q[2]));
  if (kv_prod != kv_tile_tokens)
    return fail(fmt("KV tile must hold %d tokens for head_dim %d; got %dx%dx%d", kv_tile_tokens,
                    head_dim, fp.tiles.kv[0], fp.tiles.kv[1], fp.tiles.kv[2]));

  // Layouts: TMA needs 16-byte aligned bases and strides; (head, head_dim) must be
  // contiguous in q, k, v (one TMA dim of extent H * D selects the head).
  const struct {
    const char* name;
    const void* ptr;
    const TokenStrides* st;
  } tok[3] = {{"query", fp.q, &fp.q_strides}, {"key", fp.k, &fp.k_strides},
              {"value", fp.v, &fp.v_strides}};
  for (const auto& t : tok) {
    const std::string bad = token_layout_problem(t.name, t.ptr, *t.st, 2, head_dim, s);
    if (!bad.empty()) return fail(bad);
  }
  auto aligned16 = [](const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; };
  const int64_t esize = 2;
  if (static_cast<int64_t>(s.heads_q) * head_dim >= (int64_t(1) << 31))
    return fail("heads x head_dim must stay below 2^31");
  if (fp.out == nullptr) return fail("output pointer is null");
  {
    const TokenStrides& o = fp.out_strides;
    if (!aligned16(fp.out) ||
        ((o.batch | o.spatial[0] | o.spatial[1] | o.spatial[2] | o.head) & 7) != 0)
      return fail("output base must be 16-byte aligned and its strides multiples of 8 "
                  "elements (16-byte row chunks, TMA stores)");
    if (o.head != head_dim)
      return fail(fmt("output head stride %lld != head_dim %d: (heads, head_dim) must be "
                      "contiguous (TMA stores)", static_cast<long long>(o.head), head_dim));
  }
  if (fp.lse != nullptr && (reinterpret_cast<uintptr_t>(fp.lse) & 3u) != 0)
    return fail("lse base must be 4-byte aligned");
  if (s.num_extra > 0) {
    const struct {
      const char* name;
      const void* ptr;
      const ExtraStrides* st;
    } ex[2] = {{"additional_keys", fp.extra_k, &fp.extra_k_strides},
               {"additional_values", fp.extra_v, &fp.extra_v_strides}};
    for (const auto& e : ex) {
      if (e.ptr == nullptr) return fail(fmt("%s pointer is null", e.name));
      if (!aligned16(e.ptr)) return fail(fmt("%s base address is not 16-byte aligned", e.name));
      if (e.st->head != head_dim)
        return fail(fmt("%s head stride %lld != head_dim %d", e.name,
                        static_cast<long long>(e.st->head), head_dim));
      const int64_t strides[2] = {e.st->batch, e.st->token};
      const int extents[2] = {s.batch, s.num_extra};
      for (int j = 0; j < 2; ++j) {
        if (extents[j] <= 1) continue;
        if (strides[j] <= 0 || (strides[j] * esize) % 16 != 0 ||
            strides[j] * esize >= (int64_t(1) << 40))
          return fail(fmt("%s stride %lld of dim %d must be a positive multiple of 8", e.name,
                          static_cast<long long>(strides[j]), j));
      }
    }
  }

  // Problem description.
  ProblemDesc p{};
  int64_t num_q_tiles = 1;
  for (int i = 0; i < kMaxRank; ++i) {
    const DimParams& d = s.dims[i];
    DimDesc& dd = p.dim[i];
    dd.length = d.length;
    dd.kernel = d.kernel_size;
    dd.stride = d.stride;
    dd.dilation = d.dilation;
    dd.causal = d.causal ? 1 : 0;
    dd.q_tile = fp.tiles.q[i];
    dd.kv_tile = fp.tiles.kv[i];
    dd.q_log2 = ilog2(dd.q_tile);
    dd.kv_log2 = ilog2(dd.kv_tile);
    dd.q_tiling = query_tiling(s, i, dd.q_tile);
    num_q_tiles *= dd.q_tiling.num_tiles;
  }
  p.batch = s.batch;
  p.heads_q = s.heads_q;
  p.heads_kv = s.heads_kv;
  p.q_per_kv = s.heads_q / s.heads_kv;
  const int64_t total = num_q_tiles * s.heads_q * static_cast<int64_t>(s.batch);
  if (total >= (int64_t(1) << 31)) return fail("more than 2^31 work items");
  p.num_q_tiles = static_cast<int>(num_q_tiles);
  p.total_work = static_cast<int>(total);
  p.num_extra = s.num_extra;
  p.num_extra_tiles = (s.num_extra + kv_tile_tokens - 1) / kv_tile_tokens;
  p.kv_tile_tokens = kv_tile_tokens;
  p.tab_entries = kv_column_box(p).entries;
  *out = p;
  return true;
}

// The forward kernel of (head_dim, q_tile_tokens, kv_tile_tokens).
inline bool admit_fwd(const FwdParams& fp, int head_dim, int q_tile_tokens, int kv_tile_tokens,
                      ProblemDesc* out, std::string* why) {
  return admit_tiles(fp, "sm90 forward", head_dim, q_tile_tokens, kv_tile_tokens, out, why);
}

// The backward: what admit_tiles checks for the forward's tensors, plus dO, dK, dV and the
// fp32 dq_accum (TMA maps too: 16-byte aligned, (heads, head_dim) contiguous, strides of
// 16-byte multiples), and what this kernel does not compute.
inline bool admit_bwd(const BwdParams& bp, int head_dim, int q_tile_tokens, int kv_tile_tokens,
                      BwdDesc* out, std::string* why) {
  const FwdParams& fp = bp.fwd;
  const ProblemShape& s = fp.shape;
  auto fail = [&](std::string m) {
    *why = "sm90 backward: " + m;
    return false;
  };
  // What this kernel leaves to the sm80 backward, which the FFI handler launches first
  // (BwdParams::parts, params.h): the additional tokens, and with deterministic=True dQ (it
  // adds dQ with TMA reductions in arrival order; the sm80 Q-tile-major dQ kernel has a fixed
  // order).
  if (s.num_extra > 0 && bp.parts.extra_tokens)
    return fail(fmt("additional keys/values (num_extra=%d): their part is the sm80 "
                    "backward's (parts.extra_tokens must be off)", s.num_extra));
  if (bp.deterministic && bp.parts.dq_final)
    return fail("deterministic=True: dQ is the sm80 backward's Q-tile-major kernel "
                "(parts.dq_final must be off)");
  if (!bp.parts.spatial_tiles) return fail("parts.spatial_tiles is off: nothing to compute");
  const bool compute_dq = !bp.deterministic;
  BwdDesc d{};
  if (!admit_tiles(fp, "sm90 backward", head_dim, q_tile_tokens, kv_tile_tokens, &d.prob, why))
    return false;
  const struct {
    const char* name;
    const void* ptr;
    const TokenStrides* st;
    int64_t esize;
  } tok[4] = {{"dout", bp.dout, &bp.dout_strides, 2},
              {"dk", bp.dk, &bp.dk_strides, 2},
              {"dv", bp.dv, &bp.dv_strides, 2},
              {"dq_accum", bp.dq_accum, &fp.q_strides, 4}};
  for (const auto& t : tok) {
    if (!compute_dq && t.esize == 4) continue;  // no dq_accum without dQ
    const std::string bad = token_layout_problem(t.name, t.ptr, *t.st, t.esize, head_dim, s);
    if (!bad.empty()) return fail(bad);
  }
  if (fp.lse == nullptr || bp.delta == nullptr) return fail("lse or delta pointer is null");
  int64_t kv_tiles = 1;
  for (int i = 0; i < kMaxRank; ++i) {
    d.kv_tiling[i] = group_tiling(s.dims[i].length, s.dims[i].dilation, fp.tiles.kv[i]);
    kv_tiles *= d.kv_tiling[i].num_tiles;
  }
  const int64_t total = kv_tiles * s.heads_kv * static_cast<int64_t>(s.batch);
  if (total >= (int64_t(1) << 31)) return fail("more than 2^31 KV tiles");
  const int ext[3] = {d.prob.dim[0].q_tile, d.prob.dim[1].q_tile, d.prob.dim[2].q_tile};
  const int lg[3] = {d.prob.dim[0].q_log2, d.prob.dim[1].q_log2, d.prob.dim[2].q_log2};
  d.q_cols = make_column_box(ext, lg, q_tile_tokens);
  d.num_kv_tiles = static_cast<int>(kv_tiles);
  d.total_work = static_cast<int>(total);
  *out = d;
  return true;
}

}  // namespace sm90
}  // namespace jax_gna
