#!/usr/bin/env bash
# The GPU machine's one call: runs every CUDA check of edmips from a pack made by
# scripts/gpu-pack.sh (that machine has no Rust), and writes OUT_DIR/summary.json and
# OUT_DIR/log.txt.
#
#   scripts/gpu-check.sh OUT_DIR                 # from the repository root, gpu-pack/ present
#   scripts/gpu-check.sh OUT_DIR --dry-run       # print the plan (commands, time caps); run nothing
#   scripts/gpu-check.sh OUT_DIR --budget 300    # total seconds for the steps (default 480)
#
# Steps, in priority order (each time-boxed with `timeout`; a failing step does not stop the
# others; a step that would not fit in what is left of the budget is recorded as skipped):
#   env            nvidia-smi, the CUDA libraries found, ldd of the binary
#   cuda_kernels   the CUDA test suite (CUDA vs CPU kernels, batch norm, tiny / ResNet-20 steps)
#   golden_*       the golden parity tests on CUDA (EDMIPS_TEST_DEVICE=cuda)
#   bench_*        edmips bench step --device cuda --json: mixres20 b256 (32 px), quantres18_2w2a
#                  and mixres18_w1234a234 b256 (224 px)
#   search_*       a 2-epoch search on the CIFAR-10 subset, a 1-epoch search resumed to 2 (its
#                  checkpoint compared with the 2-epoch one), a 1-epoch retrain of the result
#   pytorch_*      the PyTorch baseline (benches/pytorch) on the same shapes, when it exists
#                  and its `bench` takes --device
#   extra_*        the composed batch norm and the cuDNN binary (when packed), for comparison;
#                  they do not count towards the summary's `ok`
# If the batch-norm CUDA test fails, the later steps run with EDMIPS_CUDA_BN=composed (the
# composed fallback), and the summary says so.
#
# Environment: GPU_PACK_DIR (default gpu-pack), GPU_CHECK_WORK (scratch, default
# /tmp/edmips-gpu-check), GPU_CHECK_DEVICE (default cuda; `cpu` runs the same plan on the CPU,
# to test this script), GPU_CHECK_BUDGET, GPU_CHECK_ONLY (space-separated step names or
# prefixes to run, e.g. "env cuda_kernels bench_"), GPU_CHECK_RUN_ARGS (extra arguments of the
# search/train runs), LD_LIBRARY_PATH (kept; the CUDA libraries' folders are put in front).
set -u

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root" || exit 1

usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}"; }

out="" dry_run=0
budget=${GPU_CHECK_BUDGET:-480}
pack=${GPU_PACK_DIR:-$root/gpu-pack}
work=${GPU_CHECK_WORK:-/tmp/edmips-gpu-check}
device=${GPU_CHECK_DEVICE:-cuda}
only=${GPU_CHECK_ONLY:-}
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) dry_run=1 ;;
        --budget) budget=$2; shift ;;
        --pack) pack=$2; shift ;;
        -h | --help) usage; exit 0 ;;
        -*) echo "gpu-check: unknown option $1" >&2; usage >&2; exit 2 ;;
        *) out=$1 ;;
    esac
    shift
done
if [ -z "$out" ]; then
    usage >&2
    exit 2
fi
mkdir -p "$out/steps" "$out/runs" || exit 1
out=$(cd "$out" && pwd)
log=$out/log.txt
steps_file=$out/steps.jsonl
: >"$log"
: >"$steps_file"

t_start=$(date +%s)
deadline=$((t_start + budget))
reserve=15   # seconds kept for the summary
min_step=10  # a step with less than this left is skipped

say() { printf '%s\n' "$*" | tee -a "$log"; }
now_s() { date +%s.%N; }
json_str() { printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\t/\\t/g' | tr -d '\n\r'; }

selected() { # selected NAME: whether GPU_CHECK_ONLY (if set) names it or a prefix of it
    [ -z "$only" ] || [ "$1" = unpack ] && return 0
    local w
    for w in $only; do
        case $1 in "$w"*) return 0 ;; esac
    done
    return 1
}

