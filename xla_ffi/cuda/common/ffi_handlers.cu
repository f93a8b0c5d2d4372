// XLA FFI handlers of the GNA CUDA kernels: JaxGnaFwd and JaxGnaBwd (registered by
// jax_gna/_extension.py as targets "gna_fwd" / "gna_bwd" on platform CUDA), plus
// jax_gna_compiled_kernels() for the Python support table.
//
// The handlers validate everything (ranks, shapes, dtypes, window parameters, tile boxes,
// head dims, that a kernel of the requested backend is compiled), fill FwdParams/BwdParams
// (params.h) and call the registered launcher. They allocate nothing: scratch space comes in
// as extra results created by jax_gna/_cuda_lowering.py.
//
// Forward call
//   operands  q [B, *S, Hq, D], k [B, *S, Hkv, D], v [B, *S, Hkv, Dv],
//             extra_k [B, E, Hkv, D], extra_v [B, E, Hkv, Dv]   (E = 0: no extra tokens)
//   results   out [B, *S, Hq, Dv] (q's dtype), lse [B, *S, Hq] f32,
//             workspace u8 [W] (params.workspace; the sm80 kernels need none, W = 0)
// Backward call
//   operands  q, k, v, extra_k, extra_v, out, lse, dout [like out], dlse [like lse, f32]
//   results   dq, dk, dv, dextra_k, dextra_v (like q, k, v, extra_k, extra_v), then
//             dq_accum f32 [like q] (zeroed here; may be empty in deterministic mode and
//             for the halo backward, which writes dq directly),
//             delta f32 [like lse] (rowsum(dO * O) - dlse),
//             dextra_accum f32 [2, S, B, E, Hkv, D] (per-split partial dK/dV of the extra
//             tokens; S >= 1 splits of the Q tiles; empty when E = 0)
// Attributes (both): backend (string: "sm80", "sm90", "halo", ...), kernel_size, stride,
//   dilation, is_causal (int64[rank], 0/1), q_tile, kv_tile (int64[rank]: the tile boxes;
//   for the halo forward kv_tile only states its key-chunk size, for its backward it is the
//   dK/dV kernel's KV box, halo/README.md),
//   query_begin, query_end (int64[rank]: the queries to compute, [0, L) for all; params.h),
//   scale (f32); backward also deterministic (bool).
#include <cuda_runtime.h>

#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>

#include "jax_gna/kernel_manifest.h"
#include "jax_gna/params.h"
#include "jax_gna/window.h"
#include "registry.h"
#include "xla/ffi/api/ffi.h"

#if defined(JAX_GNA_BUILT_SM90A)
#include "sm90/sm90_bwd.h"  // admission rule of the Hopper backward
#include "sm90/sm90_fwd.h"  // admission rule and launch diagnostics of the Hopper kernels
#endif
#if defined(JAX_GNA_BUILT_SM80)
#include "halo/halo_plan.h"  // admission rules of the halo kernels (built with the sm80 family)
#endif

namespace ffi = ::xla::ffi;

