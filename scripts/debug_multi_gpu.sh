#!/usr/bin/env bash
# Diagnose a crash of the multi-GPU scaling script: Python stack (faulthandler), the same run
# with XLA command buffers off, and a host backtrace under cuda-gdb. Needs >= 2 GPUs.
#   bash scripts/debug_multi_gpu.sh "<scaling args>"
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/gna_out}"; mkdir -p "$OUT"
bash scripts/gpu_check.sh build >/dev/null 2>&1
export PYTHONPATH=/tmp/gna_site JAX_GNA_CUDA_LIBRARY="$PWD/.carry/libjax_gna_cuda.so"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0
ARGS=${1:-"--modes context --directions fwdbwd --devices 2 --warmup 1 --repeats 1"}
echo "== faulthandler"; timeout 180 python3 -X faulthandler scripts/multi_gpu_scaling.py $ARGS \
  > "$OUT/fault.log" 2>&1; echo "rc=$?"; grep -v "^\s*$" "$OUT/fault.log" | tail -25
echo "== command buffers off"; XLA_FLAGS=--xla_gpu_enable_command_buffer= timeout 180 python3 \
  scripts/multi_gpu_scaling.py $ARGS > "$OUT/nocmdbuf.log" 2>&1; echo "rc=$?"
tail -4 "$OUT/nocmdbuf.log"
echo "== cuda-gdb"; timeout 200 cuda-gdb -q -batch -ex run -ex bt -ex "info threads" --args \
  python3 scripts/multi_gpu_scaling.py $ARGS > "$OUT/gdb.log" 2>&1; echo "rc=$?"
grep -A40 "SIGSEGV" "$OUT/gdb.log" | head -60