# step NAME CAP KIND [VAR=VALUE ...] -- COMMAND ARGS...
# Runs COMMAND under `timeout` (at most CAP seconds and what is left of the budget), stdout and
# stderr to steps/NAME.out and .err, appended to the log; records a line in steps.jsonl.
# STEP_EXTRA, when set, is extra JSON members for that line (e.g. '"run_dir": "runs/x"').
# Returns the command's exit status (124: timed out; 200: skipped).
step() {
    local name=$1 cap=$2 kind=$3
    shift 3
    local envs=()
    while [ $# -gt 0 ] && [ "$1" != "--" ]; do
        envs+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift
    local cmdline
    cmdline=$(printf '%q ' ${envs[@]+"${envs[@]}"} "$@")
    cmdline=${cmdline% }
    local extra=${STEP_EXTRA:-}
    STEP_EXTRA=""
    if ! selected "$name"; then
        return 200
    fi
    if [ "$dry_run" = 1 ]; then
        printf '%-34s %-8s max %4ss  %s\n' "$name" "$kind" "$cap" "$cmdline"
        return 0
    fi
    local left=$((deadline - $(date +%s) - reserve))
    local status rc t wall t0 t1 so=$out/steps/$name.out se=$out/steps/$name.err
    t0=$(now_s)
    if [ "$left" -lt "$min_step" ]; then
        status=skipped rc=200 t=0 wall=0
        say "=== $name: skipped (${left}s left of the ${budget}s budget)"
    else
        t=$cap
        [ "$left" -lt "$t" ] && t=$left
        say ""
        say "=== $name ($kind, max ${t}s, $(( $(date +%s) - t_start ))s into the run)"
        say "\$ $cmdline"
        t0=$(now_s)
        # (a subshell, so that a crash report such as "Segmentation fault" lands in the step's stderr)
        (
            env ${envs[@]+"${envs[@]}"} timeout -k 10 "$t" "$@" </dev/null
            exit $?
        ) >"$so" 2>"$se"
        rc=$?
        t1=$(now_s)
        wall=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')
        case $rc in
            0) status=ok ;;
            124 | 137) status=timeout ;;
            *) status=failed ;;
        esac
        {
            echo "--- stdout"
            cat "$so"
            echo "--- stderr"
            cat "$se"
        } >>"$log"
        say "=== $name: $status (exit $rc, ${wall}s)"
    fi
    printf '{"name": "%s", "kind": "%s", "command": "%s", "status": "%s", "rc": %s, "wall_s": %s, "timeout_s": %s, "started": %s, "stdout": "steps/%s.out", "stderr": "steps/%s.err"%s}\n' \
        "$(json_str "$name")" "$kind" "$(json_str "$cmdline")" "$status" "$rc" "$wall" "$t" \
        "$(( ${t0%.*}+0 ))" "$name" "$name" "${extra:+, $extra}" >>"$steps_file"
    return "$rc"
}

say "edmips gpu-check: out $out, pack $pack, device $device, budget ${budget}s, $(date -u +%FT%TZ)"

# ---- unpack ------------------------------------------------------------------------------
archive=$(ls "$pack"/edmips-gpu.tar.* 2>/dev/null | head -n 1)
bin=$work/pack/bin/edmips
tests=$work/pack/tests
golden=$work/pack/golden
data=$work/data/cifar10-subset
if [ "$dry_run" = 1 ]; then
    echo "plan (budget ${budget}s; a step that does not fit what is left is skipped):"
    printf '%-34s %-8s max %4ss  %s\n' unpack info 60 "tar -x -f ${archive:-<gpu-pack/edmips-gpu.tar.*>} -C $work/pack; tar -xzf .../cifar10-subset.tar.gz -C $work/data"
else
    rm -rf "$work"
    mkdir -p "$work/pack" "$work/data" "$work/runs"
    if [ -z "$archive" ]; then
        say "no $pack/edmips-gpu.tar.* (run scripts/gpu-pack.sh on the build machine and carry gpu-pack)"
    else
        case $archive in
            *.zst) dec="zstd -dc --long=31" ;;
            *.xz) dec="xz -dc -T0" ;;
            *) dec="cat" ;;
        esac
        if [ "${dec%% *}" = xz ] && ! command -v xz >/dev/null 2>&1; then
            dec="python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), sys.stdout.buffer)'"
        fi
        mkdir -p "$data"
        step unpack 60 info -- bash -c "$dec '$archive' | tar -x -C '$work/pack' && tar -xzf '$work/pack/data/cifar10-subset.tar.gz' -C '$data' && ls -la '$work/pack/bin' '$work/pack/tests' '$data' && cat '$work/pack/manifest.json'"
        cp "$work/pack/manifest.json" "$out/pack-manifest.json" 2>/dev/null
    fi
fi

