#!/usr/bin/env bash
# Reproduces the CIFAR-10 experiment from a fresh clone (see README.md here):
#   experiments/cifar10/run.sh            # the experiment (101 min on 2 cores)
#   experiments/cifar10/run.sh --tiny     # the same sweep file at smoke size on CIFAR-10 (~1 min)
# Environment: CIFAR10_TAR (default ../shared/data/cifar10.tar.gz), CIFAR10_DIR (where it is
# unpacked, default target/cifar10), OUT (the sweep folder, default sweeps/cifar10 or
# sweeps/cifar10-tiny). A rerun with the same OUT continues a killed sweep exactly.
# The figures are collected into experiments/cifar10/results/ (not for --tiny).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
tiny=0
if [[ "${1:-}" == "--tiny" ]]; then tiny=1; shift; fi
tar_file="${CIFAR10_TAR:-../shared/data/cifar10.tar.gz}"
data="${CIFAR10_DIR:-target/cifar10}"
if [[ ! -d "$data/train" || ! -d "$data/val" ]]; then
  [[ -f "$tar_file" ]] || { echo "run.sh: CIFAR-10 archive $tar_file not found (set CIFAR10_TAR)" >&2; exit 1; }
  mkdir -p "$data.partial"
  tar xzf "$tar_file" -C "$data.partial"
  rm -rf "$data" && mv "$data.partial" "$data"
fi
cargo build --release --bin edmips
sets=()
if (( tiny )); then
  out="${OUT:-sweeps/cifar10-tiny}"
  sets=(--set train.epochs=1 --set train.max_steps_per_epoch=2 --set train.max_val_batches=2 --set train.batch_size=32)
else
  out="${OUT:-sweeps/cifar10}"
fi
mkdir -p "$out"
start=$(date +%s)
echo "run.sh: $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)" | tee -a "$out/run.log"
target/release/edmips sweep experiments/cifar10/sweep.toml "$data" --out "$out" -j 2 "${sets[@]}" "$@" 2>&1 | tee -a "$out/run.log"
echo "run.sh: wall $(( $(date +%s) - start )) s" | tee -a "$out/run.log"
if (( ! tiny )); then
  res=experiments/cifar10/results
  mkdir -p "$res"
  cp "$out"/results.{md,csv,json} "$out"/summary.{md,json} "$out"/pareto.svg "$out"/run.log "$res"/
  for cell in "$out"/cell-*; do
    n=$(basename "$cell")
    cp "$cell/search/arch.svg" "$res/$n-arch.svg"
    cp "$cell/search/arch.json" "$res/$n-arch.json"
    cp "$cell/search/curves.svg" "$res/$n-search-curves.svg"
    cp "$cell/search/metrics.jsonl" "$res/$n-search-metrics.jsonl"
    cp "$cell/retrain/metrics.jsonl" "$res/$n-retrain-metrics.jsonl"
  done
  for base in "$out"/baseline-*; do
    cp "$base/retrain/metrics.jsonl" "$res/$(basename "$base")-retrain-metrics.jsonl"
  done
  echo "run.sh: results in $res"
fi
