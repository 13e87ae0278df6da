#!/usr/bin/env bash
# The llama.cpp baseline of bench/serve.py: builds llama-server and llama-quantize, and installs
# llama-cpp-python (its per-token logits give llama.cpp's perplexity on the same tokens).
# Benchmark tools only, never product dependencies. About 10 minutes on 2 cores.
#
#     bench/llama_cpp.sh [PYTHON]          # PYTHON: the venv's python (default .venv/bin/python)
#
# llama.cpp's sources come from the llama-cpp-python sdist on PyPI, which vendors them. The binaries
# go to $LIMA_CACHE/llama.cpp/bin (default ~/.cache/lima-studio), where bench/serve.py looks.
# Instruction sets are chosen from /proc/cpuinfo instead of -march=native, and AMX stays off: some
# virtual machines advertise AMX and fault on it (seen here: llama-server died with SIGILL).
set -euo pipefail

VERSION=0.3.36
PYTHON=${1:-.venv/bin/python}
DEST=${LIMA_CACHE:-$HOME/.cache/lima-studio}/llama.cpp
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

FLAGS="-DGGML_NATIVE=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
for pair in avx:AVX avx2:AVX2 fma:FMA f16c:F16C avx_vnni:AVX_VNNI avx512f:AVX512 avx512_vbmi:AVX512_VBMI \
            avx512_vnni:AVX512_VNNI avx512_bf16:AVX512_BF16; do
    flag=${pair%%:*}
    if grep -qw "$flag" /proc/cpuinfo; then FLAGS="$FLAGS -DGGML_${pair##*:}=ON"; else FLAGS="$FLAGS -DGGML_${pair##*:}=OFF"; fi
done

"$PYTHON" -m pip download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$WORK"
tar xzf "$WORK/llama_cpp_python-$VERSION.tar.gz" -C "$WORK"
SRC="$WORK/llama_cpp_python-$VERSION/vendor/llama.cpp"
# shellcheck disable=SC2086  # FLAGS is a list of cmake options
cmake -S "$SRC" -B "$WORK/build" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF -DLLAMA_CURL=OFF \
    -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON $FLAGS >/dev/null
cmake --build "$WORK/build" --target llama-server llama-quantize -j "$(nproc)" >/dev/null
mkdir -p "$DEST/bin"
cp "$WORK/build/bin/llama-server" "$WORK/build/bin/llama-quantize" "$DEST/bin/"

CMAKE_ARGS="$FLAGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) \
    "$PYTHON" -m pip install --quiet "$WORK/llama_cpp_python-$VERSION.tar.gz" diskcache jinja2
echo "llama-server: $DEST/bin/llama-server"