namespace jax_gna {
namespace {

constexpr int kMaxBoxDim = manifest::kMaxTileSide;  // a tile box extent per dim

ffi::Error Invalid(const std::string& msg) {
  return ffi::Error::InvalidArgument("jax_gna: " + msg);
}

ffi::Error CudaFailure(const std::string& what, cudaError_t err) {
  return ffi::Error::Internal("jax_gna: " + what + ": " + cudaGetErrorName(err) + ": " +
                              cudaGetErrorString(err));
}

std::string DimsStr(ffi::Span<const int64_t> dims) {
  std::string s = "[";
  for (size_t i = 0; i < dims.size(); ++i) {
    if (i) s += ", ";
    s += std::to_string(dims[i]);
  }
  return s + "]";
}

const char* DTypeStr(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::F16: return "float16";
    case ffi::DataType::BF16: return "bfloat16";
    case ffi::DataType::F32: return "float32";
    case ffi::DataType::F64: return "float64";
    case ffi::DataType::U8: return "uint8";
    default: return "other";
  }
}

ffi::Error CheckDims(const char* name, const ffi::AnyBuffer& buf,
                     const std::vector<int64_t>& expected) {
  const auto dims = buf.dimensions();
  bool same = dims.size() == expected.size();
  for (size_t i = 0; same && i < expected.size(); ++i) same = dims[i] == expected[i];
  if (!same) {
    std::string want = "[";
    for (size_t i = 0; i < expected.size(); ++i) {
      if (i) want += ", ";
      want += std::to_string(expected[i]);
    }
    return Invalid(std::string(name) + " has shape " + DimsStr(dims) + ", expected " + want +
                   "]");
  }
  return ffi::Error::Success();
}

ffi::Error CheckDType(const char* name, const ffi::AnyBuffer& buf, ffi::DataType expected) {
  if (buf.element_type() != expected) {
    return Invalid(std::string(name) + " has dtype " + DTypeStr(buf.element_type()) +
                   ", expected " + DTypeStr(expected));
  }
  return ffi::Error::Success();
}

// Rows are moved in 16-byte chunks: every base pointer must be 16-byte aligned.
ffi::Error CheckAligned(const char* name, const void* ptr) {
  if (reinterpret_cast<uintptr_t>(ptr) % 16 != 0) {
    return Invalid(std::string(name) + " is not 16-byte aligned");
  }
  return ffi::Error::Success();
}

#define JAX_GNA_RETURN_IF_ERROR(expr)              \
  do {                                             \
    if (ffi::Error _err = (expr); _err.failure()) { \
      return _err;                                 \
    }                                              \
  } while (0)

// Row-major strides of a [B, *S, H, D] tensor, spatial rank padded to 3 (leading dims of
// length 1, whose stride is never used with a nonzero coordinate).
TokenStrides MakeTokenStrides(ffi::Span<const int64_t> dims, int rank, bool has_head_dim) {
  // dims: B, S_0..S_{rank-1}, H, [D]
  TokenStrides st;
  const int64_t d = has_head_dim ? dims[rank + 2] : 1;
  st.head = d;
  int64_t stride = dims[rank + 1] * d;
  for (int i = kMaxRank - 1; i >= 0; --i) {
    st.spatial[i] = stride;
    const int src = i - (kMaxRank - rank);  // spatial dim of the tensor, or < 0 for padding
    if (src >= 0) stride *= dims[1 + src];
  }
  st.batch = stride;
  return st;
}

ExtraStrides MakeExtraStrides(ffi::Span<const int64_t> dims) {  // [B, E, H, D]
  ExtraStrides st;
  st.head = dims[3];
  st.token = dims[2] * dims[3];
  st.batch = dims[1] * st.token;
  return st;
}

bool FitsInt(int64_t v) { return v >= 0 && v <= INT32_MAX; }

// The window attributes and the tile boxes -> ProblemShape::dims and TileShape (rank padded
// to 3), validated with the rules of docs/semantics.md ("Parameters").
ffi::Error ParseWindow(ffi::Span<const int64_t> q_dims, int rank,
                       ffi::Span<const int64_t> kernel_size, ffi::Span<const int64_t> stride,
                       ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> is_causal,
                       ffi::Span<const int64_t> q_tile, ffi::Span<const int64_t> kv_tile,
                       ffi::Span<const int64_t> query_begin,
                       ffi::Span<const int64_t> query_end, ProblemShape* shape,
                       TileShape* tiles) {
  const std::pair<const char*, ffi::Span<const int64_t>> attrs[] = {
      {"kernel_size", kernel_size}, {"stride", stride},  {"dilation", dilation},
      {"is_causal", is_causal},     {"q_tile", q_tile},  {"kv_tile", kv_tile},
      {"query_begin", query_begin}, {"query_end", query_end}};
  for (const auto& [name, span] : attrs) {
    if (int(span.size()) != rank) {
      return Invalid(std::string(name) + " has " + std::to_string(span.size()) +
                     " entries but the query has " + std::to_string(rank) +
                     " spatial dims (shape " + DimsStr(q_dims) + ")");
    }
  }
  const int pad = kMaxRank - rank;
  for (int i = 0; i < kMaxRank; ++i) {
    shape->dims[i] = DimParams{};
    shape->query_begin[i] = 0;
    shape->query_end[i] = 1;
    tiles->q[i] = tiles->kv[i] = 1;
  }
  for (int a = 0; a < rank; ++a) {
    const std::string at = "[" + std::to_string(a) + "]";
    const int64_t L = q_dims[1 + a], k = kernel_size[a], s = stride[a], d = dilation[a];
    if (!FitsInt(L)) return Invalid("spatial size " + std::to_string(L) + " along dim " +
                                    std::to_string(a) + " does not fit in int32");
    switch (first_broken_rule(L, k, s, d)) {
      case DimRule::kValid:
        break;
      case DimRule::kLength:
        return Invalid("spatial size " + std::to_string(L) + " along dim " +
                       std::to_string(a) + " must be >= 1");
      case DimRule::kKernelSize:
        return Invalid("kernel_size" + at + "=" + std::to_string(k) + " must be >= 2");
      case DimRule::kDilation:
        return Invalid("dilation" + at + "=" + std::to_string(d) + " must be >= 1");
      case DimRule::kWindowFits:
        return Invalid("kernel_size" + at + "=" + std::to_string(k) + " times dilation" + at +
                       "=" + std::to_string(d) + " exceeds spatial size " + std::to_string(L) +
                       " along dim " + std::to_string(a));
      case DimRule::kStride:
        return Invalid("stride" + at + "=" + std::to_string(s) +
                       " must satisfy 1 <= stride <= kernel_size (" + std::to_string(k) + ")");
    }
    if (is_causal[a] != 0 && is_causal[a] != 1) {
      return Invalid("is_causal" + at + "=" + std::to_string(is_causal[a]) + " must be 0 or 1");
    }
    for (const auto& [name, span] : {std::pair<const char*, ffi::Span<const int64_t>>{
                                         "q_tile", q_tile},
                                     {"kv_tile", kv_tile}}) {
      if (span[a] < 1 || span[a] > kMaxBoxDim) {
        return Invalid(std::string(name) + at + "=" + std::to_string(span[a]) +
                       " must be in [1, " + std::to_string(kMaxBoxDim) + "]");
      }
    }
    DimParams& p = shape->dims[pad + a];
    p.length = int(L);
    p.kernel_size = int(k);
    p.stride = int(s);
    p.dilation = int(d);
    p.causal = is_causal[a] != 0;
    if (query_begin[a] < 0 || query_end[a] > L || query_begin[a] >= query_end[a]) {
      return Invalid("query range [" + std::to_string(query_begin[a]) + ", " +
                     std::to_string(query_end[a]) + ") along dim " + std::to_string(a) +
                     " must be a non-empty part of [0, " + std::to_string(L) + ")");
    }
    shape->query_begin[pad + a] = int(query_begin[a]);
    shape->query_end[pad + a] = int(query_end[a]);
    tiles->q[pad + a] = int(q_tile[a]);
    tiles->kv[pad + a] = int(kv_tile[a]);
  }
  return ffi::Error::Success();
}

ffi::Error CheckTileTokens(const TileShape& tiles, int q_tokens, int kv_tokens,
                           const char* kernel) {
  const int q = tiles.q[0] * tiles.q[1] * tiles.q[2];
  const int kv = tiles.kv[0] * tiles.kv[1] * tiles.kv[2];
  if (q != q_tokens) {
    return Invalid("q_tile box has " + std::to_string(q) + " tokens but the " + kernel +
                   " kernel takes " + std::to_string(q_tokens) + " per Q tile");
  }
  if (kv != kv_tokens) {
    return Invalid("kv_tile box has " + std::to_string(kv) + " tokens but the " + kernel +
                   " kernel takes " + std::to_string(kv_tokens) + " per KV tile");
  }
  return ffi::Error::Success();
}

#if defined(JAX_GNA_BUILT_SM90A)
// Test hook of the sm90 forward: JAX_GNA_SM90_MAX_CTAS=n caps its persistent grid at n
// CTAs (FwdParams::num_sms), so that small test problems still give every CTA several work
// items (item-to-item hand-over: Q buffers, the epilogue overlapping the next item's first
// GEMM). Read once per process.
int Sm90CtaCap(int num_sms) {
  static const int max_ctas = [] {
    const char* e = std::getenv("JAX_GNA_SM90_MAX_CTAS");
    return e != nullptr && std::atoi(e) > 0 ? std::atoi(e) : 0;
  }();
  return max_ctas > 0 && max_ctas < num_sms ? max_ctas : num_sms;
}
#endif

// Multiprocessor count of the current device (the one XLA runs the stream on), cached.
ffi::Error NumSms(int* out) {
  static std::array<std::atomic<int>, 64> cache{};
  int device = 0;
  if (cudaError_t err = cudaGetDevice(&device); err != cudaSuccess) {
    return CudaFailure("cudaGetDevice", err);
  }
  if (device >= 0 && device < int(cache.size())) {
    if (int n = cache[device].load(std::memory_order_relaxed); n > 0) {
      *out = n;
      return ffi::Error::Success();
    }
  }
  int n = 0;
  if (cudaError_t err = cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, device);
      err != cudaSuccess) {
    return CudaFailure("cudaDeviceGetAttribute(MultiProcessorCount)", err);
  }
  if (device >= 0 && device < int(cache.size())) cache[device].store(n);
  *out = n;
  return ffi::Error::Success();
}

