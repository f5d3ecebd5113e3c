# syntax=docker/dockerfile:1
# Stream service: camera streams (RTSP, HTTP/MJPEG, files, USB) of edge-config become
# image queries on the edge API; results go to webhooks and MQTT.
#
#   docker build -f deploy/streams.Dockerfile -t intellioptics/streams .   (from the repository root)
#
# An edge image: only common/ and edge/streams/ are installed. FFmpeg comes inside the
# PyAV wheel, so there is no apt-get and no compiler. No PyTorch, no tests (.dockerignore).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
COPY constraints.txt ./
COPY common/pyproject.toml common/
COPY common/src common/src
COPY edge/streams/pyproject.toml edge/streams/
COPY edge/streams/src edge/streams/src
RUN python -m venv /opt/intellioptics \
    && /opt/intellioptics/bin/pip install -c constraints.txt ./common ./edge/streams \
    && /opt/intellioptics/bin/pip uninstall -y setuptools pip

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/intellioptics/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
# No state of its own: the streams live in edge-config, read from the edge API.
# The service user is in group video (gid 44 in Debian) for USB cameras (/dev/videoN).
RUN groupadd --system --gid 10001 intellioptics \
    && useradd --system --uid 10001 --gid 10001 --groups video --home-dir /var/lib/intellioptics --no-create-home intellioptics
COPY --from=build /opt/intellioptics /opt/intellioptics
USER 10001:10001
WORKDIR /tmp
EXPOSE 8719
CMD ["python", "-m", "intellioptics_streams"]
