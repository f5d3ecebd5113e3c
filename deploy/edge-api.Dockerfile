# syntax=docker/dockerfile:1
# Edge API: Groundlight-compatible image queries, edge-config, escalation outbox,
# model updater, status page.
#
#   docker build -f deploy/edge-api.Dockerfile -t intellioptics/edge-api .   (from the repository root)
#
# An edge image: only common/ and edge/api/ are installed. No PyTorch, no compiler,
# no tests (.dockerignore), and the runtime stage has no build tools at all.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY constraints.txt ./
COPY common/pyproject.toml common/
COPY common/src common/src
COPY edge/api/pyproject.toml edge/api/
COPY edge/api/src edge/api/src
RUN python -m venv /opt/intellioptics \
    && /opt/intellioptics/bin/pip install -c constraints.txt ./common ./edge/api \
    && /opt/intellioptics/bin/pip uninstall -y setuptools pip

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/intellioptics/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# The directories exist in the image, owned by the service user, so that named
# volumes mounted on them start with that ownership.
RUN groupadd --system --gid 10001 intellioptics \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/intellioptics --no-create-home intellioptics \
    && mkdir -p /var/lib/intellioptics/models /var/lib/intellioptics/edge /etc/intellioptics/edge \
    && chown -R 10001:10001 /var/lib/intellioptics /etc/intellioptics
COPY --from=build /opt/intellioptics /opt/intellioptics
USER 10001:10001
WORKDIR /var/lib/intellioptics
EXPOSE 8718
CMD ["python", "-m", "intellioptics_edge"]