// Everything the two directions share: shapes of q, k, v, extras; dtypes; window; scale.
struct Common {
  int rank = 0;
  DType dtype = DType::kBFloat16;
  ffi::DataType ffi_dtype = ffi::DataType::BF16;
  ProblemShape shape;
  TileShape tiles;
  std::vector<int64_t> out_dims, lse_dims;
};

ffi::Error ParseCommon(const ffi::AnyBuffer& q, const ffi::AnyBuffer& k,
                       const ffi::AnyBuffer& v, const ffi::AnyBuffer& ek,
                       const ffi::AnyBuffer& ev, ffi::Span<const int64_t> kernel_size,
                       ffi::Span<const int64_t> stride, ffi::Span<const int64_t> dilation,
                       ffi::Span<const int64_t> is_causal, ffi::Span<const int64_t> q_tile,
                       ffi::Span<const int64_t> kv_tile,
                       ffi::Span<const int64_t> query_begin,
                       ffi::Span<const int64_t> query_end, float scale, Common* c) {
  const auto qd = q.dimensions(), kd = k.dimensions(), vd = v.dimensions();
  const auto ekd = ek.dimensions(), evd = ev.dimensions();
  const int qr = int(qd.size());
  if (qr < 4 || qr > 6) {
    return Invalid("query must be [batch, *spatial (1-3 dims), heads, head_dim]; got shape " +
                   DimsStr(qd));
  }
  c->rank = qr - 3;
  const int r = c->rank;
  if (int(kd.size()) != qr || int(vd.size()) != qr) {
    return Invalid("key " + DimsStr(kd) + " and value " + DimsStr(vd) +
                   " must have the query's rank (query " + DimsStr(qd) + ")");
  }
  for (int i = 0; i <= r; ++i) {
    if (kd[i] != qd[i] || vd[i] != qd[i]) {
      return Invalid("key " + DimsStr(kd) + " and value " + DimsStr(vd) +
                     " must match the query's batch and spatial dims (query " + DimsStr(qd) +
                     ")");
    }
  }
  const int64_t B = qd[0], Hq = qd[r + 1], D = qd[r + 2], Hkv = kd[r + 1], Dv = vd[r + 2];
  if (kd[r + 2] != D) {
    return Invalid("key head_dim " + std::to_string(kd[r + 2]) + " != query head_dim " +
                   std::to_string(D));
  }
  if (vd[r + 1] != Hkv) {
    return Invalid("value heads " + std::to_string(vd[r + 1]) + " != key heads " +
                   std::to_string(Hkv));
  }
  if (Hkv < 1 || Hq < 1 || Hq % Hkv != 0) {
    return Invalid("query heads " + std::to_string(Hq) + " must be a positive multiple of key "
                   "heads " + std::to_string(Hkv));
  }
  if (ekd.size() != 4 || evd.size() != 4) {
    return Invalid("additional keys/values must be [batch, n_extra, heads_kv, head_dim]; got " +
                   DimsStr(ekd) + " and " + DimsStr(evd));
  }
  const int64_t E = ekd[1];
  JAX_GNA_RETURN_IF_ERROR(CheckDims("additional_keys", ek, {B, E, Hkv, D}));
  JAX_GNA_RETURN_IF_ERROR(CheckDims("additional_values", ev, {B, E, Hkv, Dv}));
  for (int64_t v64 : {B, Hq, Hkv, D, Dv, E}) {
    if (!FitsInt(v64)) return Invalid("a dimension of query " + DimsStr(qd) +
                                      " or the extra tokens does not fit in int32");
  }

  c->ffi_dtype = q.element_type();
  if (c->ffi_dtype == ffi::DataType::F16) {
    c->dtype = DType::kFloat16;
  } else if (c->ffi_dtype == ffi::DataType::BF16) {
    c->dtype = DType::kBFloat16;
  } else {
    return Invalid(std::string("query dtype ") + DTypeStr(c->ffi_dtype) +
                   " has no CUDA kernel (float16 and bfloat16 only)");
  }
  JAX_GNA_RETURN_IF_ERROR(CheckDType("key", k, c->ffi_dtype));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("value", v, c->ffi_dtype));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("additional_keys", ek, c->ffi_dtype));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("additional_values", ev, c->ffi_dtype));
  if (!std::isfinite(scale) || scale <= 0.f) {
    return Invalid("scale=" + std::to_string(scale) + " must be finite and > 0 for the CUDA "
                   "kernels");
  }

  ProblemShape& s = c->shape;
  s.batch = int(B);
  s.heads_q = int(Hq);
  s.heads_kv = int(Hkv);
  s.head_dim = int(D);
  s.head_dim_v = int(Dv);
  s.num_extra = int(E);
  JAX_GNA_RETURN_IF_ERROR(ParseWindow(qd, r, kernel_size, stride, dilation, is_causal, q_tile,
                                      kv_tile, query_begin, query_end, &s, &c->tiles));
  c->out_dims.assign(qd.begin(), qd.end());
  c->out_dims.back() = Dv;
  c->lse_dims.assign(qd.begin(), qd.end() - 1);
  if (B > 65535 || Hq > 65535) {
    return Invalid("batch " + std::to_string(B) + " and query heads " + std::to_string(Hq) +
                   " must be <= 65535 (CUDA grid limits)");
  }
  return ffi::Error::Success();
}

