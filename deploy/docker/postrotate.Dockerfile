# postrotate (the coordinator and the CLI) on scratch, run as nonroot.
#   docker build --pull=false -f deploy/docker/postrotate.Dockerfile -t postrotate/postrotate:dev build/docker
ARG BASE=scratch
FROM ${BASE}
COPY rootfs/ /
COPY --chown=65532:65532 rootfs-nonroot/ /
COPY postrotate /usr/local/bin/postrotate
ENV PATH=/usr/local/bin:/usr/bin:/bin
USER 65532:65532
WORKDIR /data
EXPOSE 7480 4222
ENTRYPOINT ["/usr/local/bin/postrotate"]
CMD ["--help"]
