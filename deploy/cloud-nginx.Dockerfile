# syntax=docker/dockerfile:1
# Cloud gateway: the web UI (cloud/frontend, built here with Node) served by nginx,
# which proxies every other path to the cloud API replicas.
#
#   docker build -f deploy/cloud-nginx.Dockerfile -t intellioptics/cloud-nginx .   (from the repository root)
#
# The configuration is deploy/cloud-nginx/templates/default.conf.template, rendered at
# start by the official image's envsubst step (INTELLIOPTICS_CLOUD_API_UPSTREAM, INTELLIOPTICS_NGINX_RESOLVER).
ARG NODE_IMAGE=node:22.20.0-bookworm-slim
ARG NGINX_IMAGE=nginx:1.28.0-alpine

FROM ${NODE_IMAGE} AS web
ENV NPM_CONFIG_UPDATE_NOTIFIER=false NPM_CONFIG_FUND=false NPM_CONFIG_AUDIT=false
WORKDIR /web
# Dependencies first (cached while only the sources change); the lock file pins them.
COPY cloud/frontend/package.json cloud/frontend/package-lock.json cloud/frontend/.npmrc ./
RUN npm ci
COPY cloud/frontend/ ./
RUN npm run build

FROM ${NGINX_IMAGE}
# Run as the image's unprivileged `nginx` user: the pid file moves to /tmp, and the
# directories that the entrypoint (envsubst) and nginx write become that user's.
# The connection budget replaces the stock 1024 per worker (docs/edge-config.md, "Gateway
# limits"; the same numbers as edge/nginx/nginx.conf.template, checked by tests/deploy/test_nginx.py).
RUN sed -i -e '/^user /d' -e 's|^pid .*|pid /tmp/nginx.pid;|' \
        -e 's|^\( *\)worker_connections .*|\1worker_connections 8192;|' \
        -e 's|^worker_processes .*|&\nworker_rlimit_nofile 16384;|' /etc/nginx/nginx.conf \
    && rm -f /etc/nginx/conf.d/default.conf \
    && chown -R nginx:nginx /etc/nginx/conf.d /var/cache/nginx
COPY deploy/cloud-nginx/templates/ /etc/nginx/templates/
COPY --from=web /web/dist/ /usr/share/nginx/html/
USER nginx
EXPOSE 8080