// Q tiles over all dilation-group combinations (the forward grid's x extent).
int64_t NumTiles(const ProblemShape& s, const int tile[kMaxRank]) {
  int64_t n = 1;
  for (int d = 0; d < kMaxRank; ++d) {
    n *= group_tiling(s.dims[d].length, s.dims[d].dilation, tile[d]).num_tiles;
  }
  return n;
}

void FillFwdParams(const Common& c, const ffi::AnyBuffer& q, const ffi::AnyBuffer& k,
                   const ffi::AnyBuffer& v, const ffi::AnyBuffer& ek,
                   const ffi::AnyBuffer& ev, float scale, FwdParams* p) {
  p->shape = c.shape;
  p->tiles = c.tiles;
  p->dtype = c.dtype;
  p->scale = scale;
  p->q = q.untyped_data();
  p->k = k.untyped_data();
  p->v = v.untyped_data();
  p->extra_k = c.shape.num_extra > 0 ? ek.untyped_data() : nullptr;
  p->extra_v = c.shape.num_extra > 0 ? ev.untyped_data() : nullptr;
  p->q_strides = MakeTokenStrides(q.dimensions(), c.rank, true);
  p->k_strides = MakeTokenStrides(k.dimensions(), c.rank, true);
  p->v_strides = MakeTokenStrides(v.dimensions(), c.rank, true);
  p->out_strides = MakeTokenStrides(ffi::Span<const int64_t>(c.out_dims.data(),
                                                             c.out_dims.size()),
                                    c.rank, true);
  p->lse_strides = MakeTokenStrides(ffi::Span<const int64_t>(c.lse_dims.data(),
                                                             c.lse_dims.size()),
                                    c.rank, false);
  p->extra_k_strides = MakeExtraStrides(ek.dimensions());
  p->extra_v_strides = MakeExtraStrides(ev.dimensions());
}

