// Standalone GPU self-test and benchmark of the sm90 GNA forward kernel (no JAX, no
// registry): correctness against a float64 CPU reference (docs/semantics.md, windows from
// window.h), then the benchmark suite's forward cases with effective and per-tile TFLOP/s.
//
// Build (.cc so the library's **/*.cu glob skips it; ~1-5 min, one TU with the kernel
// manifest's sm90 forward instantiations; <gen> holds jax_gna/kernel_manifest.h):
//   python3 xla_ffi/generate_kernels.py --out <gen>
//   nvcc -x cu -DNDEBUG -O3 -std=c++17 --expt-relaxed-constexpr --expt-extended-lambda
//        -gencode=arch=compute_90a,code=sm_90a -I xla_ffi/include -I xla_ffi/cuda -I <gen>
//        -I <cutlass>/include
//        xla_ffi/cuda/sm90/test/fwd_selftest.cc -o sm90_fwd_selftest
// Run:  ./sm90_fwd_selftest [all|correct|bench|list] [name filter]
//       all (default): correctness, then benchmarks; correct / bench: one part; list: names.
//       The optional filter runs only the cases whose name contains it.
//       Environment: GNA_SELFTEST_SEED (default 1) and GNA_SELFTEST_RANDOM (default 12): the
//       seed and number of random correctness cases (test/selftest_cases.h);
//       GNA_BENCH_ITERS (default 10): timed launches per benchmark case; GNA_BENCH_SWEEP=1
//       adds the per-item cost sweep (selftest_cases.h: item_cost_cases);
//       GNA_SELFTEST_SPIKE=f scales the keys of every 29th token by f (row maxima jump
//       between KV tiles: the softmax's rescale and fast-step fallback paths).
//       Built with -DJAX_GNA_SM90_TRACE (trace.h), `bench` also writes each case's
//       consumer cycle trace to $GNA_TRACE_OUT/<case>.trace (scripts/sm90_trace.py).
// Exit status 0 iff every case passes: docs/semantics.md tolerances for half-precision operands
// (relative error of O < 1e-2, max |LSE error| < 1e-3), no NaN/Inf anywhere (the outputs are
// pre-filled with NaN, so unwritten rows fail too); every benchmark runs without error.
//
// Hangs and crashes: the parent process never touches CUDA; the cases run in a forked child
// that reports each finished case through a pipe. A case whose kernel does not finish within
// its watchdog (30 s; 60 s for a benchmark's timed loop) makes the child print TIMEOUT and
// exit, which tears its CUDA context (and the hung kernel) down; the parent records the case
// as failed and starts a fresh child at the next case. So `all` always reaches the
// benchmarks, and the exit status is non-zero if anything failed or hung.
#include <cuda_runtime.h>
#include <poll.h>
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cctype>
#include <cstring>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "../launch.h"
#include "jax_gna/kernel_manifest.h"
// sm90_fwd_unsupported_reason / sm90_fwd_last_error (host code of the library).
#include "../fwd_support.cu"
#include "selftest_cases.h"

using namespace jax_gna;
using namespace jax_gna::sm90;
using selftest::Case;

#define CUDA_OK(x)                                                                   \
  do {                                                                               \
    cudaError_t e_ = (x);                                                            \
    if (e_ != cudaSuccess) {                                                         \
      std::printf("CUDA error %s at %s:%d: %s\n", cudaGetErrorName(e_), __FILE__,    \
                  __LINE__, cudaGetErrorString(e_));                                 \
      std::fflush(stdout);                                                           \
      std::_Exit(2);                                                                 \
    }                                                                                \
  } while (0)

