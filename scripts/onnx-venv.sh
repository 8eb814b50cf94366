#!/usr/bin/env bash
# Prepares the Python environment of the independent export checks (tests/export_onnx.rs):
# a venv in target/onnx-venv (git-ignored) with onnx, onnxruntime, qonnx and numpy from PyPI.
# Idempotent: a venv that already imports all four is kept. EDMIPS_ONNX_VENV=DIR puts it
# elsewhere. Prints the venv's python path as its last line, so callers can
# `export EDMIPS_ONNX_PYTHON="$(scripts/onnx-venv.sh | tail -n1)"`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${EDMIPS_ONNX_VENV:-$root/target/onnx-venv}"
py="$venv/bin/python"
check='import onnx, onnxruntime, qonnx, numpy'
if [ ! -x "$py" ] || ! "$py" -c "$check" 2>/dev/null; then
    echo "creating $venv (onnx, onnxruntime, qonnx, numpy from PyPI)" >&2
    python3 -m venv "$venv"
    "$py" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        onnx==1.23.2 onnxruntime==1.32.0 qonnx==1.0.0 numpy==2.4.6 >&2
    "$py" -c "$check"
fi
"$py" - >&2 <<'PY'
import onnx, onnxruntime, numpy
from importlib.metadata import version
print(f"onnx {onnx.__version__}, onnxruntime {onnxruntime.__version__}, "
      f"qonnx {version('qonnx')}, numpy {numpy.__version__}")
PY
echo "$py"