ffi::Error CheckAlignedAll(std::initializer_list<std::pair<const char*, const void*>> ptrs) {
  for (const auto& [name, ptr] : ptrs) {
    if (ptr != nullptr) JAX_GNA_RETURN_IF_ERROR(CheckAligned(name, ptr));
  }
  return ffi::Error::Success();
}

ffi::Error FwdImpl(cudaStream_t stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::AnyBuffer extra_k, ffi::AnyBuffer extra_v,
                   ffi::Result<ffi::AnyBuffer> out, ffi::Result<ffi::AnyBuffer> lse,
                   ffi::Result<ffi::AnyBuffer> workspace, std::string_view backend,
                   ffi::Span<const int64_t> kernel_size, ffi::Span<const int64_t> stride,
                   ffi::Span<const int64_t> dilation, ffi::Span<const int64_t> is_causal,
                   ffi::Span<const int64_t> q_tile, ffi::Span<const int64_t> kv_tile,
                   ffi::Span<const int64_t> query_begin, ffi::Span<const int64_t> query_end,
                   float scale) {
  Common c;
  JAX_GNA_RETURN_IF_ERROR(ParseCommon(q, k, v, extra_k, extra_v, kernel_size, stride,
                                      dilation, is_causal, q_tile, kv_tile, query_begin,
                                      query_end, scale, &c));
  JAX_GNA_RETURN_IF_ERROR(CheckDims("out", *out, c.out_dims));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("out", *out, c.ffi_dtype));
  JAX_GNA_RETURN_IF_ERROR(CheckDims("lse", *lse, c.lse_dims));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("lse", *lse, ffi::DataType::F32));

  const FwdKernel* kernel =
      find_fwd(backend, c.dtype, c.shape.head_dim, c.shape.head_dim_v);
  if (kernel == nullptr) {
    return Invalid("no forward kernel for backend '" + std::string(backend) + "', dtype " +
                   dtype_name(c.dtype) + ", head_dim " + std::to_string(c.shape.head_dim) +
                   ", value head_dim " + std::to_string(c.shape.head_dim_v) +
                   " in this build; compiled:\n" + describe_compiled_kernels());
  }
  JAX_GNA_RETURN_IF_ERROR(CheckTileTokens(c.tiles, kernel->q_tile_tokens,
                                          kernel->kv_tile_tokens, kernel->key.backend));
  // Grid x = Q tiles x query heads per KV head (see sm80/fwd_launch.h).
  if (NumTiles(c.shape, c.tiles.q) * (c.shape.heads_q / c.shape.heads_kv) > INT32_MAX) {
    return Invalid("too many Q tiles for one launch; use larger q_tile boxes");
  }

  FwdParams p;
  FillFwdParams(c, q, k, v, extra_k, extra_v, scale, &p);
  p.out = out->untyped_data();
  p.lse = static_cast<float*>(lse->untyped_data());
  p.workspace = workspace->untyped_data();
  p.workspace_bytes = int64_t(workspace->size_bytes());
  JAX_GNA_RETURN_IF_ERROR(CheckAlignedAll({{"query", p.q}, {"key", p.k}, {"value", p.v},
                                           {"additional_keys", p.extra_k},
                                           {"additional_values", p.extra_v}, {"out", p.out}}));
  JAX_GNA_RETURN_IF_ERROR(NumSms(&p.num_sms));
  const bool is_sm90 = backend == "sm90";
#if defined(JAX_GNA_BUILT_SM90A)
  if (is_sm90) {
    if (const char* why = sm90_fwd_unsupported_reason(p, kernel->q_tile_tokens,
                                                      kernel->kv_tile_tokens);
        why != nullptr) {
      return Invalid(std::string("backend 'sm90' cannot serve this call: ") + why);
    }
    p.num_sms = Sm90CtaCap(p.num_sms);
  }
#endif
#if defined(JAX_GNA_BUILT_SM80)
  if (backend == "halo") {
    if (const std::string why = halo::unsupported_reason(p, kernel->q_tile_tokens,
                                                         kernel->kv_tile_tokens);
        !why.empty()) {
      return Invalid("backend 'halo' cannot serve this call: " + why);
    }
  }
#endif
  if (c.shape.batch == 0) return ffi::Error::Success();
  if (cudaError_t err = kernel->launch(p, stream); err != cudaSuccess) {
    std::string what = std::string("forward kernel (") + kernel->key.backend + ") launch";
#if defined(JAX_GNA_BUILT_SM90A)
    if (is_sm90 && err == cudaErrorInvalidValue) what += std::string(": ") + sm90_fwd_last_error();
#endif
    return CudaFailure(what, err);
  }
  (void)is_sm90;
  return ffi::Error::Success();
}

