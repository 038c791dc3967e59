# dyups for OpenResty: the product image. The runtime stage installs the release tarball (`make dist`) with its own
# install.sh under /usr/local, the same step as `make install`: the compiled Lua, nginx/dyups.conf and docker/ go
# in, Node never does.
#
#   docker-compose up --build          (or: docker build -t dyups .)  with a registry: the tarball is built from
#                                      source in BUILD_IMAGE (Node), the runtime is the official OpenResty image
#   make compose                       with no registry: the tarball built on the host (make dist), the runtime
#                                      the local Debian base of scripts/build-base-image.sh, for both stages:
#   docker build --build-arg BASE_IMAGE=dyups-base:bookworm --build-arg BUILD_IMAGE=dyups-base:bookworm \
#                --build-arg DIST_TARBALL=dist/dyups-VERSION.tar.gz -t dyups .
#   docker run --rm --network host dyups   proxy 127.0.0.1:8080, interface 127.0.0.1:8081, demo backends 8088/8089
#                                          (see docker/entrypoint.sh)
ARG BASE_IMAGE=openresty/openresty:1.25.3.2-bookworm
ARG BUILD_IMAGE=node:22-bookworm-slim

# --- the release tarball: built from source with Node, or the one given (DIST_TARBALL, a path in the context)
FROM ${BUILD_IMAGE} AS dist
# the legacy builder leaves this stage's image untagged: the label lets a build script find and remove it
LABEL org.dyups.stage=dist
ARG DIST_TARBALL=
WORKDIR /src
COPY package.json package-lock.json ./
RUN if [ -z "$DIST_TARBALL" ]; then npm ci --no-audit --no-fund --loglevel=error; fi
COPY . .
RUN set -e; \
    if [ -n "$DIST_TARBALL" ]; then \
      test -f "$DIST_TARBALL" || { echo "DIST_TARBALL=$DIST_TARBALL is not in the build context (make dist)" >&2; exit 1; }; \
      cp "$DIST_TARBALL" /dyups.tar.gz; \
    else \
      bash tools/build.sh && cp "$(bash scripts/dist.sh /tmp/dist)" /dyups.tar.gz; \
    fi

# --- the product: the runtime image + the installed release, no Node
FROM ${BASE_IMAGE}
COPY --from=dist /dyups.tar.gz /tmp/dyups.tar.gz
RUN mkdir /tmp/dyups \
 && tar -xzf /tmp/dyups.tar.gz -C /tmp/dyups --strip-components=1 \
 && sh /tmp/dyups/install.sh --prefix /usr/local \
 && rm -rf /tmp/dyups /tmp/dyups.tar.gz \
 && test -f /usr/local/share/lua/5.1/dyups/init.lua && test -f /usr/local/share/dyups/dyups.conf
COPY docker/nginx.conf docker/upstream.conf /etc/dyups/
COPY docker/entrypoint.sh /usr/local/bin/dyups-entrypoint
RUN chmod 0755 /usr/local/bin/dyups-entrypoint && mkdir -p /var/lib/dyups /run/dyups

ENV PROXY_ADDR=127.0.0.1 PROXY_PORT=8080 API_PORT=8081 DEMO_BACKENDS="8088 8089" \
    UPSTREAM_CONF=/etc/dyups/upstream.conf STATE_FILE=/var/lib/dyups/state.json
# the state file (upstreams kept across restarts)
VOLUME /var/lib/dyups
# nginx's graceful shutdown: in-flight requests finish
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["/usr/local/bin/dyups-entrypoint", "health"]
ENTRYPOINT ["/usr/local/bin/dyups-entrypoint"]
CMD []
