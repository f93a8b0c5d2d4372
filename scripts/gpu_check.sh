#!/usr/bin/env bash
# The one GPU script: build, GPU tests, sanitizer, benchmark; a short table last.
#
#   bash scripts/gpu_check.sh [all|build|sm90build|smoke|smoke128|smoke90|smokehalo|sanitize90bwd|sanitizehalo|suite|dispatch|sanitize|sanitize90|large|sm90self|sm90items|reference|bench|dit|cli|tiles|ncu|ncu80|ncu90jax|ncu90bwd|ncuhalo|scaling]...
#
# Runs on a CUDA machine, also one without network access: wheels the machine's image lacks
# (nvidia-cutlass) come from .whl/; a CUDA library prebuilt elsewhere may come in
# .carry/libjax_gna_cuda.so (it links no Python, so a build for another Python version loads),
# else the kernels are built here. Every stage prints PASS/FAIL into the final table; logs go
# to $OUT (or /tmp/gna_out). Exit status is non-zero if any stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1
OUT="${OUT:-/tmp/gna_out}"
mkdir -p "$OUT"
STAGES=("$@")
[ ${#STAGES[@]} -eq 0 ] && STAGES=(all)
want() { for s in "${STAGES[@]}"; do [ "$s" = all ] || [ "$s" = "$1" ] && return 0; done; return 1; }
declare -a SUMMARY
record() { SUMMARY+=("$(printf '%-10s %-5s %6ss  %s' "$1" "$2" "$3" "$4")"); }
run_stage() {  # name, timeout, command...; the last line of its log becomes the note
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  local note
  note=$(grep -v '^\s*$' "$OUT/$name.log" | tail -1 | cut -c1-90)
  if [ $rc -eq 0 ]; then record "$name" PASS $((SECONDS - t0)) "$note"
  else record "$name" FAIL $((SECONDS - t0)) "rc=$rc $note"; FAILED=1; fi
  echo "---- $name (rc=$rc) ----"; tail -25 "$OUT/$name.log"
}
FAILED=0

# ---- environment: wheels the image lacks -------------------------------------------------
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/gna_site .whl/*.whl && export PYTHONPATH=/tmp/gna_site${PYTHONPATH:+:$PYTHONPATH}
fi
if [ -f .carry/libjax_gna_cuda.so ]; then
  export JAX_GNA_CUDA_LIBRARY="$PWD/.carry/libjax_gna_cuda.so"
fi

# ---- build -------------------------------------------------------------------------------
# A warm machine keeps the last install: skip the build when the native sources are unchanged
# (the Python package itself is imported from this tree, so it is always current).
stamp=$(cat CMakeLists.txt pyproject.toml jax_gna/kernel_manifest.py $(find xla_ffi -type f \( \
  -name '*.h' -o -name '*.cc' -o -name '*.cu' -o -name '*.py' \) | sort) | sha1sum | cut -c1-16)
if want build && [ "$(cat /tmp/gna_build_stamp 2>/dev/null)" = "$stamp" ]; then
  record build SKIP 0 "native sources unchanged since the last build on this machine"
elif want build; then
  if [ -n "${JAX_GNA_CUDA_LIBRARY:-}" ]; then   # C++ part here, kernels prebuilt
    run_stage build 600 env JAX_GNA_BUILD_CUDA=0 python3 -m pip install --no-build-isolation \
      --no-deps . -q
  else
    run_stage build 600 env JAX_GNA_CUDA_JOBS=16 python3 -m pip install --no-build-isolation \
      --no-deps . -q
  fi
  python3 - <<'EOF' | tee -a "$OUT/build.log"
import jax, jax_gna
from jax_gna import _extension, backends
print("jax", jax.__version__, jax.devices()[0].device_kind, "sm", backends.cuda_arch())
print("cpu ext:", _extension.cpu_extension_available(), "cuda lib:",
      _extension.cuda_library_available(), _extension.load_error() or "")
print("compiled kernels:", len(_extension.compiled_kernels()), "available:",
      jax_gna.available_backends())
EOF
  [ $FAILED -eq 0 ] && echo "$stamp" > /tmp/gna_build_stamp
fi

# ---- sm90 self-test binary (standalone, no JAX) ------------------------------------------
# `sm90build` (named only) compiles test/fwd_selftest.cc (the six sm90 kernels in one TU,
# with line info for Nsight Compute's source view) into test/prebuilt/, which the sm90self,
# sm90items, sanitize90 and ncu stages run; a binary built elsewhere may be carried there.
if [[ " ${STAGES[*]} " == *" sm90build "* ]]; then
  cutlass_inc=${CUTLASS_INCLUDE_DIR:-$(python3 -c "import importlib.util as u; \
print(u.find_spec('cutlass_library').submodule_search_locations[0])" 2>/dev/null)/source/include}
  mkdir -p xla_ffi/cuda/sm90/test/prebuilt
  generated=$(mktemp -d)   # jax_gna/kernel_manifest.h
  python3 xla_ffi/generate_kernels.py --out "$generated" >/dev/null
  run_stage sm90build 400 nvcc -x cu -DNDEBUG -O3 -std=c++17 --expt-relaxed-constexpr \
    --expt-extended-lambda -lineinfo -gencode=arch=compute_90a,code=sm_90a -I xla_ffi/include \
    -I xla_ffi/cuda -I "$generated" -I "$cutlass_inc" xla_ffi/cuda/sm90/test/fwd_selftest.cc \
    -o xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest
fi

# ---- tests -------------------------------------------------------------------------------
export JAX_GNA_REQUIRE_BACKENDS=sm80,sm90,halo
want smoke && run_stage smoke 400 python3 tests/gpu/test_kernels_sm80_smoke.py
# Every smoke shape again at head dim 128 (its forward has its own K/V buffering).
want smoke128 && run_stage smoke128 400 env JAX_GNA_SMOKE_HEAD_DIM=128 \
  python3 tests/gpu/test_kernels_sm80_smoke.py
# The same smoke cases through the sm90 kernels (forward and backward; the backward's
# documented refusals are skips), at the default head dims and at 128.
want smoke90 && run_stage smoke90 400 env JAX_GNA_SMOKE_BACKEND=sm90 \
  python3 tests/gpu/test_kernels_sm80_smoke.py
want smoke90 && run_stage smoke90_128 400 env JAX_GNA_SMOKE_BACKEND=sm90 \
  JAX_GNA_SMOKE_HEAD_DIM=128 python3 tests/gpu/test_kernels_sm80_smoke.py
# The halo kernels' own cases (small windows, GQA with shared halos, streamed key lists; the backward too).
want smokehalo && run_stage smokehalo 400 env JAX_GNA_SMOKE_BACKEND=halo \
  python3 tests/gpu/test_kernels_sm80_smoke.py
want sm90self && [ -x xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest ] && \
  run_stage sm90self 500 xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest correct
# The sm90 kernel again with its persistent grid capped at 3 CTAs (JAX_GNA_SM90_MAX_CTAS, a
# test hook of the FFI handler and the self-test), so the small test problems hand many work
# items over inside each CTA (Q buffers, the epilogue overlapping the next item's first GEMM).
want sm90items && [ -x xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest ] && \
  run_stage sm90items_self 500 env JAX_GNA_SM90_MAX_CTAS=3 \
  xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest correct
want sm90items && run_stage sm90items_suite 580 env JAX_GNA_SM90_MAX_CTAS=3 \
  JAX_GNA_TEST_EXAMPLES="${GNA_EXAMPLES:-200}" python3 -m pytest -q -s -x -p no:cacheprovider \
  tests/test_attention.py -k sm90
want suite && run_stage suite 580 env JAX_GNA_TEST_EXAMPLES="${GNA_EXAMPLES:-200}" \
  python3 -m pytest -q -s -x -p no:cacheprovider tests/test_attention.py -k "sm80 or sm90 or halo"
want dispatch && run_stage dispatch 300 python3 -m pytest -q -p no:cacheprovider \
  tests/gpu/test_jit_dispatch.py
want large && run_stage large 400 python3 -m pytest -q -p no:cacheprovider \
  tests/gpu/test_large_tensor.py
if want sanitize; then   # sm80 kernels through JAX: forward, backward, deterministic backward
  for case in ${SANITIZE_CASES:-2d_mixed 3d_causal_t 1d_gqa_extra_causal 2d_extra 3d_query_range 1d_hdim128_causal_gqa}; do
    for tool in memcheck racecheck; do
      run_stage "${tool}_$case" 300 compute-sanitizer --tool "$tool" --kernel-name kns=jax_gna \
        --error-exitcode 9 python3 tests/gpu/test_kernels_sm80_smoke.py -k "$case"
    done
  done
fi
if want sanitize90 && [ -x xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest ]; then
  # self-test cases: rand6 3-D stride/causal/GQA D64; rand7 3-D dilation/extra D128;
  # rand8 3-D dilation/extra D256; rand2 1-D fp16 extra D256 (names: selftest list)
  for case in ${SANITIZE90_CASES:-rand6 rand7 rand8 rand2}; do
    for tool in memcheck racecheck; do
      run_stage "sm90${tool}_$case" 300 env JAX_GNA_SM90_MAX_CTAS=2 compute-sanitizer \
        --tool "$tool" --error-exitcode 9 \
        xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest correct "$case"
    done
  done
fi
if want sanitize90bwd; then   # the sm90 backward kernel through its FFI target
  # At the smoke test's head dims (64: per-warpgroup dQ) and at 128 (the column-split dQ).
  for hd in default 128; do
    for case in ${SANITIZE90BWD_CASES:-2d_mixed 3d_mixed 1d_rising_keys 2d_query_range}; do
      for tool in memcheck racecheck; do
        run_stage "sm90bwd_${tool}_${case}_$hd" 300 env JAX_GNA_SMOKE_BACKEND=sm90 \
          JAX_GNA_SMOKE_HEAD_DIM=$([ $hd = 128 ] && echo 128) compute-sanitizer \
          --tool "$tool" --kernel-name kns=gna_bwd_sm90_kernel --error-exitcode 9 \
          python3 tests/gpu/test_kernels_sm80_smoke.py -k "$case"
      done
    done
  done
fi
if want sanitizehalo; then   # the halo forward through its FFI target
  for case in ${SANITIZEHALO_CASES:-halo_2d_7x7_partial halo_2d_gqa_shared_extra halo_2d_13x13_stream_extra halo_3d_query_range}; do
    for tool in memcheck racecheck synccheck; do
      run_stage "halo_${tool}_$case" 300 env JAX_GNA_SMOKE_BACKEND=halo compute-sanitizer \
        --tool "$tool" --kernel-name kns=halo --error-exitcode 9 \
        python3 tests/gpu/test_kernels_sm80_smoke.py -k "$case"
    done
  done
fi
want reference && run_stage reference 300 python3 scripts/reference_footprint.py \
  --shape 30 48 80 --heads 24 --head-dim 128 --window 18 24 24 --dtype bf16 --repeats 2

# ---- benchmark ---------------------------------------------------------------------------
want bench && run_stage bench 580 python3 benchmarks/run.py ${BENCH_ARGS:---subset} --out "$OUT/bench"
want dit && run_stage dit 400 python3 examples/dit_block.py
want cli && run_stage quickstart 200 python3 examples/quickstart.py
want cli && run_stage profile 200 python3 -m jax_gna.profile -i 30 48 80 -w 18 24 24 \
  -s 16 8 8 --backprop
# Tile sweep (named only): measured time of the simulator's top tile candidates.
if [[ " ${STAGES[*]} " == *" tiles "* ]]; then
  for c in ${SWEEP_CASES:-"hunyuan 1 1 1" "cosmos 1 1 1" "flux 1 1"}; do
    set -- $c
    run_stage "tiles_$1" 200 python3 scripts/tile_sweep.py --case "$1" --stride "${@:2}" \
      --top "${SWEEP_TOP:-8}"
  done
fi
# Nsight Compute of the sm90 forward kernel (named only): one launch per self-test benchmark
# case (NCU_CASES: ';'-separated case names of `sm90_fwd_selftest list`; with
# GNA_BENCH_SWEEP=1 also the `sweep1d wN` cases). NCU_CLOCK: none (default, the clock the
# kernel earns) or base (ncu's locked clock; on the H100 it still read 1.55 GHz for seq32k
# and 1.48 GHz for dense: compare cycles, not times). NCU_SOURCE=1 adds per-instruction
# stall sampling and writes each report and its SASS page (CSV, xz) to $OUT
# (`scripts/ncu_sass_split.py` splits that page into the KV-tile loop and the once-per-item
# code, with source lines). The standalone self-test, not JAX: through JAX ncu listed no GNA
# kernel (even with XLA's command buffers off).
if [[ " ${STAGES[*]} " == *" ncu "* ]] && [ -x xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest ]; then
  IFS=';' read -ra ncu_cases <<< "${NCU_CASES:-seq32k k2048 s2048;dense self-attn 32768;hunyuan k18x24x24 s1}"
  for c in "${ncu_cases[@]}"; do
    name="ncu_$(echo "$c" | tr -c 'A-Za-z0-9_\n' '_')"
    ncu_extra=()
    [ "${NCU_SOURCE:-0}" = 1 ] && ncu_extra=(--section SourceCounters --import-source yes \
      -f -o "$OUT/$name")
    run_stage "$name" 300 ncu --clock-control "${NCU_CLOCK:-none}" -k regex:gna --launch-skip 3 \
      --launch-count 1 --section SpeedOfLight --section ComputeWorkloadAnalysis \
      --section WarpStateStats --section SchedulerStats --section LaunchStats \
      --section Occupancy --section MemoryWorkloadAnalysis ${ncu_extra[@]+"${ncu_extra[@]}"} \
      xla_ffi/cuda/sm90/test/prebuilt/sm90_fwd_selftest bench "$c"
    if [ "${NCU_SOURCE:-0}" = 1 ]; then
      ncu -i "$OUT/$name.ncu-rep" --page details > "$OUT/${name}_details.txt" 2>&1
      ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source sass 2>&1 | xz -6 \
        > "$OUT/${name}_sass.csv.xz"
    fi
  done
fi
# Nsight Compute of a kernel through JAX (named only): `ncu80` profiles the sm80 forward,
# `ncu90jax` the sm90 one, `ncu90bwd` the sm90 backward (forward+backward calls), `ncuhalo`
# the halo forward on a small-window case; one launch per case (NCU80_CASES: ';'-separated
# "name profile-CLI-args"), full set with per-instruction stall sampling; the report, its
# details page and its SASS source page go to $OUT. The kernel is matched by its demangled
# name (the sm80 function name alone is just "fwd_kernel").
for ncu_stage in ncu80 ncu90jax ncu90bwd ncuhalo; do
  [[ " ${STAGES[*]} " == *" $ncu_stage "* ]] || continue
  backprop=()
  cases="flux -i 256 256 -w 80 80 -s 16 16 --heads 24 --head-dim 128;seq32k -i 32768 -w 2048 -s 2048 --heads 24 --head-dim 128"
  case $ncu_stage in
    ncu80) backend=sm80 kernel=sm80::fwd_kernel ;;
    ncu90jax) backend=sm90 kernel=gna_fwd_sm90_kernel ;;
    ncu90bwd) backend=sm90 kernel=gna_bwd_sm90_kernel backprop=(--backprop) ;;
    ncuhalo) backend=halo kernel=halo::fwd_kernel
      cases="nat56 -i 56 56 -w 7 7 --batch 64 --heads 2 --head-dim 32" ;;
  esac
  IFS=';' read -ra ncu_jax_cases <<< "${NCU80_CASES:-$cases}"
  for c in "${ncu_jax_cases[@]}"; do
    name=${ncu_stage}_${c%% *}
    run_stage "$name" 300 env XLA_FLAGS=--xla_gpu_enable_command_buffer= ncu \
      --clock-control none --kernel-name-base demangled -k "regex:$kernel" \
      --launch-skip 2 --launch-count 1 --set full -f -o "$OUT/$name" \
      python3 -m jax_gna.profile ${c#* } --dtype bf16 \
      --backend $backend --warmup 1 --repeats 2 --no-device-trace ${backprop[@]+"${backprop[@]}"}
    ncu -i "$OUT/$name.ncu-rep" --page details > "$OUT/${name}_details.txt" 2>&1
    ncu -i "$OUT/$name.ncu-rep" --page source --csv --print-source sass \
      > "$OUT/${name}_sass.csv" 2>&1
  done
done
# Multi-GPU scaling runs only when named (it needs a machine of several GPUs).
[[ " ${STAGES[*]} " == *" scaling "* ]] && run_stage scaling 580 python3 \
  scripts/multi_gpu_scaling.py ${SCALING_ARGS:-} --json "$OUT/scaling.json"

echo
echo "================ jax_gna GPU check ================"
printf '%s\n' "${SUMMARY[@]}"
[ -f "$OUT/bench/results.md" ] && { echo; cat "$OUT/bench/results.md"; }
exit $FAILED