// Waits for the device with a deadline, so that a hang (a barrier protocol bug) ends the
// child with a message instead of holding the GPU: exiting the process tears the context
// down; the parent then continues with the next case in a fresh process.
static void sync_or_die(const std::string& what, double seconds) {
  const auto start = std::chrono::steady_clock::now();
  while (true) {
    const cudaError_t e = cudaStreamQuery(nullptr);
    if (e == cudaSuccess) return;
    if (e != cudaErrorNotReady) {
      std::printf("[%s] CUDA error %s: %s\n", what.c_str(), cudaGetErrorName(e),
                  cudaGetErrorString(e));
      std::fflush(stdout);
      std::_Exit(2);
    }
    if (std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() > seconds) {
      std::printf("[%s] TIMEOUT after %.0f s: kernel hang\n", what.c_str(), seconds);
      std::fflush(stdout);
      std::_Exit(3);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  }
}

template <class T>
__global__ void fill_kernel(T* x, int64_t n, uint32_t seed, float amp) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    uint32_t h = static_cast<uint32_t>(i) * 2654435761u ^ seed ^ static_cast<uint32_t>(i >> 32);
    h ^= h >> 16; h *= 0x7feb352du; h ^= h >> 15; h *= 0x846ca68bu; h ^= h >> 16;
    const float u = (h >> 8) * (1.0f / 16777216.0f) * 2.f - 1.f;
    x[i] = T(u * amp);
  }
}

// GNA_SELFTEST_SPIKE=f: keys of every 29th token scaled by f, so that running row maxima
// jump by many log2 units between KV tiles (the softmax's rescale and slow paths).
template <class T>
__global__ void spike_kernel(T* x, int64_t n, int64_t token_elems, float f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if ((i / token_elems) % 29 == 5) x[i] = T(float(x[i]) * f);
  }
}

template <class T>
static void fill(T* x, int64_t n, uint32_t seed, float amp) {
  fill_kernel<<<1024, 256>>>(x, n, seed, amp);
  CUDA_OK(cudaGetLastError());
}

struct Buffers {
  void *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *ek = nullptr, *ev = nullptr;
  float* lse = nullptr;
  int* ws = nullptr;
  int64_t nq = 0, nkv = 0, nex = 0, ntok = 0;
};

static FwdParams make_params(const Case& c, const Buffers& b) {
  FwdParams fp = selftest::case_params(c);
  fp.q = b.q; fp.k = b.k; fp.v = b.v; fp.out = b.o; fp.lse = b.lse;
  fp.extra_k = b.ek; fp.extra_v = b.ev;
  int dev = 0;
  CUDA_OK(cudaGetDevice(&dev));
  CUDA_OK(cudaDeviceGetAttribute(&fp.num_sms, cudaDevAttrMultiProcessorCount, dev));
  // JAX_GNA_SM90_MAX_CTAS=n caps the persistent grid at n CTAs, as the library's FFI
  // handler does (more work items per CTA on small cases).
  if (const char* e = std::getenv("JAX_GNA_SM90_MAX_CTAS"); e != nullptr && std::atoi(e) > 0)
    fp.num_sms = std::min(fp.num_sms, std::atoi(e));
  fp.workspace = c.workspace ? b.ws : nullptr;
  fp.workspace_bytes = c.workspace ? manifest::family("sm90").fwd_workspace_bytes : 0;
  return fp;
}

// The kernel manifest's instantiation for a case's dtype and head dim (nullptr: none).
static const manifest::Instance* instance_of(const FwdParams& fp) {
  return manifest::find("sm90", "fwd", fp.dtype, fp.shape.head_dim);
}

static const char* unsupported_reason(const FwdParams& fp) {
  const manifest::Instance* k = instance_of(fp);
  if (k == nullptr) return "no sm90 forward of this dtype and head dim in the kernel manifest";
  return sm90_fwd_unsupported_reason(fp, k->q_tile_tokens, k->kv_tile_tokens);
}

static cudaError_t launch(const FwdParams& fp, cudaStream_t st) {
#define SELFTEST_LAUNCH(ELEMENT, HEAD_DIM, Q_TOKENS, KV_TOKENS, STAGES)                       \
  if (fp.dtype == (std::is_same_v<ELEMENT, cutlass::half_t> ? DType::kFloat16                 \
                                                             : DType::kBFloat16) &&           \
      fp.shape.head_dim == HEAD_DIM)                                                           \
    return launch_fwd<FwdTraits<ELEMENT, HEAD_DIM, KV_TOKENS, STAGES>>(fp, st);
  JAX_GNA_KERNELS_SM90_FWD(SELFTEST_LAUNCH)
#undef SELFTEST_LAUNCH
  return cudaErrorInvalidValue;
}

