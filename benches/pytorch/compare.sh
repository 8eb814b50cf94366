#!/usr/bin/env bash
# The PyTorch baseline comparison: prepares benches/pytorch/.venv (CPU use of the PyPI torch),
# checks the PyTorch model against `edmips inspect`, then runs compare.py (arguments pass on:
# see `compare.sh --help`). EDMIPS=/path/to/edmips picks the binary (default: this checkout's
# release build, target/release/edmips; an `openblas` build lives where CARGO_TARGET_DIR put it).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv"
export EDMIPS="${EDMIPS:-$here/../../target/release/edmips}"

if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import torch, numpy' 2>/dev/null; then
    python3 -m venv "$venv"
    # PyPI's Linux torch wheel is the CUDA build; it runs on the CPU all the same (no GPU is
    # used: every tensor is created on the CPU). A CPU-only wheel index is not reachable here.
    "$venv/bin/pip" install --progress-bar off torch numpy
fi
"$venv/bin/python" - <<'PY'
import torch
print(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}), "
      f"{torch.get_num_threads()} threads by default; benchmarks run on the CPU")
PY

if [ ! -x "$EDMIPS" ]; then
    echo "no edmips binary at $EDMIPS (build it with cargo build --release, or set EDMIPS)" >&2
    exit 1
fi
PYTHONWARNINGS=ignore OMP_NUM_THREADS=1 "$venv/bin/python" "$here/edmips_torch.py" check --edmips "$EDMIPS"
exec "$venv/bin/python" "$here/compare.py" --edmips "$EDMIPS" --python "$venv/bin/python" "$@"
