// CPU FFI targets over the tile map of window.h (one dim, group-local), so tests can compare
// the C++ tile math the kernels use with jax_gna.semantics.tile_map_1d / TileMap1D.
//
// A tile is named by (dilation group, group-local first token); it covers
// [start, min(start + tile, Lg)) where Lg is the group's length. The caller lists the tiles it
// wants (e.g. every tile of every group, in the order of tile_map_1d: groups in order, tiles in
// order within a group), so every output size is known before the call.
//
// gna_tile_map
//   inputs   q_start, q_group    int32 [nq]: the Q tiles
//            kv_start, kv_group  int32 [nk]: the KV tiles
//   outputs  kv_start_of_q, kv_end_of_q  int32 [nq]: keys the Q tile needs (q_tile_kv_range)
//            kv_tile_first, kv_tile_last int32 [nq]: those rounded out to KV tiles
//                                                    (q_tile_kv_tiles; tile indices in-group)
//            kv_q_start, kv_q_end        int32 [nk]: queries that see any key of the KV tile
//                                                    (kv_tile_q_range)
// gna_tile_interior
//   inputs   group, q_start, kv_start  int32 [n]: (Q tile, KV tile) pairs of one group
//   output   interior  bool [n]: tile_interior_1d (every query sees every key, full KV tile)
// attrs of both: length, kernel_size, stride, dilation (int64), causal (bool),
//                q_tile, kv_tile (int64)
#include <cstddef>
#include <cstdint>
#include <string>
#include <tuple>
#include <utility>

#include "cpu_targets.h"
#include "dim_attrs.h"
#include "jax_gna/window.h"
#include "xla/ffi/api/ffi.h"

namespace jax_gna::cpu {
namespace {

struct TileConfig {
  DimParams dim;
  int q_tile = 1;
  int kv_tile = 1;
};

ffi::Error MakeTileConfig(int64_t length, int64_t kernel_size, int64_t stride,
                          int64_t dilation, bool causal, int64_t q_tile, int64_t kv_tile,
                          TileConfig* out) {
  if (ffi::Error err = MakeDimParams(length, kernel_size, stride, dilation, causal, &out->dim);
      err.failure()) {
    return err;
  }
  if (ffi::Error err = CheckTileSize("q_tile", q_tile); err.failure()) return err;
  if (ffi::Error err = CheckTileSize("kv_tile", kv_tile); err.failure()) return err;
  out->q_tile = static_cast<int>(q_tile);
  out->kv_tile = static_cast<int>(kv_tile);
  return ffi::Error::Success();
}

// The group-local token range [begin, end) of tile `idx` of buffer `what`, and its group's
// length; rejects a group outside [0, dilation) or a start outside [0, Lg).
ffi::Error ResolveTile(const char* what, size_t idx, int group, int start, int tile,
                       const DimParams& p, Range* range, int* group_len) {
  if (group < 0 || group >= p.dilation) {
    return ffi::Error::InvalidArgument(std::string(what) + " group[" + std::to_string(idx) +
                                       "]=" + std::to_string(group) +
                                       " is outside [0, dilation=" +
                                       std::to_string(p.dilation) + ")");
  }
  const int lg = group_length(group, p.length, p.dilation);
  if (start < 0 || start >= lg) {
    return ffi::Error::InvalidArgument(
        std::string(what) + " start[" + std::to_string(idx) + "]=" + std::to_string(start) +
        " is outside [0, " + std::to_string(lg) + "), the length of dilation group " +
        std::to_string(group));
  }
  *range = {start, imin(start + tile, lg)};
  *group_len = lg;
  return ffi::Error::Success();
}

ffi::Error TileMapImpl(ffi::Buffer<ffi::S32> q_start, ffi::Buffer<ffi::S32> q_group,
                       ffi::Buffer<ffi::S32> kv_start, ffi::Buffer<ffi::S32> kv_group,
                       ffi::ResultBuffer<ffi::S32> kv_start_of_q,
                       ffi::ResultBuffer<ffi::S32> kv_end_of_q,
                       ffi::ResultBuffer<ffi::S32> kv_tile_first,
                       ffi::ResultBuffer<ffi::S32> kv_tile_last,
                       ffi::ResultBuffer<ffi::S32> kv_q_start,
                       ffi::ResultBuffer<ffi::S32> kv_q_end, int64_t length,
                       int64_t kernel_size, int64_t stride, int64_t dilation, bool causal,
                       int64_t q_tile, int64_t kv_tile) {
  TileConfig c;
  if (ffi::Error err = MakeTileConfig(length, kernel_size, stride, dilation, causal, q_tile,
                                      kv_tile, &c);
      err.failure()) {
    return err;
  }
  const size_t nq = q_start.element_count();
  const size_t nk = kv_start.element_count();
  for (auto [name, count, ref_name, ref] :
       {std::tuple<const char*, size_t, const char*, size_t>{
            "q_group", q_group.element_count(), "q_start", nq},
        {"kv_start_of_q", kv_start_of_q->element_count(), "q_start", nq},
        {"kv_end_of_q", kv_end_of_q->element_count(), "q_start", nq},
        {"kv_tile_first", kv_tile_first->element_count(), "q_start", nq},
        {"kv_tile_last", kv_tile_last->element_count(), "q_start", nq},
        {"kv_group", kv_group.element_count(), "kv_start", nk},
        {"kv_q_start", kv_q_start->element_count(), "kv_start", nk},
        {"kv_q_end", kv_q_end->element_count(), "kv_start", nk}}) {
    if (ffi::Error err = CheckSameCount(name, count, ref_name, ref); err.failure()) {
      return err;
    }
  }
  const DimParams& p = c.dim;
  for (size_t t = 0; t < nq; ++t) {
    Range q;
    int lg;
    if (ffi::Error err = ResolveTile("q", t, q_group.typed_data()[t], q_start.typed_data()[t],
                                     c.q_tile, p, &q, &lg);
        err.failure()) {
      return err;
    }
    const Range keys = q_tile_kv_range(q.begin, q.end, lg, p.kernel_size, p.stride, p.causal);
    const Range tiles = q_tile_kv_tiles(q.begin, q.end, lg, p.kernel_size, p.stride,
                                        p.causal, c.kv_tile);
    kv_start_of_q->typed_data()[t] = keys.begin;
    kv_end_of_q->typed_data()[t] = keys.end;
    kv_tile_first->typed_data()[t] = tiles.begin;
    kv_tile_last->typed_data()[t] = tiles.end;
  }
  for (size_t t = 0; t < nk; ++t) {
    Range kv;
    int lg;
    if (ffi::Error err = ResolveTile("kv", t, kv_group.typed_data()[t],
                                     kv_start.typed_data()[t], c.kv_tile, p, &kv, &lg);
        err.failure()) {
      return err;
    }
    const Range queries = kv_tile_q_range(kv.begin, kv.end, lg, p.kernel_size, p.stride,
                                          p.causal);
    kv_q_start->typed_data()[t] = queries.begin;
    kv_q_end->typed_data()[t] = queries.end;
  }
  return ffi::Error::Success();
}

ffi::Error TileInteriorImpl(ffi::Buffer<ffi::S32> group, ffi::Buffer<ffi::S32> q_start,
                            ffi::Buffer<ffi::S32> kv_start,
                            ffi::ResultBuffer<ffi::PRED> interior, int64_t length,
                            int64_t kernel_size, int64_t stride, int64_t dilation,
                            bool causal, int64_t q_tile, int64_t kv_tile) {
  TileConfig c;
  if (ffi::Error err = MakeTileConfig(length, kernel_size, stride, dilation, causal, q_tile,
                                      kv_tile, &c);
      err.failure()) {
    return err;
  }
  const size_t n = group.element_count();
  for (auto [name, count] : {std::pair<const char*, size_t>{"q_start", q_start.element_count()},
                             {"kv_start", kv_start.element_count()},
                             {"interior", interior->element_count()}}) {
    if (ffi::Error err = CheckSameCount(name, count, "group", n); err.failure()) return err;
  }
  const DimParams& p = c.dim;
  for (size_t t = 0; t < n; ++t) {
    const int g = group.typed_data()[t];
    Range q, kv;
    int lg;
    if (ffi::Error err = ResolveTile("q", t, g, q_start.typed_data()[t], c.q_tile, p, &q, &lg);
        err.failure()) {
      return err;
    }
    if (ffi::Error err = ResolveTile("kv", t, g, kv_start.typed_data()[t], c.kv_tile, p, &kv,
                                     &lg);
        err.failure()) {
      return err;
    }
    interior->typed_data()[t] = tile_interior_1d(q.begin, q.end, kv.begin, kv.end, lg,
                                                 p.kernel_size, p.stride, p.causal, c.kv_tile);
  }
  return ffi::Error::Success();
}

}  // namespace
}  // namespace jax_gna::cpu

