#!/usr/bin/env bash
# Builds, on this machine, what scripts/gpu-check.sh runs on the GPU machine (which has no Rust
# and no network), and packs it into gpu-pack/ (git-ignored): one archive of at most 64 MiB,
# named in the device tool's `carry`.
#
#   scripts/gpu-pack.sh [--cudnn] [--train N] [--val N]
#
#   --cudnn      also build the `cudnn` feature (scripts/cuda-toolchain.sh installs cuDNN 9)
#                and pack it as bin/edmips-cudnn; gpu-check benches it beside the cuda binary
#   --train N, --val N   images of the CIFAR-10 subset (default 5000 / 1000, balanced per class)
#
# The archive gpu-pack/edmips-gpu.tar.xz holds:
#   bin/edmips                the `--features cuda` binary, debug info stripped
#   bin/edmips-cudnn          (--cudnn) the `--features cudnn` binary
#   tests/<name>              the test binaries gpu-check runs: cuda_kernels and the golden
#                             parity tests that take EDMIPS_TEST_DEVICE
#   golden/*.json             the golden files those tests read (from ../shared/golden)
#   data/cifar10-subset.tar.gz   train/ and val/ ImageFolder subset of ../shared/data/cifar10.tar.gz
#   pytorch/                  benches/pytorch, when it exists (the PyTorch baseline)
#   manifest.json             commit, features, toolchain, files with sizes and sha256
#
# Environment: CARGO_TARGET_DIR (default target/cuda, as .ci/run), EDMIPS_SHARED (default
# ../shared), GPU_PACK_DIR (default gpu-pack).
#
# Do not point CARGO_TARGET_DIR at another checkout's target folder (e.g. a git worktree
# building into the main checkout's target/cuda to reuse candle-kernels): cargo gives both
# checkouts' crates the same artifact names, so one checkout's edmips-core can be linked into
# the other's build. Copy the folder instead (`cp -a`; candle-kernels stays fresh in the copy).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
cd "$root"

cudnn=0 n_train=5000 n_val=1000
while [ $# -gt 0 ]; do
    case $1 in
        --cudnn) cudnn=1 ;;
        --train) n_train=$2; shift ;;
        --val) n_val=$2; shift ;;
        -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "gpu-pack: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

shared=${EDMIPS_SHARED:-$root/../shared}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$root/target/cuda}
export CARGO_TERM_COLOR=never
pack=${GPU_PACK_DIR:-$root/gpu-pack}
stage=$CARGO_TARGET_DIR/gpu-pack-stage
limit=$((64 * 1024 * 1024))
tests=(cuda_kernels golden_quantizers golden_mix_conv engine_tiny_steps engine_resnet18_step)
golden_files=(hwgq.json gauss_weight.json mix_activ_conv.json tiny_search_step.json search_step.json)

if [ "$cudnn" = 1 ]; then
    # shellcheck disable=SC1091
    source "$here/cuda-toolchain.sh"
else
    # shellcheck disable=SC1091
    source "$shared/cuda/toolchain.sh"
fi

rm -rf "$stage"
mkdir -p "$stage/bin" "$stage/tests" "$stage/golden" "$stage/data" "$pack"

# Test executables of one feature set, from cargo's JSON messages (cargo builds them if needed).
test_paths() {
    local args=()
    for t in "${tests[@]}"; do args+=(--test "$t"); done
    cargo test --release --features "$1" --no-run --message-format=json "${args[@]}" |
        python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])
'
}

build_bin() { # build_bin FEATURES -> path of the edmips binary (a second or two when fresh)
    cargo build --release --features "$1" --bin edmips >&2
    echo "$CARGO_TARGET_DIR/release/edmips"
}

echo "== cuda binary and tests (CARGO_TARGET_DIR=$CARGO_TARGET_DIR)"
cp "$(build_bin cuda)" "$stage/bin/edmips"
test_paths cuda >"$stage/test-paths.txt"
for t in "${tests[@]}"; do
    exe=$(awk -v t="$t" '$1 == t { print $2 }' "$stage/test-paths.txt" | tail -n 1)
    [ -n "$exe" ] || { echo "gpu-pack: no executable for test $t" >&2; exit 1; }
    cp "$exe" "$stage/tests/$t"
