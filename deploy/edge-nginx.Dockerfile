# syntax=docker/dockerfile:1
# Edge gateway on port 30101: image-query and edge routes to the edge API, everything
# else (and what the edge answers 404/405/422 to) to the cloud, or a JSON 404 offline.
#
#   docker build -f deploy/edge-nginx.Dockerfile -t intellioptics/edge-nginx .   (from the repository root)
#
# The configuration is edge/nginx/templates/gateway.conf.template, the same file that
# `make run` renders with edge/nginx/render.py; here the official image's envsubst step
# renders it at start from the INTELLIOPTICS_* variables that docker-compose.edge.yml sets.
ARG NGINX_IMAGE=nginx:1.28.0-alpine

FROM ${NGINX_IMAGE}
# Run as the image's unprivileged `nginx` user: the pid file moves to /tmp, and the
# directories that the entrypoint (envsubst) and nginx write become that user's. The
# stock default.conf (port 80) goes: an unprivileged user could not listen there.
# The connection budget replaces the stock 1024 per worker (docs/edge-config.md, "Gateway
# limits"; the same numbers as edge/nginx/nginx.conf.template, checked by tests/deploy/test_nginx.py).
RUN sed -i -e '/^user /d' -e 's|^pid .*|pid /tmp/nginx.pid;|' \
        -e 's|^\( *\)worker_connections .*|\1worker_connections 8192;|' \
        -e 's|^worker_processes .*|&\nworker_rlimit_nofile 16384;|' /etc/nginx/nginx.conf \
    && rm -f /etc/nginx/conf.d/default.conf \
    && chown -R nginx:nginx /etc/nginx/conf.d /var/cache/nginx
COPY edge/nginx/templates/gateway.conf.template /etc/nginx/templates/gateway.conf.template
USER nginx
EXPOSE 30101