static Buffers alloc(const Case& c) {
  Buffers b;
  b.ntok = int64_t(c.L[0]) * c.L[1] * c.L[2];
  b.nq = c.B * b.ntok * c.Hq * c.D;
  b.nkv = c.B * b.ntok * c.Hkv * c.D;
  b.nex = int64_t(c.B) * c.E * c.Hkv * c.D;
  CUDA_OK(cudaMalloc(&b.q, b.nq * 2));
  CUDA_OK(cudaMalloc(&b.o, b.nq * 2));
  CUDA_OK(cudaMalloc(&b.k, b.nkv * 2));
  CUDA_OK(cudaMalloc(&b.v, b.nkv * 2));
  CUDA_OK(cudaMalloc(&b.lse, c.B * b.ntok * c.Hq * sizeof(float)));
  CUDA_OK(cudaMalloc(&b.ws, manifest::family("sm90").fwd_workspace_bytes));
  CUDA_OK(cudaMemset(b.ws, 0x7f, manifest::family("sm90").fwd_workspace_bytes));  // garbage: the launch must zero it
  if (c.E > 0) {
    CUDA_OK(cudaMalloc(&b.ek, b.nex * 2));
    CUDA_OK(cudaMalloc(&b.ev, b.nex * 2));
  }
  auto fill_any = [&](void* p, int64_t n, uint32_t seed, float amp) {
    if (c.fp16) fill(static_cast<cutlass::half_t*>(p), n, seed, amp);
    else fill(static_cast<cutlass::bfloat16_t*>(p), n, seed, amp);
  };
  fill_any(b.q, b.nq, 1, 2.5f);
  fill_any(b.k, b.nkv, 2, 2.5f);
  fill_any(b.v, b.nkv, 3, 1.f);
  if (c.E > 0) {
    fill_any(b.ek, b.nex, 4, 2.5f);
    fill_any(b.ev, b.nex, 5, 1.f);
  }
  if (const char* sp = std::getenv("GNA_SELFTEST_SPIKE")) {
    const float f = static_cast<float>(std::atof(sp));
    const int64_t te = int64_t(c.Hkv) * c.D;
    auto spike_any = [&](void* p, int64_t n) {
      if (c.fp16) spike_kernel<<<1024, 256>>>(static_cast<cutlass::half_t*>(p), n, te, f);
      else spike_kernel<<<1024, 256>>>(static_cast<cutlass::bfloat16_t*>(p), n, te, f);
      CUDA_OK(cudaGetLastError());
    };
    spike_any(b.k, b.nkv);
    if (c.E > 0) spike_any(b.ek, b.nex);
  }
  CUDA_OK(cudaMemset(b.o, 0xff, b.nq * 2));  // NaN pattern: unwritten outputs fail
  CUDA_OK(cudaMemset(b.lse, 0xff, c.B * b.ntok * c.Hq * sizeof(float)));
  return b;
}

static void release(Buffers& b) {
  cudaFree(b.q); cudaFree(b.k); cudaFree(b.v); cudaFree(b.o); cudaFree(b.lse); cudaFree(b.ws);
  if (b.ek) cudaFree(b.ek);
  if (b.ev) cudaFree(b.ev);
  b = Buffers{};
}

// ---- Reference (docs/semantics.md; windows from window.h via selftest::case_window) ---
static std::vector<float> to_float(const void* dev, int64_t n, bool fp16) {
  std::vector<uint16_t> raw(n);
  CUDA_OK(cudaMemcpy(raw.data(), dev, n * 2, cudaMemcpyDeviceToHost));
  std::vector<float> out(n);
  for (int64_t i = 0; i < n; ++i) {
    if (fp16) {
      out[i] = static_cast<float>(cutlass::half_t::bitcast(raw[i]));
    } else {
      uint32_t u = uint32_t(raw[i]) << 16;
      std::memcpy(&out[i], &u, 4);
    }
  }
  return out;
}

