# etcd for docker-compose.cluster.yml: Debian's etcd-server (3.4, the version the cluster mode is tested with)
# on a Debian base. Built with the host network (apt needs the mirror).
#   BASE_IMAGE=dyups-base:bookworm   the local base of scripts/build-base-image.sh (no registry: its apt
#                                    sources are the machine's mirror)
#   BASE_IMAGE=debian:bookworm-slim  with a registry
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends etcd-server >/dev/null \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/etcd
VOLUME /var/lib/etcd
ENTRYPOINT ["etcd"]
