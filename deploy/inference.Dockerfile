# syntax=docker/dockerfile:1
# Edge inference service: ONNX Runtime, primary + OODD, LRU of detectors, hot swap.
#
#   docker build -f deploy/inference.Dockerfile -t intellioptics/inference .   (from the repository root)
#
# An edge image: only common/ and edge/inference/ are installed. No PyTorch, no
# compiler, no tests (.dockerignore), and the runtime stage has no build tools at all.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY constraints.txt ./
COPY common/pyproject.toml common/
COPY common/src common/src
COPY edge/inference/pyproject.toml edge/inference/
COPY edge/inference/src edge/inference/src
# Non-editable installs into a venv that the runtime stage copies whole; pip and
# setuptools are removed from it (nothing at run time installs or builds anything).
RUN python -m venv /opt/intellioptics \
    && /opt/intellioptics/bin/pip install -c constraints.txt ./common ./edge/inference \
    && /opt/intellioptics/bin/pip uninstall -y setuptools pip

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/intellioptics/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN groupadd --system --gid 10001 intellioptics \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/intellioptics --no-create-home intellioptics \
    && mkdir -p /var/lib/intellioptics/models \
    && chown -R 10001:10001 /var/lib/intellioptics
COPY --from=build /opt/intellioptics /opt/intellioptics
USER 10001:10001
WORKDIR /var/lib/intellioptics
EXPOSE 8001
CMD ["python", "-m", "intellioptics_inference"]