ffi::Error BwdImpl(cudaStream_t stream, ffi::AnyBuffer q, ffi::AnyBuffer k, ffi::AnyBuffer v,
                   ffi::AnyBuffer extra_k, ffi::AnyBuffer extra_v, ffi::AnyBuffer out,
                   ffi::AnyBuffer lse, ffi::AnyBuffer dout, ffi::AnyBuffer dlse,
                   ffi::Result<ffi::AnyBuffer> dq, ffi::Result<ffi::AnyBuffer> dk,
                   ffi::Result<ffi::AnyBuffer> dv, ffi::Result<ffi::AnyBuffer> dextra_k,
                   ffi::Result<ffi::AnyBuffer> dextra_v, ffi::Result<ffi::AnyBuffer> dq_accum,
                   ffi::Result<ffi::AnyBuffer> delta, ffi::Result<ffi::AnyBuffer> dextra_accum,
                   std::string_view backend, ffi::Span<const int64_t> kernel_size,
                   ffi::Span<const int64_t> stride, ffi::Span<const int64_t> dilation,
                   ffi::Span<const int64_t> is_causal, ffi::Span<const int64_t> q_tile,
                   ffi::Span<const int64_t> kv_tile, ffi::Span<const int64_t> query_begin,
                   ffi::Span<const int64_t> query_end, float scale, bool deterministic) {
  Common c;
  JAX_GNA_RETURN_IF_ERROR(ParseCommon(q, k, v, extra_k, extra_v, kernel_size, stride,
                                      dilation, is_causal, q_tile, kv_tile, query_begin,
                                      query_end, scale, &c));
  const ProblemShape& s = c.shape;
  JAX_GNA_RETURN_IF_ERROR(CheckDims("out", out, c.out_dims));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("out", out, c.ffi_dtype));
  JAX_GNA_RETURN_IF_ERROR(CheckDims("dout", dout, c.out_dims));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("dout", dout, c.ffi_dtype));
  JAX_GNA_RETURN_IF_ERROR(CheckDims("lse", lse, c.lse_dims));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("lse", lse, ffi::DataType::F32));
  JAX_GNA_RETURN_IF_ERROR(CheckDims("dlse", dlse, c.lse_dims));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("dlse", dlse, ffi::DataType::F32));
  const std::pair<const char*, std::pair<const ffi::AnyBuffer*, ffi::AnyBuffer*>> grads[] = {
      {"dq", {&q, &*dq}},           {"dk", {&k, &*dk}}, {"dv", {&v, &*dv}},
      {"dextra_k", {&extra_k, &*dextra_k}}, {"dextra_v", {&extra_v, &*dextra_v}}};
  for (const auto& [name, bufs] : grads) {
    const auto dims = bufs.first->dimensions();
    JAX_GNA_RETURN_IF_ERROR(
        CheckDims(name, *bufs.second, std::vector<int64_t>(dims.begin(), dims.end())));
    JAX_GNA_RETURN_IF_ERROR(CheckDType(name, *bufs.second, c.ffi_dtype));
  }
  JAX_GNA_RETURN_IF_ERROR(CheckDType("dq_accum", *dq_accum, ffi::DataType::F32));
  // The dQ atomics of the sm80 / sm90 backward need it unless deterministic; the halo
  // backward writes dQ directly (no atomics), so it may be empty there too.
  const bool dq_accum_used =
      (!deterministic && backend != "halo") || dq_accum->element_count() > 0;
  if (dq_accum_used) {
    const auto qd = q.dimensions();
    JAX_GNA_RETURN_IF_ERROR(
        CheckDims("dq_accum", *dq_accum, std::vector<int64_t>(qd.begin(), qd.end())));
  }
  JAX_GNA_RETURN_IF_ERROR(CheckDims("delta", *delta, c.lse_dims));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("delta", *delta, ffi::DataType::F32));
  JAX_GNA_RETURN_IF_ERROR(CheckDType("dextra_accum", *dextra_accum, ffi::DataType::F32));
  int64_t num_splits = 1;
  if (s.num_extra > 0) {
    const auto ad = dextra_accum->dimensions();
    if (ad.size() != 6 || ad[1] < 1) {
      return Invalid("dextra_accum must be f32 [2, splits >= 1, batch, n_extra, heads_kv, "
                     "head_dim]; got " + DimsStr(ad));
    }
    num_splits = ad[1];
    JAX_GNA_RETURN_IF_ERROR(CheckDims("dextra_accum", *dextra_accum,
                                      {2, num_splits, s.batch, s.num_extra, s.heads_kv,
                                       s.head_dim}));
    if (num_splits > 65535) return Invalid("dextra_accum has more than 65535 splits");
  }

  const BwdKernel* kernel = find_bwd(backend, c.dtype, s.head_dim, s.head_dim_v);
  if (kernel == nullptr) {
    return Invalid("no backward kernel for backend '" + std::string(backend) + "', dtype " +
                   dtype_name(c.dtype) + ", head_dim " + std::to_string(s.head_dim) +
                   ", value head_dim " + std::to_string(s.head_dim_v) +
                   " in this build; compiled:\n" + describe_compiled_kernels());
  }
  JAX_GNA_RETURN_IF_ERROR(CheckTileTokens(c.tiles, kernel->q_tile_tokens,
                                          kernel->kv_tile_tokens, kernel->key.backend));
  const int64_t extra_ctas =
      (s.num_extra + kernel->kv_tile_tokens - 1) / kernel->kv_tile_tokens * num_splits;
  if (NumTiles(s, c.tiles.q) * (s.heads_q / s.heads_kv) > INT32_MAX ||
      NumTiles(s, c.tiles.kv) + extra_ctas > INT32_MAX) {
    return Invalid("too many tiles for one launch; use larger tile boxes");
  }

  BwdParams p;
  FillFwdParams(c, q, k, v, extra_k, extra_v, scale, &p.fwd);
  p.fwd.out = const_cast<void*>(out.untyped_data());
  p.fwd.lse = static_cast<float*>(lse.untyped_data());
  p.dextra_accum = s.num_extra > 0 ? static_cast<float*>(dextra_accum->untyped_data()) : nullptr;
  p.dout = dout.untyped_data();
  p.dlse = static_cast<const float*>(dlse.untyped_data());
  p.dq = dq->untyped_data();
  p.dk = dk->untyped_data();
  p.dv = dv->untyped_data();
  p.dextra_k = s.num_extra > 0 ? dextra_k->untyped_data() : nullptr;
  p.dextra_v = s.num_extra > 0 ? dextra_v->untyped_data() : nullptr;
  p.dq_accum = dq_accum_used ? static_cast<float*>(dq_accum->untyped_data()) : nullptr;
  p.delta = static_cast<float*>(delta->untyped_data());
  p.dout_strides = p.fwd.out_strides;
  p.dq_strides = p.fwd.q_strides;
  p.dk_strides = p.fwd.k_strides;
  p.dv_strides = p.fwd.v_strides;
  p.dextra_k_strides = p.fwd.extra_k_strides;
  p.dextra_v_strides = p.fwd.extra_v_strides;
  p.deterministic = deterministic;
  p.num_extra_splits = int(num_splits);
  JAX_GNA_RETURN_IF_ERROR(CheckAlignedAll(
      {{"query", p.fwd.q}, {"key", p.fwd.k}, {"value", p.fwd.v},
       {"additional_keys", p.fwd.extra_k}, {"additional_values", p.fwd.extra_v},
       {"out", p.fwd.out}, {"dout", p.dout}, {"dq", p.dq}, {"dk", p.dk}, {"dv", p.dv},
       {"dextra_k", p.dextra_k}, {"dextra_v", p.dextra_v}, {"dq_accum", p.dq_accum},
       {"dextra_accum", p.dextra_accum}}));
  JAX_GNA_RETURN_IF_ERROR(NumSms(&p.fwd.num_sms));
  const bool is_sm90 = backend == "sm90";
  // The sm90 backward has no extra-token work items and no fixed-order dQ: a call with
  // additional tokens or deterministic=True is split (BwdParams::parts, params.h). The sm80
  // backward of the same dtype and head dim runs first (delta; the additional tokens' dK/dV
  // and, unless deterministic, their dQ parts into dq_accum; with deterministic=True its
  // Q-tile-major dQ kernel over every key), then the sm90 one (its spatial tiles' dK/dV; dQ
  // and the conversion unless deterministic). Both walk the same 64-token Q tiles; the sm80
  // dQ kernel walks KV tiles of its own token count, the sm90 box halved.
  const BwdKernel* first_part = nullptr;
  BwdParams first_params;
  if (is_sm90 && (s.num_extra > 0 || deterministic)) {
    first_part = find_bwd("sm80", c.dtype, s.head_dim, s.head_dim_v);
    if (first_part == nullptr) {
      return Invalid("backend 'sm90' backward with additional keys/values or "
                     "deterministic=True needs the sm80 backward of the same dtype and head "
                     "dim (it computes that part); not in this build");
    }
    if (first_part->q_tile_tokens != kernel->q_tile_tokens) {
      return Invalid("backend 'sm90' backward: the sm80 backward's Q tile (" +
                     std::to_string(first_part->q_tile_tokens) + " tokens) differs from the "
                     "sm90 one's (" + std::to_string(kernel->q_tile_tokens) + ")");
    }
    first_params = p;
    first_params.parts = {/*delta=*/true, /*spatial_tiles=*/false, /*extra_tokens=*/true,
                          /*dq_final=*/deterministic};
    if (deterministic) {  // the sm80 dQ kernel's KV box: the sm90 one halved until it fits
      int* kv = first_params.fwd.tiles.kv;
      int tokens = kernel->kv_tile_tokens;
      while (tokens > first_part->kv_tile_tokens) {
        int dim = 0;
        while (dim < kMaxRank - 1 && kv[dim] == 1) ++dim;
        if (kv[dim] % 2 != 0) return Invalid("backend 'sm90' backward: KV box not halvable");
        kv[dim] /= 2;
        tokens /= 2;
      }
      if (tokens != first_part->kv_tile_tokens) {
        return Invalid("backend 'sm90' backward: the sm80 backward's KV tile (" +
                       std::to_string(first_part->kv_tile_tokens) +
                       " tokens) is not the sm90 one's halved");
      }
    }
    p.parts = {/*delta=*/false, /*spatial_tiles=*/true, /*extra_tokens=*/false,
               /*dq_final=*/!deterministic};
  }