# ---- CUDA libraries (README of ../shared/cuda) --------------------------------------------
libs="libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libcudart.so.13 libnvrtc.so.13 libcudnn.so.9"
find_libs() {
    local roots=() d
    for d in /usr/local/cuda /usr/local/cuda-13.0 /usr/local /usr/lib/x86_64-linux-gnu /usr/lib64 /opt; do
        [ -d "$d" ] && roots+=("$d")
    done
    local py
    py=$(python3 -c 'import site, sys; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null)
    for d in $py; do [ -d "$d/nvidia" ] && roots+=("$d/nvidia"); [ -d "$d/torch/lib" ] && roots+=("$d/torch/lib"); done
    local args=() l
    for l in $libs; do args+=(-o -name "$l"); done
    [ ${#roots[@]} -gt 0 ] || return 0
    timeout 60 find ${roots[@]+"${roots[@]}"} -xdev \( "${args[@]:1}" \) -printf '%h/%f\n' 2>/dev/null
}
if [ "$dry_run" = 0 ] && [ "$device" != cpu ]; then
    found=$(find_libs)
    missing=""
    for l in $libs; do echo "$found" | grep -q "/$l\$" || missing="$missing $l"; done
    if [ -n "$missing" ]; then
        say "not found in the usual places:$missing; searching / (at most 60 s)"
        found=$(printf '%s\n%s\n' "$found" "$(timeout 60 find / -xdev \( -name libcublas.so.13 -o -name libcurand.so.10 -o -name libcudart.so.13 -o -name libnvrtc.so.13 -o -name libcudnn.so.9 -o -name libcublasLt.so.13 \) -printf '%h/%f\n' 2>/dev/null)")
    fi
    # In the order found (system CUDA first, then Python packages), each folder once.
    libdirs=$(echo "$found" | grep . | xargs -r -n1 dirname | awk '!seen[$0]++' | paste -sd:)
    export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    say "CUDA libraries: $(echo "$found" | grep . | sort -u | paste -sd' ')"
    say "LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
    echo "$found" | grep . | sort -u >"$out/libs.txt"
fi

# ---- GPU sampler: memory and utilisation every 0.5 s (summary: per-step peaks) -------------
sampler=""
if [ "$dry_run" = 0 ] && command -v nvidia-smi >/dev/null 2>&1 && [ "$device" != cpu ]; then
    nvidia-smi --query-gpu=timestamp,memory.used,utilization.gpu --format=csv,noheader,nounits -lms 500 \
        >"$out/gpu-samples.csv" 2>/dev/null &
    sampler=$!
fi

# ---- the steps --------------------------------------------------------------------------
step env 30 env -- bash -c "nvidia-smi; nvidia-smi --query-gpu=name,driver_version,memory.total,compute_cap --format=csv; echo; ldd '$bin'; echo; python3 -c 'import torch; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available())' 2>&1 | tail -n 1"

test_env=(EDMIPS_GOLDEN="$golden")
step cuda_kernels 180 tests "${test_env[@]}" -- "$tests/cuda_kernels" --test-threads=1
if [ "$dry_run" = 0 ] && grep -q "batch_norm_cuda_matches_cpu .*FAILED" "$out/steps/cuda_kernels.out" 2>/dev/null; then
    export EDMIPS_CUDA_BN=composed
    say "the fused batch-norm CUDA test failed: the later steps use EDMIPS_CUDA_BN=composed"
fi
for t in golden_quantizers golden_mix_conv engine_tiny_steps engine_resnet18_step; do
    step "$t" 90 tests "${test_env[@]}" EDMIPS_TEST_DEVICE="$device" -- "$tests/$t" --test-threads=1 --nocapture
done

bench() { # bench NAME ARCH BATCH ITERS WARMUP [BIN]
    step "$1" 120 bench -- "${6:-$bin}" bench step -a "$2" -b "$3" --iters "$4" --warmup "$5" --device "$device" --json
}
bench bench_mixres20_w1234a234_b256 mixres20_w1234a234 256 10 3
bench bench_quantres18_2w2a_b256 quantres18_2w2a 256 5 2
bench bench_mixres18_w1234a234_b256 mixres18_w1234a234 256 5 2

runs=$work/runs
# GPU_CHECK_RUN_ARGS: extra arguments of the runs (e.g. "--max-steps 3 --max-val-batches 2" to
# test this script on a CPU).
read -r -a run_extra <<<"${GPU_CHECK_RUN_ARGS:-}"
common=(-a mixres20_w1234a234 --step-epoch 1 -b 256 -j 8 -p 5 --device "$device" ${run_extra[@]+"${run_extra[@]}"})
STEP_EXTRA='"run_dir": "runs/search2"'
step search2 150 search -- "$bin" search "${common[@]}" --epochs 2 --out "$runs/search2" "$data"
STEP_EXTRA='"run_dir": "runs/search1"'
step search1 100 search -- "$bin" search "${common[@]}" --epochs 1 --out "$runs/search1" "$data"
STEP_EXTRA='"run_dir": "runs/search1"'
step search1_resume 100 search -- "$bin" search "${common[@]}" --epochs 2 --resume "$runs/search1/checkpoint.safetensors" "$data"
step resume_matches 30 compare -- python3 "$here/gpu_summary.py" --compare-checkpoints \
    "$runs/search2/checkpoint.safetensors" "$runs/search1/checkpoint.safetensors"
STEP_EXTRA='"run_dir": "runs/train1"'
step train1 100 search -- "$bin" train -a quantres20_cfg --ac "$runs/search2/arch.json" --epochs 1 -b 256 -j 8 -p 5 \
    --device "$device" ${run_extra[@]+"${run_extra[@]}"} --out "$runs/train1" "$data"
if [ "$dry_run" = 0 ]; then
    for r in search2 search1 train1; do
        mkdir -p "$out/runs/$r"
        cp "$runs/$r"/{metrics.jsonl,arch.json,config.resolved.toml} "$out/runs/$r/" 2>/dev/null
    done
fi

# PyTorch baseline: the tree's benches/pytorch, or the copy in the pack.
torch_py=""
for f in "$root/benches/pytorch/edmips_torch.py" "$work/pack/pytorch/edmips_torch.py"; do
    [ -f "$f" ] && { torch_py=$f; break; }
done
if [ -n "$torch_py" ] && { [ "$dry_run" = 1 ] || python3 "$torch_py" bench --help 2>/dev/null | grep -q -- '--device'; }; then
    for row in "mixres20_w1234a234 256 10 3" "quantres18_2w2a 256 5 2" "mixres18_w1234a234 256 5 2"; do
        set -- $row
        step "pytorch_${1}_b$2" 120 pytorch -- python3 "$torch_py" bench -a "$1" -b "$2" --iters "$3" --warmup "$4" --device "$device" --json
    done
elif [ -n "$torch_py" ]; then
    say "PyTorch baseline $torch_py has no --device option (CPU only): skipped"
else
    say "no PyTorch baseline (benches/pytorch/edmips_torch.py): skipped"
fi

# Extras, for comparison: the composed batch norm, and the cuDNN build when packed.
if [ "${EDMIPS_CUDA_BN:-}" != composed ]; then
    step extra_bench_mixres20_b256_composed_bn 120 bench EDMIPS_CUDA_BN=composed -- "$bin" bench step \
        -a mixres20_w1234a234 -b 256 --iters 10 --warmup 3 --device "$device" --json
fi
if [ "$dry_run" = 0 ] && [ -x "$work/pack/bin/edmips-cudnn" ] && ! grep -q 'libcudnn.so.9$' "$out/libs.txt" 2>/dev/null; then
    say "the pack has a cuDNN binary but this machine has no libcudnn.so.9: its benches skipped"
elif [ -x "$work/pack/bin/edmips-cudnn" ] || { [ "$dry_run" = 1 ] && grep -q '"bin/edmips-cudnn"' "$pack/manifest.json" 2>/dev/null; }; then
    bench extra_cudnn_bench_mixres20_w1234a234_b256 mixres20_w1234a234 256 10 3 "$work/pack/bin/edmips-cudnn"
    bench extra_cudnn_bench_quantres18_2w2a_b256 quantres18_2w2a 256 5 2 "$work/pack/bin/edmips-cudnn"
    bench extra_cudnn_bench_mixres18_w1234a234_b256 mixres18_w1234a234 256 5 2 "$work/pack/bin/edmips-cudnn"
fi

[ -n "$sampler" ] && kill "$sampler" 2>/dev/null
[ "$dry_run" = 1 ] && exit 0

# ---- summary ----------------------------------------------------------------------------
say ""
say "=== summary ($(( $(date +%s) - t_start ))s)"
if command -v python3 >/dev/null 2>&1; then
    python3 "$here/gpu_summary.py" "$out" --budget "$budget" --started "$t_start" --device "$device" \
        --cuda-bn "${EDMIPS_CUDA_BN:-fused}" 2>&1 | tee -a "$log"
else
    say "no python3: summary.json not written (steps.jsonl has every step)"
fi
say "done in $(( $(date +%s) - t_start ))s: $out/summary.json, $out/log.txt"
exit 0