static bool check_case(const Case& c) {
  Buffers b = alloc(c);
  const FwdParams fp = make_params(c, b);
  if (const char* why = unsupported_reason(fp)) {
    std::printf("[%-34s] REFUSED: %s\n", c.name.c_str(), why);
    release(b);
    return false;
  }
  const cudaError_t err = launch(fp, nullptr);
  if (err != cudaSuccess) {
    std::printf("[%-34s] launch error %s: %s\n", c.name.c_str(), cudaGetErrorName(err),
                sm90_fwd_last_error());
    release(b);
    return false;
  }
  sync_or_die(c.name, 30.0);
  const std::vector<float> q = to_float(b.q, b.nq, c.fp16), k = to_float(b.k, b.nkv, c.fp16),
                           v = to_float(b.v, b.nkv, c.fp16), o = to_float(b.o, b.nq, c.fp16);
  std::vector<float> ek, ev;
  if (c.E > 0) {
    ek = to_float(b.ek, b.nex, c.fp16);
    ev = to_float(b.ev, b.nex, c.fp16);
  }
  std::vector<float> lse(c.B * b.ntok * c.Hq);
  CUDA_OK(cudaMemcpy(lse.data(), b.lse, lse.size() * 4, cudaMemcpyDeviceToHost));

  const double scale = fp.scale;
  double err2 = 0, ref2 = 0, lse_err = 0;
  bool nan = false;
  std::vector<double> logits, acc(c.D);
  std::vector<const float*> vrows;
  const int G = c.Hq / c.Hkv;
  for (int bb = 0; bb < c.B; ++bb)
    for (int x0 = 0; x0 < c.L[0]; ++x0)
      for (int x1 = 0; x1 < c.L[1]; ++x1)
        for (int x2 = 0; x2 < c.L[2]; ++x2) {
          const int64_t tok = (int64_t(x0) * c.L[1] + x1) * c.L[2] + x2;
          int f[3], n[3];
          const int x[3] = {x0, x1, x2};
          for (int i = 0; i < 3; ++i) selftest::case_window(c, i, x[i], &f[i], &n[i]);
          for (int h = 0; h < c.Hq; ++h) {
            const int hk = h / G;
            const float* qr = &q[((bb * b.ntok + tok) * c.Hq + h) * c.D];
            logits.clear();
            vrows.clear();
            for (int a0 = 0; a0 < n[0]; ++a0)
              for (int a1 = 0; a1 < n[1]; ++a1)
                for (int a2 = 0; a2 < n[2]; ++a2) {
                  const int y0 = f[0] + c.d[0] * a0, y1 = f[1] + c.d[1] * a1, y2 = f[2] + c.d[2] * a2;
                  const int64_t kt = (int64_t(y0) * c.L[1] + y1) * c.L[2] + y2;
                  const float* kr = &k[((bb * b.ntok + kt) * c.Hkv + hk) * c.D];
                  double dot = 0;
                  for (int e = 0; e < c.D; ++e) dot += double(qr[e]) * kr[e];
                  logits.push_back(dot * scale);
                  vrows.push_back(&v[((bb * b.ntok + kt) * c.Hkv + hk) * c.D]);
                }
            for (int e = 0; e < c.E; ++e) {
              const float* kr = &ek[((int64_t(bb) * c.E + e) * c.Hkv + hk) * c.D];
              double dot = 0;
              for (int t = 0; t < c.D; ++t) dot += double(qr[t]) * kr[t];
              logits.push_back(dot * scale);
              vrows.push_back(&ev[((int64_t(bb) * c.E + e) * c.Hkv + hk) * c.D]);
            }
            double mx = -1e300;
            for (double l : logits) mx = std::max(mx, l);
            double sum = 0;
            std::fill(acc.begin(), acc.end(), 0.0);
            for (size_t j = 0; j < logits.size(); ++j) {
              const double p = std::exp(logits[j] - mx);
              sum += p;
              for (int e = 0; e < c.D; ++e) acc[e] += p * vrows[j][e];
            }
            const float* orow = &o[((bb * b.ntok + tok) * c.Hq + h) * c.D];
            for (int e = 0; e < c.D; ++e) {
              const double ref = acc[e] / sum;
              if (!std::isfinite(orow[e])) nan = true;
              err2 += (orow[e] - ref) * (orow[e] - ref);
              ref2 += ref * ref;
            }
            const double lref = mx + std::log(sum);
            const float lg = lse[(bb * b.ntok + tok) * c.Hq + h];
            if (!std::isfinite(lg)) nan = true;
            lse_err = std::max(lse_err, std::fabs(lg - lref));
          }
        }
  const double rel = std::sqrt(err2 / std::max(ref2, 1e-30));
  const bool pass = !nan && rel < 1e-2 && lse_err < 1e-3;
  std::printf("[%-34s] %s  rel.err(O)=%.3e  max|dLSE|=%.3e%s\n", c.name.c_str(), pass ? "PASS" : "FAIL",
              rel, lse_err, nan ? "  (non-finite outputs)" : "");
  release(b);
  return pass;
}