#if defined(JAX_GNA_BUILT_SM90A)
  if (is_sm90) {
    if (const char* why = sm90_bwd_unsupported_reason(p, kernel->q_tile_tokens,
                                                       kernel->kv_tile_tokens);
        why != nullptr) {
      return Invalid(std::string("backend 'sm90' cannot serve this call: ") + why);
    }
  }
#endif
#if defined(JAX_GNA_BUILT_SM80)
  if (backend == "halo") {
    if (const std::string why = halo::bwd_unsupported_reason(p, kernel->q_tile_tokens,
                                                             kernel->kv_tile_tokens);
        !why.empty()) {
      return Invalid("backend 'halo' cannot serve this call: " + why);
    }
  }
#endif
  if (s.batch == 0) return ffi::Error::Success();
  if (p.dq_accum != nullptr) {
    if (cudaError_t err =
            cudaMemsetAsync(p.dq_accum, 0, dq_accum->size_bytes(), stream);
        err != cudaSuccess) {
      return CudaFailure("cudaMemsetAsync(dq_accum)", err);
    }
  }
  if (first_part != nullptr) {
    if (cudaError_t err = first_part->launch(first_params, stream); err != cudaSuccess) {
      return CudaFailure("backward kernels (sm80: additional tokens / deterministic dQ) launch",
                         err);
    }
  }
  if (cudaError_t err = kernel->launch(p, stream); err != cudaSuccess) {
    std::string what = std::string("backward kernels (") + kernel->key.backend + ") launch";
#if defined(JAX_GNA_BUILT_SM90A)
    if (is_sm90 && err == cudaErrorInvalidValue) what += std::string(": ") + sm90_fwd_last_error();
#endif
    return CudaFailure(what, err);
  }
  (void)is_sm90;
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jax_gna

