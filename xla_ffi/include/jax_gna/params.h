// Problem description shared by every GNA kernel backend (sm80 portable, sm90 Hopper, later
// sm100) and the FFI handlers that fill it. Host-side plain data, passed to kernels by value.
//
// Layouts (docs/semantics.md): query [B, *spatial, Hq, D], key [B, *spatial, Hkv, D],
// value [B, *spatial, Hkv, Dv], output [B, *spatial, Hq, Dv], LSE [B, *spatial, Hq] float32,
// additional keys/values [B, E, Hkv, D|Dv]. Spatial rank 1-3 is padded to 3 (leading dims of
// length 1, kernel size 1). Strides are in elements; the head-dim axis is contiguous. All
// offsets are int64: a tensor may exceed 2^31 elements.
#pragma once

#include <cstdint>

#include "jax_gna/window.h"

namespace jax_gna {

enum class DType : int { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };

// Strides of a [B, S0, S1, S2, H, D] tensor, in elements (D has stride 1).
struct TokenStrides {
  int64_t batch = 0;
  int64_t spatial[kMaxRank] = {0, 0, 0};
  int64_t head = 0;
};

// Strides of a [B, E, H, D] additional-KV tensor, in elements.
struct ExtraStrides {
  int64_t batch = 0;
  int64_t token = 0;
  int64_t head = 0;
};

constexpr int kAllQueries = 1 << 30;  // query_end default: past any spatial length

struct ProblemShape {
  int batch = 1;
  int heads_q = 1;
  int heads_kv = 1;   // heads_q % heads_kv == 0; query head h reads KV head h / (Hq / Hkv)
  int head_dim = 0;   // D of query and key
  int head_dim_v = 0; // D of value and output
  DimParams dims[kMaxRank];
  int num_extra = 0;  // additional KV tokens seen by every query (0: none)
  // Queries to compute, per dim [query_begin, query_end) (coordinates along the dim): Q tiles
  // holding none of them are skipped (window.h group_tiling_range); rows of other queries
  // that share a computed tile are computed too, the rest of out/LSE is left unwritten (the
  // caller masks it: jax_gna/attention.py). Keys are never restricted. Default: all.
  int query_begin[kMaxRank] = {0, 0, 0};
  int query_end[kMaxRank] = {kAllQueries, kAllQueries, kAllQueries};

  int64_t tokens() const {
    return int64_t(dims[0].length) * dims[1].length * dims[2].length;
  }
};

// The Q tiles of dim d (tiles of `tile` tokens) that hold a query of the computed range.
GNA_HD GroupTiling query_tiling(const ProblemShape& s, int d, int tile) {
  return group_tiling_range(s.dims[d].length, s.dims[d].dilation, tile, s.query_begin[d],
                            s.query_end[d]);
}

// Q/KV tile boxes in tokens per spatial dim (group-local coordinates), e.g. {1, 16, 8}.
struct TileShape {
  int q[kMaxRank] = {1, 1, 1};
  int kv[kMaxRank] = {1, 1, 1};
};

struct FwdParams {
  ProblemShape shape;
  TileShape tiles;
  DType dtype = DType::kBFloat16;
  float scale = 1.f;       // softmax scale applied to Q.K
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  const void* extra_k = nullptr;  // may be null when num_extra == 0
  const void* extra_v = nullptr;
  void* out = nullptr;
  float* lse = nullptr;           // [B, *spatial, Hq]
  TokenStrides q_strides, k_strides, v_strides, out_strides;
  ExtraStrides extra_k_strides, extra_v_strides;
  TokenStrides lse_strides;       // head stride 1
  int num_sms = 0;                // of the device the stream runs on
  void* workspace = nullptr;      // kernel-specific scratch (e.g. a scheduler counter)
  int64_t workspace_bytes = 0;
};

struct BwdParams {
  FwdParams fwd;                  // q, k, v, extras, out, lse as in the forward
  const void* dout = nullptr;
  void* dq = nullptr;
  void* dk = nullptr;
  void* dv = nullptr;
  void* dextra_k = nullptr;
  void* dextra_v = nullptr;
  float* dq_accum = nullptr;      // fp32 workspace [B, *spatial, Hq, D]
  float* delta = nullptr;         // fp32 workspace rowsum(dO * O) [B, *spatial, Hq]
  TokenStrides dout_strides, dq_strides, dk_strides, dv_strides;
  ExtraStrides dextra_k_strides, dextra_v_strides;
  bool deterministic = false;     // no order dependence between atomics
  // Cotangent of the LSE output [B, *spatial, Hq] (zeros unless the caller differentiates
  // the returned LSE): dS = P * (dP - (rowsum(dO * O) - dlse)), folded into delta.
  const float* dlse = nullptr;
  // fp32 workspace [2, num_extra_splits, B, E, Hkv, D]: partial dK / dV of the additional
  // tokens, one slice per split of the Q tiles (summed in split order: deterministic).
  float* dextra_accum = nullptr;
  int num_extra_splits = 1;
  // What one launch computes (all of it by default). The FFI handler splits an sm90 call
  // with additional tokens or deterministic=True into two launches on the stream
  // (ffi_handlers.cu BwdImpl): the sm80 backward first (delta; the additional tokens' dK/dV
  // and, unless deterministic, their dQ parts into dq_accum; with deterministic=True its
  // Q-tile-major dQ kernel, which writes dq over every key), then the sm90 backward (its
  // spatial tiles' dK/dV, and unless deterministic their dQ and the dq_accum conversion).
  struct Parts {
    bool delta = true;          // the delta pass
    bool spatial_tiles = true;  // the spatial KV tiles' work
    bool extra_tokens = true;   // the additional tokens' dK/dV (partials and their sum)
    bool dq_final = true;       // dq written: the dq_accum conversion, or with
                                // deterministic=True the Q-tile-major dQ kernel
  };
  Parts parts;
};

}  // namespace jax_gna