XLA_FFI_DEFINE_HANDLER_SYMBOL(GnaTileMap, jax_gna::cpu::TileMapImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::S32>>()  // q_start
                                  .Arg<xla::ffi::Buffer<xla::ffi::S32>>()  // q_group
                                  .Arg<xla::ffi::Buffer<xla::ffi::S32>>()  // kv_start
                                  .Arg<xla::ffi::Buffer<xla::ffi::S32>>()  // kv_group
                                  .Ret<xla::ffi::Buffer<xla::ffi::S32>>()  // kv_start_of_q
                                  .Ret<xla::ffi::Buffer<xla::ffi::S32>>()  // kv_end_of_q
                                  .Ret<xla::ffi::Buffer<xla::ffi::S32>>()  // kv_tile_first
                                  .Ret<xla::ffi::Buffer<xla::ffi::S32>>()  // kv_tile_last
                                  .Ret<xla::ffi::Buffer<xla::ffi::S32>>()  // kv_q_start
                                  .Ret<xla::ffi::Buffer<xla::ffi::S32>>()  // kv_q_end
                                  .Attr<int64_t>("length")
                                  .Attr<int64_t>("kernel_size")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<bool>("causal")
                                  .Attr<int64_t>("q_tile")
                                  .Attr<int64_t>("kv_tile"));

XLA_FFI_DEFINE_HANDLER_SYMBOL(GnaTileInterior, jax_gna::cpu::TileInteriorImpl,
                              xla::ffi::Ffi::Bind()
                                  .Arg<xla::ffi::Buffer<xla::ffi::S32>>()   // group
                                  .Arg<xla::ffi::Buffer<xla::ffi::S32>>()   // q_start
                                  .Arg<xla::ffi::Buffer<xla::ffi::S32>>()   // kv_start
                                  .Ret<xla::ffi::Buffer<xla::ffi::PRED>>()  // interior
                                  .Attr<int64_t>("length")
                                  .Attr<int64_t>("kernel_size")
                                  .Attr<int64_t>("stride")
                                  .Attr<int64_t>("dilation")
                                  .Attr<bool>("causal")
                                  .Attr<int64_t>("q_tile")
                                  .Attr<int64_t>("kv_tile"));
