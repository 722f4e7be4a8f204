#!/bin/bash
# Interleaved A/B runs of the benchmark, for keep-or-remove decisions (bench/ab-pairs.md).
#
# usage: bench/ab.sh OUT PAIRS SCENARIOS "DIR_A|VAR=v ..." "DIR_B|VAR=v ..."
#   DIR_*: a checkout with `npm ci && npm run build` done (two builds, or one build twice with
#   different variables); SCENARIOS: as `--only` (e.g. full,incremental).
# Runs A B, then B A, then A B ...: each pair shares the machine's state of the moment, and
# alternating the order cancels a drift within a pair. Each run's output goes to OUT/{A,B}.N.out.
set -euo pipefail
out=$1 pairs=$2 only=$3 a=$4 b=$5
mkdir -p "$out"
run() {
  local tag=$1 spec=$2 i=$3
  local dir=${spec%%|*} vars=${spec#*|}
  [ "$vars" = "$spec" ] && vars=
  echo "$tag.$i: $dir $vars ($(date -u +%T))"
  # shellcheck disable=SC2086 # the variables are meant to split
  (cd "$dir" && env $vars node dist/bench/run.js --only "$only" --no-write >"$out/$tag.$i.out" 2>"$out/$tag.$i.err")
}
for i in $(seq 1 "$pairs"); do
  if ((i % 2)); then run A "$a" "$i"; run B "$b" "$i"; else run B "$b" "$i"; run A "$a" "$i"; fi
done
grep -H "calls/s ÷ quota while work remained" "$out"/*.out
