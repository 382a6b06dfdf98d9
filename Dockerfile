# metarec worker image: `metarec worker` by default; any metarec command with `docker run IMAGE <command>`.
#
# CPU by default: torch comes from the PyTorch CPU wheel index, which keeps the image free of CUDA libraries.
# For NVIDIA GPUs build with a CUDA index (the compose file's `gpu` profile does), e.g.
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 -t metarec:gpu .
FROM python:3.11-slim

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch first, from its own index, in its own layer: it is by far the largest and changes least often.
RUN pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"

COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY models ./models
COPY stream ./stream
RUN pip install . && python -c "import stream.cli, models.serving.recommender"

RUN useradd --create-home --uid 10001 metarec \
    && mkdir -p /var/lib/metarec /models \
    && chown metarec:metarec /var/lib/metarec /models
USER metarec

# Inside a container the metrics endpoint must listen on all interfaces for Prometheus to reach it.
ENV METAREC_DATA_DIR=/var/lib/metarec \
    METAREC_METRICS_HOST=0.0.0.0 \
    METAREC_METRICS_PORT=9464
EXPOSE 9464
VOLUME ["/var/lib/metarec"]

ENTRYPOINT ["metarec"]
CMD ["worker"]
