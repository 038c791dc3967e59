# dyups for OpenResty: the product image. Only the compiled Lua (dist/lua, built by `bash tools/build.sh`),
# nginx/dyups.conf and docker/ go in: no Node.
#
#   docker build -t dyups .                                          FROM the official OpenResty image (a registry)
#   docker build --build-arg BASE_IMAGE=dyups-base:bookworm -t dyups .   FROM the local Debian base built by
#                                                                    scripts/build-base-image.sh (no registry)
#   docker run --rm --network host dyups                             proxy 127.0.0.1:8080, interface 127.0.0.1:8081,
#                                                                    demo backends 8088/8089 (see docker/entrypoint.sh)
ARG BASE_IMAGE=openresty/openresty:1.25.3.2-bookworm
FROM ${BASE_IMAGE}

COPY dist/lua/ /opt/dyups/lua/
COPY nginx/dyups.conf /opt/dyups/nginx/dyups.conf
COPY docker/nginx.conf docker/upstream.conf /etc/dyups/
COPY docker/entrypoint.sh /usr/local/bin/dyups-entrypoint
RUN chmod 0755 /usr/local/bin/dyups-entrypoint \
 && mkdir -p /var/lib/dyups /run/dyups \
 && test -f /opt/dyups/lua/dyups/init.lua && test -f /opt/dyups/lua/ngx/dyups.lua

ENV PROXY_ADDR=127.0.0.1 PROXY_PORT=8080 API_PORT=8081 DEMO_BACKENDS="8088 8089" \
    UPSTREAM_CONF=/etc/dyups/upstream.conf STATE_FILE=/var/lib/dyups/state.json
# the state file (upstreams kept across restarts)
VOLUME /var/lib/dyups
# nginx's graceful shutdown: in-flight requests finish
STOPSIGNAL SIGQUIT
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["/usr/local/bin/dyups-entrypoint", "health"]
ENTRYPOINT ["/usr/local/bin/dyups-entrypoint"]
CMD []
