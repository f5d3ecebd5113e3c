# syntax=docker/dockerfile:1
# Cloud API: accounts, detectors, image queries, review queue, model registry, edges.
# Runs the Alembic migrations on start (safe when several replicas start together).
#
#   docker build -f deploy/cloud-api.Dockerfile -t intellioptics/cloud-api .   (from the repository root)
#
# The web UI is served by the cloud nginx image (deploy/cloud-nginx.Dockerfile), so
# this image carries no Node build. It answers with ONNX models from the registry and
# never trains, so it carries no PyTorch either.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY constraints.txt ./
COPY common/pyproject.toml common/
COPY common/src common/src
COPY cloud/api/pyproject.toml cloud/api/
COPY cloud/api/src cloud/api/src
RUN python -m venv /opt/intellioptics \
    && /opt/intellioptics/bin/pip install -c constraints.txt ./common ./cloud/api \
    && /opt/intellioptics/bin/pip uninstall -y setuptools pip

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/intellioptics/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 intellioptics \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/intellioptics --no-create-home intellioptics \
    && mkdir -p /var/lib/intellioptics/blobs \
    && chown -R 10001:10001 /var/lib/intellioptics
COPY --from=build /opt/intellioptics /opt/intellioptics
USER 10001:10001
WORKDIR /var/lib/intellioptics
EXPOSE 8000
CMD ["python", "-m", "intellioptics_cloud", "serve"]
