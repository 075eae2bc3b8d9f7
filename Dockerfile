# syntax=docker/dockerfile:1
# One image for every SoundSentry service: `docker run IMAGE ingest|featurizer|classifier|alerter`.
# Runtime dependencies only: the train/plot/dev extras (PyTorch alone is gigabytes) stay out.
#
#   docker build -t ghcr.io/soundsentry/soundsentry:0.1.0 .

# Both stages share one pinned base, so the venv's interpreter path and ABI match.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ARG TARGETARCH
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
# faust-streaming publishes x86_64 wheels only: elsewhere (arm64, e.g. Apple silicon) pip
# compiles its Cython speedups from the sdist. The compiler stays in this stage, so its exact
# version does not reach the image.
# hadolint ignore=DL3008
RUN if [ "${TARGETARCH:-amd64}" != "amd64" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends gcc libc6-dev \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
# Only what the wheel is built from; shared/soundsentry/services is a symlink to ../../services,
# which COPY keeps as a link, so services/ must sit beside shared/.
COPY pyproject.toml README.md ./
COPY shared/ shared/
COPY services/ services/
# A venv without pip (nothing in the image can install packages), filled by the base image's pip;
# --prefer-binary: an older wheel rather than compiling a newer sdist.
RUN --mount=type=cache,target=/root/.cache/pip \
    python -m pip wheel --no-deps --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/venv \
    && python -m pip --python /opt/venv/bin/python install --prefer-binary /wheels/soundsentry-*.whl

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="SoundSentry" \
      org.opencontainers.image.description="Real-time detection of sounds that matter from many microphones, on Apache Kafka." \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/soundsentry/soundsentry" \
      org.opencontainers.image.documentation="https://github.com/soundsentry/soundsentry#readme"
# Bytecode was compiled at install time and the root filesystem may be read-only; numba (librosa's
# JIT cache) and Faust's data directory then need a writable place, which /tmp is. The services
# bind loopback by default; in a container they must listen on its interface (the network
# policies guard the ports).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    SOUNDSENTRY_INGEST_HOST=0.0.0.0 \
    SOUNDSENTRY_INGEST_METRICS_HOST=0.0.0.0 \
    SOUNDSENTRY_FEATURIZER_METRICS_HOST=0.0.0.0 \
    SOUNDSENTRY_CLASSIFIER_METRICS_HOST=0.0.0.0 \
    SOUNDSENTRY_ALERTER_METRICS_HOST=0.0.0.0
RUN groupadd --system --gid 10001 soundsentry \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin soundsentry
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
# Owned by root and read-only to the service user; the model directory defaults to ./models.
COPY models/ /app/models/
COPY examples/ /app/examples/
USER 10001:10001
# gRPC ingest, then the /metrics ports of ingest, featurizer, classifier and alerter.
EXPOSE 50051 9101 9102 9103 9104
ENTRYPOINT ["soundsentry"]
CMD ["--help"]
