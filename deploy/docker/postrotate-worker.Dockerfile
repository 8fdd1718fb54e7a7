# postrotate-worker on scratch, run as nonroot: a gateway worker (SSH,
# WinRM, HTTP and PostgreSQL steps). It has no shell, so it cannot run
# shell scripts locally: a machine that runs its own scripts uses the
# postrotate/machine image.
#   docker build --pull=false -f deploy/docker/postrotate-worker.Dockerfile -t postrotate/postrotate-worker:dev build/docker
ARG BASE=scratch
FROM ${BASE}
COPY rootfs/ /
COPY --chown=65532:65532 rootfs-nonroot/ /
COPY postrotate-worker /usr/local/bin/postrotate-worker
ENV PATH=/usr/local/bin:/usr/bin:/bin TMPDIR=/tmp
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/postrotate-worker"]