done
rm "$stage/test-paths.txt"
if [ "$cudnn" = 1 ]; then
    echo "== cudnn binary"
    # Same target folder: the cudnn feature changes cudarc and candle-core, not candle-kernels.
    cp "$(build_bin cudnn)" "$stage/bin/edmips-cudnn"
    # Leave the target's edmips as the cuda build (what .ci/run and the tests expect).
    cargo build --release --features cuda --bin edmips >&2
fi
for f in "$stage"/bin/* "$stage"/tests/*; do
    strip --strip-debug "$f"
done

echo "== golden data and CIFAR-10 subset ($n_train train / $n_val val)"
for g in "${golden_files[@]}"; do
    cp "$shared/golden/$g" "$stage/golden/"
done
python3 - "$shared/data/cifar10.tar.gz" "$stage/data/cifar10-subset.tar.gz" "$n_train" "$n_val" <<'PY'
import sys, tarfile
src, dst, n_train, n_val = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with tarfile.open(src, "r:gz") as t:
    members = [m for m in t.getmembers() if m.isfile() and m.name.endswith(".jpg")]
    by = {}
    for m in members:
        split, cls, _ = m.name.split("/", 2)
        by.setdefault((split, cls), []).append(m)
    classes = sorted({c for _, c in by})
    want = {"train": n_train // len(classes), "val": n_val // len(classes)}
    keep = []
    for (split, cls), ms in sorted(by.items()):
        keep += sorted(ms, key=lambda m: m.name)[: want.get(split, 0)]
    with tarfile.open(dst, "w:gz") as out:
        for m in keep:
            out.addfile(m, t.extractfile(m))
print(f"{len(keep)} images, {len(classes)} classes, {want['train']} train and {want['val']} val per class")
PY
if [ -d benches/pytorch ]; then
    mkdir -p "$stage/pytorch"
    find benches/pytorch -maxdepth 1 -type f \( -name '*.py' -o -name '*.sh' -o -name '*.md' \) -exec cp {} "$stage/pytorch/" \;
fi

python3 - "$stage" "$cudnn" <<'PY'
import hashlib, json, os, subprocess, sys, time
stage, cudnn = sys.argv[1], sys.argv[2] == "1"
def run(*cmd):
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip()
    except OSError:
        return None
files = {}
for d, _, fs in os.walk(stage):
    for f in sorted(fs):
        p = os.path.join(d, f)
        with open(p, "rb") as h:
            files[os.path.relpath(p, stage)] = {"bytes": os.path.getsize(p), "sha256": hashlib.sha256(h.read()).hexdigest()}
manifest = {
    "commit": run("git", "rev-parse", "HEAD"),
    "branch": run("git", "rev-parse", "--abbrev-ref", "HEAD"),
    "dirty": bool(run("git", "status", "--porcelain", "--untracked-files=no")),
    "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    "features": ["cuda"] + (["cudnn"] if cudnn else []),
    "nvcc": (run("nvcc", "--version") or "").splitlines()[-2:],
    "cuda_compute_cap": os.environ.get("CUDA_COMPUTE_CAP"),
    "files": files,
}
with open(os.path.join(stage, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
PY

echo "== compress"
rm -f "$pack"/edmips-gpu.tar.*
tar -C "$stage" -cf - . | xz -9 -T2 >"$pack/edmips-gpu.tar.xz"
cp "$stage/manifest.json" "$pack/manifest.json"
du -b "$stage"/bin/* "$stage"/tests/* "$stage"/data/* | awk '{ printf "  %8.1f MiB  %s\n", $1 / 1048576, $2 }'
total=$(du -cb "$pack"/* | tail -n 1 | cut -f1)
printf 'gpu-pack: %s holds %.1f MiB (limit 64 MiB) from %.1f MiB unpacked\n' "$pack" \
    "$(echo "$total / 1048576" | bc -l)" "$(du -sb "$stage" | awk '{ print $1 / 1048576 }')"
if [ "$total" -ge "$limit" ]; then
    echo "gpu-pack: over the 64 MiB limit" >&2
    exit 1
fi
echo "carry: [\"gpu-pack\"]; run: scripts/gpu-check.sh \$OUT"
