# syntax=docker/dockerfile:1
# Azurite, the Azure Storage emulator, for the cloud's optional `azurite` profile: a
# self-contained blob store on one machine. Installed from npm, the same package and
# version the test suite runs against, so no image from another registry is needed.
#
#   docker build -f deploy/azurite.Dockerfile -t intellioptics/azurite .   (from the repository root)
ARG NODE_IMAGE=node:22.20.0-bookworm-slim

FROM ${NODE_IMAGE}
ARG AZURITE_VERSION=3.37.0
ENV NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false
RUN npm install --global "azurite@${AZURITE_VERSION}" \
    && npm cache clean --force \
    && mkdir -p /data \
    && chown node:node /data
USER node
WORKDIR /data
EXPOSE 10000
CMD ["azurite-blob", "--blobHost", "0.0.0.0", "--blobPort", "10000", "--location", "/data"]