// ---- Benchmarks ---------------------------------------------------------------------------
// Timed launches per case: GNA_BENCH_ITERS (default 10; more for short kernels).
static int bench_iters() {
  const char* env = std::getenv("GNA_BENCH_ITERS");
  return env != nullptr ? std::max(1, std::atoi(env)) : 10;
}

static bool bench_case(const Case& c) {
  Buffers b = alloc(c);
  const FwdParams fp = make_params(c, b);
  if (const char* why = unsupported_reason(fp)) {
    std::printf("[%-34s] REFUSED: %s\n", c.name.c_str(), why);
    release(b);
    return false;
  }
  ProblemDesc p;
  std::string why;
  admit_fwd(fp, c.D, instance_of(fp)->q_tile_tokens, instance_of(fp)->kv_tile_tokens, &p,
            &why);
  // Attended pairs (docs/semantics.md effective FLOPs) and visited KV tiles (tile FLOPs).
  double pairs = 0;
  {
    std::vector<double> per_dim[3];
    for (int i = 0; i < 3; ++i)
      for (int x = 0; x < c.L[i]; ++x) {
        int f, n;
        selftest::case_window(c, i, x, &f, &n);
        per_dim[i].push_back(n);
      }
    double s0 = 0, s1 = 0, s2 = 0;
    for (double n : per_dim[0]) s0 += n;
    for (double n : per_dim[1]) s1 += n;
    for (double n : per_dim[2]) s2 += n;
    pairs = s0 * s1 * s2 + double(c.E) * b.ntok;
  }
  double tiles = 0, boundary = 0;
  const int per_bh = p.num_q_tiles;
  for (int w = 0; w < per_bh * p.q_per_kv; w += p.q_per_kv) {
    tiles += work_kv_tiles(p, w);
    const WorkCoord wc = decode_work(p, w);
    QTileDim qd[3];
    for (int i = 0; i < 3; ++i) qd[i] = q_tile_dim(p.dim[i], wc.t[i]);
    KVCursor cur = kv_cursor_begin(qd);
    for (int j = 0, n = num_spatial_kv_tiles(qd); j < n; ++j) {
      if (!kv_interior(p, qd, cur)) boundary += 1;
      kv_cursor_next(cur, qd);
    }
  }
  const double boundary_share = boundary / tiles;
  tiles *= double(c.B) * c.Hq;
  const double eff_flops = 4.0 * c.B * c.Hq * pairs * c.D;
  const double tile_flops = 4.0 * tiles * 128.0 * p.kv_tile_tokens * c.D;

  cudaEvent_t e0, e1;
  CUDA_OK(cudaEventCreate(&e0));
  CUDA_OK(cudaEventCreate(&e1));
  CUDA_OK(launch(fp, nullptr));
  sync_or_die(c.name, 30.0);
  for (int i = 0; i < 2; ++i) CUDA_OK(launch(fp, nullptr));
  const int iters = bench_iters();
  CUDA_OK(cudaEventRecord(e0));
  for (int i = 0; i < iters; ++i) CUDA_OK(launch(fp, nullptr));
  CUDA_OK(cudaEventRecord(e1));
  sync_or_die(c.name, 60.0);
  CUDA_OK(cudaEventSynchronize(e1));
  float ms = 0;
  CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
  ms /= iters;
#ifdef JAX_GNA_SM90_TRACE
  // The last launch's consumer cycle trace (trace.h), one file per case.
  if (const char* dir = std::getenv("GNA_TRACE_OUT")) {
    static unsigned long long ev[kTraceCtas][2][kTraceEvents];
    static unsigned int cnt[kTraceCtas][2];
    CUDA_OK(cudaMemcpyFromSymbol(ev, g_trace, sizeof(ev)));
    CUDA_OK(cudaMemcpyFromSymbol(cnt, g_trace_count, sizeof(cnt)));
    std::string name = c.name;
    for (char& ch : name)
      if (!std::isalnum(static_cast<unsigned char>(ch))) ch = '_';
    const std::string path = std::string(dir) + "/" + name + ".trace";
    if (FILE* f = std::fopen(path.c_str(), "wb")) {
      const int hdr[2] = {kTraceCtas, kTraceEvents};
      std::fwrite(hdr, sizeof(hdr), 1, f);
      std::fwrite(cnt, sizeof(cnt), 1, f);
      std::fwrite(ev, sizeof(ev), 1, f);
      std::fclose(f);
    }
  }
#endif
  std::printf("[%-34s] %8.3f ms  effective %6.1f TF/s  per-tile %6.1f TF/s  (%.0f tiles, "
              "%.1f%% of tile FLOPs useful, %.1f%% boundary tiles)\n",
              c.name.c_str(), ms, eff_flops / ms * 1e-9, tile_flops / ms * 1e-9, tiles,
              100.0 * eff_flops / tile_flops, 100.0 * boundary_share);
  CUDA_OK(cudaEventDestroy(e0));
  CUDA_OK(cudaEventDestroy(e1));
  release(b);
  return true;
}

