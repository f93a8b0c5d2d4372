// Cycle trace of the sm90 consumers: a profiling build of the self-test only
// (-DJAX_GNA_SM90_TRACE; ../mainloop.h includes this file only then, and otherwise defines
// every GNA_TRACE_* empty; the library's instantiation files refuse the macro). Lane 0 of the first warp of each consumer warpgroup of CTAs 0..kTraceCtas-1
// records (event, item, KV tile, SM clock) at the points below; `fwd_selftest.cc bench`
// dumps the last launch's records to $GNA_TRACE_OUT/<case>.trace and
// `scripts/sm90_trace.py` turns them into per-segment cycle medians and the two warpgroups'
// turn gaps. The records cost a few instructions per event (~2-4% of the loop's time).
#pragma once

#ifndef JAX_GNA_SM90_TRACE
#error "test/trace.h belongs to the -DJAX_GNA_SM90_TRACE self-test build only"
#endif

#include <cstdint>

namespace jax_gna {
namespace sm90 {

// Trace points (scripts/sm90_trace.py has the same names).
enum TraceEvent : int {
  kTrLoopTop = 1,       // KV tile j >= 1: before the K/V waits
  kTrLoopSync = 2,      // after the warpgroup's turn barrier (GEMMs issued next)
  kTrLoopS = 3,         // S(j) landed
  kTrLoopSoftmax = 4,   // softmax of S(j) done, K(j) released
  kTrLoopPV = 5,        // PV(j-1) landed
  kTrLoopEnd = 6,       // P(j) converted
  kTrBoundaryTop = 10,  // after the item's last tile: before the waits of the boundary turn
  kTrBoundarySync = 11, // the boundary turn's barrier (next S0, last PV issued next)
  kTrEpilogueEnd = 13,  // the previous item's epilogue done
  kTrTile0S = 14,       // S0 landed
  kTrTile0Softmax = 15, // softmax of S0 done
  kTrTile0End = 16,     // tile 0 done (P0 converted)
  kTrTile0PV = 17,      // the previous item's last PV landed
};

constexpr int kTraceCtas = 4;
constexpr int kTraceEvents = 16384;
__device__ unsigned long long g_trace[kTraceCtas][2][kTraceEvents];
__device__ unsigned int g_trace_count[kTraceCtas][2];

struct Tracer {
  unsigned long long* buf;  // this warpgroup's records (first warp only), else null
  int n;
  bool lane0;
  __device__ __forceinline__ Tracer(int wg, int tid) {
    buf = (blockIdx.x < kTraceCtas && tid < 32) ? g_trace[blockIdx.x][wg] : nullptr;
    lane0 = tid == 0;
    n = 0;
  }
  // (event 8 bits, item 12, tile 12, low 32 bits of the SM clock)
  __device__ __forceinline__ void record(int event, uint32_t item, int j) {
    if (buf != nullptr) {
      unsigned long long c;
      asm volatile("mov.u64 %0, %%clock64;" : "=l"(c));
      if (lane0 && n < kTraceEvents) {
        buf[n] = (static_cast<unsigned long long>(event) << 56) |
                 (static_cast<unsigned long long>(item & 0xfff) << 44) |
                 (static_cast<unsigned long long>(j & 0xfff) << 32) | (c & 0xffffffffull);
      }
      ++n;
    }
  }
  __device__ __forceinline__ void done(int wg) {
    if (buf != nullptr && lane0) {
      g_trace_count[blockIdx.x][wg] = n < kTraceEvents ? n : kTraceEvents;
    }
  }
};
#define GNA_TRACE_INIT(wg, tid) Tracer gna_tracer_(wg, tid)
#define GNA_TRACE(event, item, j) gna_tracer_.record(event, item, j)
#define GNA_TRACE_DONE(wg) gna_tracer_.done(wg)

}  // namespace sm90
}  // namespace jax_gna
