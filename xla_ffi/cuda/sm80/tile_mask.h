// Element masks of boundary tiles. Interior tile pairs (every query of the Q tile sees every
// key of the KV tile, decided per tile pair from window.h's kv_tile_interior_1d in all dims)
// skip this entirely; the decision is uniform over the CTA, so the branch never diverges.
//
// The neighborhood of a query is a box (AND over dims of per-dim windows), so a score
// (row, col) is visible when the key's box coordinate lies inside the query's window shifted
// into the KV tile's box: one packed-interval test per element (index_math.h). Windows come
// from shared-memory tables computed once per CTA with window.h (forward: per query row;
// backward: per key column, the inverse windows), so no window math runs per element.
//
// Scores are addressed through an identity tensor partitioned like the accumulator: c(r, ci)
// holds the (row, col) of element (r, ci) of the (row, column) view; rows depend on r only
// and columns on ci only (m16n8 accumulator layout).
#pragma once

#include <cute/tensor.hpp>

#include <cmath>

#include "index_math.h"

namespace jax_gna::sm80 {

using namespace cute;

// Forward / deterministic dQ: rows are queries with windows [win_begin, win_end) per dim
// (group-local), columns are keys with box codes col_code inside a KV tile at group-local
// origin kv_origin.
template <class S, class C>
CUTE_DEVICE void mask_rows_by_window(S& s, C const& c, const int4* win_begin,
                                     const int4* win_end, const uint32_t* col_code,
                                     const int kv_origin[3]) {
  constexpr int kRows = decltype(size<0>(s))::value;
  constexpr int kCols = decltype(size<1>(s))::value;
  BoxInterval iv[kRows];
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) {
    const int row = get<0>(c(r, 0));
    const int4 b4 = win_begin[row];
    const int4 e4 = win_end[row];
    const int b[kMaxRank] = {b4.x, b4.y, b4.z}, e[kMaxRank] = {e4.x, e4.y, e4.z};
    iv[r] = shifted_interval(b, e, kv_origin);
  }
  CUTE_UNROLL
  for (int ci = 0; ci < kCols; ++ci) {
    const uint32_t code = col_code[get<1>(c(0, ci))];
    const uint32_t code_g = code | kCodeGuard;
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      if (!in_box_interval(code, code_g, iv[r])) s(r, ci) = -INFINITY;
    }
  }
}

// Backward (KV-tile-major): columns are keys with inverse windows [inv_begin, inv_end) per
// dim (the group-local queries that see the key), rows are queries with box codes row_code
// inside a Q tile at group-local origin q_origin.
template <class S, class C>
CUTE_DEVICE void mask_cols_by_inverse_window(S& s, C const& c, const int4* inv_begin,
                                             const int4* inv_end, const uint32_t* row_code,
                                             const int q_origin[3]) {
  constexpr int kRows = decltype(size<0>(s))::value;
  constexpr int kCols = decltype(size<1>(s))::value;
  uint32_t code[kRows];
  CUTE_UNROLL
  for (int r = 0; r < kRows; ++r) code[r] = row_code[get<0>(c(r, 0))];
  CUTE_UNROLL
  for (int ci = 0; ci < kCols; ++ci) {
    const int col = get<1>(c(0, ci));
    const int4 b4 = inv_begin[col];
    const int4 e4 = inv_end[col];
    const int b[kMaxRank] = {b4.x, b4.y, b4.z}, e[kMaxRank] = {e4.x, e4.y, e4.z};
    const BoxInterval iv = shifted_interval(b, e, q_origin);
    CUTE_UNROLL
    for (int r = 0; r < kRows; ++r) {
      if (!in_box_interval(code[r], code[r] | kCodeGuard, iv)) s(r, ci) = -INFINITY;
    }
  }
}

// The last additional-KV tile may be partial: columns >= num_cols do not exist.
template <class S, class C>
CUTE_DEVICE void mask_cols_beyond(S& s, C const& c, int num_cols) {
  CUTE_UNROLL
  for (int ci = 0; ci < size<1>(s); ++ci) {
    if (get<1>(c(0, ci)) >= num_cols) {
      CUTE_UNROLL
      for (int r = 0; r < size<0>(s); ++r) s(r, ci) = -INFINITY;
    }
  }
}

// Table builders (one thread per row): index_math.h's host/device functions, stored as int4.
CUTE_DEVICE void store_query_row_window(int row, uint32_t code, const DimTile q[kMaxRank],
                                        const ProblemShape& s, int4* win_begin,
                                        int4* win_end) {
  int b[kMaxRank], e[kMaxRank];
  query_row_window(code, q, s, b, e);
  win_begin[row] = make_int4(b[0], b[1], b[2], 0);
  win_end[row] = make_int4(e[0], e[1], e[2], 0);
}

CUTE_DEVICE void store_key_inverse_window(int col, uint32_t code, const DimTile kv[kMaxRank],
                                          const ProblemShape& s, int4* inv_begin,
                                          int4* inv_end) {
  int b[kMaxRank], e[kMaxRank];
  key_inverse_window(code, kv, s, b, e);
  inv_begin[col] = make_int4(b[0], b[1], b[2], 0);
  inv_end[col] = make_int4(e[0], e[1], e[2], 0);
}

}  // namespace jax_gna::sm80
