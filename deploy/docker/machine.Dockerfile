# A Linux machine for the compose demo and tests: Debian bookworm with
# OpenSSH, bash, python3, jq and sudo, plus postrotate-worker (and the
# postrotate CLI, for the enrolment job). Its entrypoint,
# postrotate-machine, creates users, starts sshd and/or a worker (see
# machine-entrypoint.sh).
#
# BASE defaults to the image `make images` imports from an mmdebstrap root
# (no registry needed). With a registry: --build-arg BASE=debian:bookworm-slim
# (the packages are then installed here).
ARG BASE=postrotate-debian:bookworm
FROM ${BASE}
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
RUN set -e; \
    if ! command -v sshd >/dev/null || ! command -v jq >/dev/null || ! command -v python3 >/dev/null || ! command -v sudo >/dev/null; then \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            openssh-server bash python3 jq sudo passwd procps ca-certificates; \
        rm -rf /var/lib/apt/lists/*; \
    fi; \
    rm -f /etc/ssh/ssh_host_*; \
    mkdir -p /run/sshd /creds; chmod 0755 /creds
COPY postrotate-worker postrotate /usr/local/bin/
COPY machine-entrypoint.sh /usr/local/bin/postrotate-machine
ENTRYPOINT ["/usr/local/bin/postrotate-machine"]
