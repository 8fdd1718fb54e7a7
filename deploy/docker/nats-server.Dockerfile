# nats-server, built from the module the coordinator pins (coordinator/go.mod),
# on scratch, run as nonroot with its store under /data. With a registry,
# the official image (nats:2-alpine) does the same job: set NATS_IMAGE for
# docker-compose.
#   docker build --pull=false -f deploy/docker/nats-server.Dockerfile -t postrotate/nats-server:dev build/docker
ARG BASE=scratch
FROM ${BASE}
COPY rootfs/ /
COPY --chown=65532:65532 rootfs-nonroot/ /
COPY nats-server /usr/local/bin/nats-server
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
EXPOSE 4222 6222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
