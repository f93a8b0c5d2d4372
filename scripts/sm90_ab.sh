#!/usr/bin/env bash
# Interleaved A/B timing of sm90 self-test binaries (xla_ffi/cuda/sm90/test/prebuilt/BIN) on
# chosen benchmark cases: BINS="a b" CASES="k80 s16x16;s2048" [ITERS=30 REPS=3] bash scripts/sm90_ab.sh
# Prints every timing line as it comes (prefixed with the binary), then a table: per case,
# each binary's times and its mean's change against the first binary's (scripts/sm90_ab_table.py).

P=xla_ffi/cuda/sm90/test/prebuilt
log=$(mktemp)
export GNA_BENCH_ITERS=${ITERS:-30}
IFS=';' read -ra cases <<< "${CASES:-k80 s16x16;s16x8x8;s2048;dense self;k80 s1x1;q8x4x4 kv4x8x4}"
for rep in $(seq "${REPS:-3}"); do
  for c in "${cases[@]}"; do
    for b in $BINS; do
      $P/$b bench "$c" 2>&1 | grep "^\[" | sed "s/^/$b /" | tee -a "$log"
    done
  done
done
python3 "$(dirname "$0")/sm90_ab_table.py" "$log"
rm -f "$log"