// Exported with default visibility whatever -fvisibility the build uses: _extension.py looks
// these up with ctypes.
extern "C" __attribute__((visibility("default"))) XLA_FFI_Error* JaxGnaFwd(
    XLA_FFI_CallFrame* call_frame);
extern "C" __attribute__((visibility("default"))) XLA_FFI_Error* JaxGnaBwd(
    XLA_FFI_CallFrame* call_frame);

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxGnaFwd, jax_gna::FwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // q
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // v
                                  .Arg<ffi::AnyBuffer>()  // extra_k
                                  .Arg<ffi::AnyBuffer>()  // extra_v
                                  .Ret<ffi::AnyBuffer>()  // out
                                  .Ret<ffi::AnyBuffer>()  // lse
                                  .Ret<ffi::AnyBuffer>()  // workspace
                                  .Attr<std::string_view>("backend")
                                  .Attr<ffi::Span<const int64_t>>("kernel_size")
                                  .Attr<ffi::Span<const int64_t>>("stride")
                                  .Attr<ffi::Span<const int64_t>>("dilation")
                                  .Attr<ffi::Span<const int64_t>>("is_causal")
                                  .Attr<ffi::Span<const int64_t>>("q_tile")
                                  .Attr<ffi::Span<const int64_t>>("kv_tile")
                                  .Attr<ffi::Span<const int64_t>>("query_begin")
                                  .Attr<ffi::Span<const int64_t>>("query_end")
                                  .Attr<float>("scale"),
                              {ffi::Traits::kCmdBufferCompatible});

XLA_FFI_DEFINE_HANDLER_SYMBOL(JaxGnaBwd, jax_gna::BwdImpl,
                              ffi::Ffi::Bind()
                                  .Ctx<ffi::PlatformStream<cudaStream_t>>()
                                  .Arg<ffi::AnyBuffer>()  // q
                                  .Arg<ffi::AnyBuffer>()  // k
                                  .Arg<ffi::AnyBuffer>()  // v
                                  .Arg<ffi::AnyBuffer>()  // extra_k
                                  .Arg<ffi::AnyBuffer>()  // extra_v
                                  .Arg<ffi::AnyBuffer>()  // out
                                  .Arg<ffi::AnyBuffer>()  // lse
                                  .Arg<ffi::AnyBuffer>()  // dout
                                  .Arg<ffi::AnyBuffer>()  // dlse
                                  .Ret<ffi::AnyBuffer>()  // dq
                                  .Ret<ffi::AnyBuffer>()  // dk
                                  .Ret<ffi::AnyBuffer>()  // dv
                                  .Ret<ffi::AnyBuffer>()  // dextra_k
                                  .Ret<ffi::AnyBuffer>()  // dextra_v
                                  .Ret<ffi::AnyBuffer>()  // dq_accum (workspace)
                                  .Ret<ffi::AnyBuffer>()  // delta (workspace)
                                  .Ret<ffi::AnyBuffer>()  // dextra_accum (workspace)
                                  .Attr<std::string_view>("backend")
                                  .Attr<ffi::Span<const int64_t>>("kernel_size")
                                  .Attr<ffi::Span<const int64_t>>("stride")
                                  .Attr<ffi::Span<const int64_t>>("dilation")
                                  .Attr<ffi::Span<const int64_t>>("is_causal")
                                  .Attr<ffi::Span<const int64_t>>("q_tile")
                                  .Attr<ffi::Span<const int64_t>>("kv_tile")
                                  .Attr<ffi::Span<const int64_t>>("query_begin")
                                  .Attr<ffi::Span<const int64_t>>("query_end")
                                  .Attr<float>("scale")
                                  .Attr<bool>("deterministic"),
                              {ffi::Traits::kCmdBufferCompatible});

// One line per compiled kernel instantiation (registry.h format), built once on first call.
extern "C" __attribute__((visibility("default"))) const char* jax_gna_compiled_kernels() {
  static const std::string text = jax_gna::describe_compiled_kernels();
  return text.c_str();
}
