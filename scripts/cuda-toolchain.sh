#!/usr/bin/env bash
# The CUDA 13.0 build toolchain of ../shared/cuda/toolchain.sh, plus cuDNN 9 for CUDA 13 (the
# `nvidia-cudnn-cu13` wheel from PyPI) for building `--features cudnn` (candle's cuDNN
# convolution). Like toolchain.sh it is for BUILDING only; the binary loads libcudnn.so.9 on the
# GPU machine (PyTorch's wheels ship one; scripts/gpu-check.sh finds it).
#
#   source scripts/cuda-toolchain.sh [PREFIX]       # default PREFIX: $HOME/.cache/cuda13
#   cargo build --release --features cudnn
#
# What candle's cudnn build needs: cudarc's `cudnn` feature carries pre-generated bindings for
# the cuDNN 9.21 API (no headers, no bindgen) and, with `dynamic-linking`, links `-lcudnn`. So
# the build needs only a `libcudnn.so` on the linker's search path: this script installs the
# wheel into PREFIX/cudnn/pip, links PREFIX/cudnn/lib64/libcudnn.so -> libcudnn.so.9 (the wheel
# ships only the versioned name) and PREFIX/cudnn/include -> the wheel's headers, and puts
# PREFIX/cudnn/lib64 in front of LIBRARY_PATH. CUDNN_LIB is deliberately not exported: cudarc's
# build script reruns when it changes, which would rebuild cudarc and candle for the plain
# `cuda` feature as well. EDMIPS_CUDNN_LIB is the wheel's library folder (for LD_LIBRARY_PATH,
# to run a cudnn build's NVRTC check here).
#
# The runtime libcudnn.so.9 may be another 9.x: candle calls only long-standing cuDNN entry
# points (handle, tensor/filter/convolution descriptors, forward convolution and its algorithm
# query), which every 9.x exports.
_edmips_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck disable=SC1091
source "$_edmips_here/../../shared/cuda/toolchain.sh" "$@" || { return 1 2>/dev/null || exit 1; }
_edmips_cudnn=${1:-$HOME/.cache/cuda13}/cudnn
_edmips_cudnn_version=9.21.1.3
if [ ! -e "$_edmips_cudnn/lib64/libcudnn.so" ]; then
    mkdir -p "$_edmips_cudnn/lib64"
    python3 -m pip install -q --disable-pip-version-check --no-deps --target "$_edmips_cudnn/pip" \
        "nvidia-cudnn-cu13==$_edmips_cudnn_version" ||
        { echo "cuda-toolchain: pip install of nvidia-cudnn-cu13 failed" >&2; return 1 2>/dev/null || exit 1; }
    _edmips_so=$(find "$_edmips_cudnn/pip" -name 'libcudnn.so.9*' | sort | head -n 1)
    [ -n "$_edmips_so" ] || { echo "cuda-toolchain: no libcudnn.so.9 in the wheel" >&2; return 1 2>/dev/null || exit 1; }
    ln -sfn "$_edmips_so" "$_edmips_cudnn/lib64/libcudnn.so"
    _edmips_h=$(find "$_edmips_cudnn/pip" -name cudnn_version.h | head -n 1)
    [ -n "$_edmips_h" ] && ln -sfn "$(dirname "$_edmips_h")" "$_edmips_cudnn/include"
fi
export EDMIPS_CUDNN_LIB
EDMIPS_CUDNN_LIB=$(dirname "$(readlink -f "$_edmips_cudnn/lib64/libcudnn.so")")
export LIBRARY_PATH=$_edmips_cudnn/lib64${LIBRARY_PATH:+:$LIBRARY_PATH}
echo "cudnn: $(readlink -f "$_edmips_cudnn/lib64/libcudnn.so") (nvidia-cudnn-cu13 $_edmips_cudnn_version)"