// ---- Driver: cases run in a forked child; the parent survives hangs and crashes ---------
struct Job {
  bool bench;
  Case c;
};

// Child: runs jobs[first..] in order, writing "index status\n" to fd after each one
// (status 0: pass, 1: fail). Never returns.
[[noreturn]] static void child_run(const std::vector<Job>& jobs, size_t first, int fd) {
  cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  if (first == 0) {
    std::printf("device: %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount,
                prop.major, prop.minor);
  } else {
    std::printf("(fresh process from case %zu)\n", first);
  }
  std::fflush(stdout);
  bool bench_header = false;
  for (size_t i = first; i < jobs.size(); ++i) {
    const Job& j = jobs[i];
    if (j.bench && !bench_header) {
      std::printf("benchmarks (%d timed launches each, bf16 unless named):\n", bench_iters());
      bench_header = true;
    }
    const bool ok = j.bench ? bench_case(j.c) : check_case(j.c);
    std::fflush(stdout);
    char line[64];
    const int n = std::snprintf(line, sizeof(line), "%zu %d\n", i, ok ? 0 : 1);
    if (write(fd, line, n) != n) std::_Exit(4);
  }
  std::fflush(stdout);
  std::_Exit(0);
}

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "all";
  const std::string filter = argc > 2 ? argv[2] : "";
  if (mode != "all" && mode != "correct" && mode != "bench" && mode != "list") {
    std::printf("usage: %s [all|correct|bench|list] [name filter]\n", argv[0]);
    return 2;
  }
  const char* seed_env = std::getenv("GNA_SELFTEST_SEED");
  const char* count_env = std::getenv("GNA_SELFTEST_RANDOM");
  const uint32_t seed = seed_env ? static_cast<uint32_t>(std::strtoul(seed_env, nullptr, 0)) : 1u;
  const int random_count = count_env ? std::atoi(count_env) : 12;

  std::vector<Job> jobs;
  auto add = [&](const std::vector<Case>& cases, bool bench) {
    for (const Case& c : cases)
      if (filter.empty() || c.name.find(filter) != std::string::npos) jobs.push_back({bench, c});
  };
  if (mode != "bench") {
    add(selftest::fixed_correctness_cases(), false);
    add(selftest::random_correctness_cases(seed, random_count), false);
  }
  if (mode != "correct") add(selftest::bench_cases(), true);
  if (mode != "correct" && std::getenv("GNA_BENCH_SWEEP") != nullptr)
    add(selftest::item_cost_cases(), true);
  if (mode == "list") {
    for (const Job& j : jobs) std::printf("%s %s\n", j.bench ? "bench  " : "correct", j.c.name.c_str());
    return 0;
  }
  std::printf("sm90 forward self-test: %zu case(s), random seed %u\n", jobs.size(), seed);
  std::fflush(stdout);

  // -1: not run, 0: pass, 1: fail, 2: hang/crash (child died in it).
  std::vector<int> result(jobs.size(), -1);
  size_t next = 0;
  while (next < jobs.size()) {
    int fds[2];
    if (pipe(fds) != 0) {
      std::perror("pipe");
      return 2;
    }
    std::fflush(stdout);
    const pid_t pid = fork();
    if (pid < 0) {
      std::perror("fork");
      return 2;
    }
    if (pid == 0) {
      close(fds[0]);
      child_run(jobs, next, fds[1]);
    }
    close(fds[1]);
    // Read progress lines; a child that reports nothing for 10 minutes is killed (the
    // in-child watchdogs normally end a hang after 30-60 s).
    std::string buf;
    bool killed = false;
    while (true) {
      pollfd pfd{fds[0], POLLIN, 0};
      const int pr = poll(&pfd, 1, 600 * 1000);
      if (pr == 0) {
        std::printf("[%s] no progress for 600 s: killing the test process %d\n",
                    jobs[next].c.name.c_str(), static_cast<int>(pid));
        kill(pid, SIGKILL);
        killed = true;
        break;
      }
      if (pr < 0) continue;  // EINTR
      char chunk[256];
      const ssize_t n = read(fds[0], chunk, sizeof(chunk));
      if (n <= 0) break;  // EOF: the child exited
      buf.append(chunk, static_cast<size_t>(n));
      size_t pos;
      while ((pos = buf.find('\n')) != std::string::npos) {
        size_t idx = 0;
        int status = 1;
        if (std::sscanf(buf.substr(0, pos).c_str(), "%zu %d", &idx, &status) == 2 &&
            idx < jobs.size()) {
          result[idx] = status;
          next = idx + 1;
        }
        buf.erase(0, pos + 1);
      }
    }
    close(fds[0]);
    int wstatus = 0;
    waitpid(pid, &wstatus, 0);
    const bool clean = !killed && WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0;
    if (!clean && next < jobs.size()) {
      // The child died inside jobs[next] (hang watchdog, CUDA error or crash).
      result[next] = 2;
      std::printf("[%-34s] FAIL: test process ended inside this case (%s %d); continuing "
                  "with the next case in a fresh process\n",
                  jobs[next].c.name.c_str(),
                  WIFEXITED(wstatus) ? "exit status" : "signal",
                  WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : WTERMSIG(wstatus));
      std::fflush(stdout);
      ++next;
    } else if (!clean) {
      break;
    } else if (next < jobs.size()) {
      // Clean exit without reporting every case: should not happen.
      std::printf("test process exited early at case %zu\n", next);
      result[next] = 2;
      ++next;
    }
  }

  int check_fail = 0, bench_fail = 0, died = 0, not_run = 0;
  std::vector<std::string> failed;
  for (size_t i = 0; i < jobs.size(); ++i) {
    if (result[i] == 0) continue;
    if (result[i] < 0) ++not_run;
    if (result[i] == 2) ++died;
    (jobs[i].bench ? bench_fail : check_fail) += 1;
    failed.push_back(jobs[i].c.name);
  }
  std::printf("summary: %zu case(s); correctness failures %d, benchmark failures %d "
              "(of which hung/crashed %d, not run %d)\n",
              jobs.size(), check_fail, bench_fail, died, not_run);
  for (const std::string& f : failed) std::printf("  FAILED: %s\n", f.c_str());
  return failed.empty() ? 0 : 1;
}
