#!/usr/bin/env bash
# GPU smoke test, inside the Docker image on a machine with an NVIDIA GPU:
#   docker run --gpus all --rm lima-studio bench/gpu_smoke.sh
# Trains the dialogue variant a few steps on a small base, serves it with vLLM, chats through the
# openai client, and prints training tokens/s with MFU, time to first token and decode tokens/s.
# Installs nothing: it uses the image's two environments and its baked-in embedded model wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi -L
export LIMA_HOME="${LIMA_HOME:-$(mktemp -d /tmp/lima-smoke-XXXX)}"
export PYTHONPATH="${PYTHONPATH:-}:$(pwd)"
exec python3 bench/gpu_smoke.py "$@"
