# syntax=docker/dockerfile:1
# kis-stream: one image for every role (sim, produce, process, tail, ...); the role is the
# command, e.g. `docker run kis-stream produce`. Built in two stages so that compilers and
# build caches stay out of the runtime image.
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG RUST_VERSION=1.95.0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
    RUSTUP_HOME=/opt/rustup CARGO_HOME=/opt/cargo PATH=/opt/cargo/bin:$PATH
# faust-streaming publishes only an sdist (with optional C extensions): give it a compiler
# here. kis_native (native/, the compiled decode/encode hot path) is Rust: a minimal
# toolchain from rustup, in this stage only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs \
        | sh -s -- -y --no-modify-path --profile minimal --default-toolchain "${RUST_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY kis_stream/ kis_stream/
COPY producer/ producer/
COPY processors/ processors/
COPY simulator/ simulator/
COPY schemas/ schemas/
COPY native/ native/
RUN pip wheel --wheel-dir /wheels . ./native

FROM python:${PYTHON_VERSION}-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PRODUCER_SPOOL_DIR=/var/lib/kis-stream/spool \
    PROCESSORS_DATA_DIR=/var/lib/kis-stream/faust
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels kis-stream kis-native \
    && groupadd --system --gid 10001 kis \
    && useradd --system --uid 10001 --gid kis --home-dir /var/lib/kis-stream --no-create-home kis \
    && install -d -o kis -g kis -m 0750 /var/lib/kis-stream /var/lib/kis-stream/spool \
        /var/lib/kis-stream/faust
WORKDIR /var/lib/kis-stream
# Numeric user so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
# Producer metrics/health (9464), processors' Faust web (6066), simulator (8765).
EXPOSE 9464 6066 8765
ENTRYPOINT ["kis-stream"]
CMD ["--help"]
