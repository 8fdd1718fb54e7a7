#!/bin/bash
# postrotate-machine: the entrypoint of the postrotate/machine image.
#
#   postrotate-machine                 run what the environment asks for (below)
#   postrotate-machine CMD [ARG...]    run CMD instead (after creating the users)
#
# Environment:
#   MACHINE_USERS          "name:password[:sudo] ..." Linux users to create (once);
#                          ":sudo" lets the user run anything through sudo, with its password
#   MACHINE_SSHD=1         generate the SSH host keys (first start) and run sshd
#   MACHINE_KNOWN_HOSTS    with sshd: write "<hostname> <ed25519 host key>" to this file,
#                          for the inventory's known_hosts (default: none)
#   POSTROTATE_WORKER_CREDS  run postrotate-worker --creds FILE once FILE exists
#                          (written by the enrolment job); extra flags in POSTROTATE_WORKER_ARGS
set -euo pipefail

log() { echo "postrotate-machine: $*" >&2; }

for spec in ${MACHINE_USERS:-}; do
    IFS=: read -r name password role <<<"$spec"
    if ! id "$name" >/dev/null 2>&1; then
        useradd --create-home --shell /bin/bash "$name"
        printf '%s:%s\n' "$name" "$password" | chpasswd
        log "created user $name"
    fi
    if [ "${role:-}" = sudo ] && [ ! -e "/etc/sudoers.d/$name" ]; then
        printf '%s ALL=(ALL:ALL) ALL\n' "$name" >"/etc/sudoers.d/$name"
        chmod 0440 "/etc/sudoers.d/$name"
    fi
done

if [ "$#" -gt 0 ]; then
    exec "$@"
fi

pids=()
if [ "${MACHINE_SSHD:-0}" = 1 ]; then
    ssh-keygen -A >/dev/null
    if [ -n "${MACHINE_KNOWN_HOSTS:-}" ]; then
        mkdir -p "$(dirname "$MACHINE_KNOWN_HOSTS")"
        tmp="$MACHINE_KNOWN_HOSTS.$$"
        printf '%s %s\n' "$(hostname)" "$(cut -d' ' -f1,2 /etc/ssh/ssh_host_ed25519_key.pub)" >"$tmp"
        mv -f "$tmp" "$MACHINE_KNOWN_HOSTS"
        log "host key written to $MACHINE_KNOWN_HOSTS"
    fi
    /usr/sbin/sshd -D -e &
    pids+=($!)
    log "sshd started"
fi

if [ -n "${POSTROTATE_WORKER_CREDS:-}" ]; then
    until [ -s "$POSTROTATE_WORKER_CREDS" ]; do
        log "waiting for $POSTROTATE_WORKER_CREDS (the enrolment job writes it)"
        sleep 2
    done
    # shellcheck disable=SC2086
    postrotate-worker --creds "$POSTROTATE_WORKER_CREDS" ${POSTROTATE_WORKER_ARGS:-} &
    pids+=($!)
fi

if [ "${#pids[@]}" -eq 0 ]; then
    log "nothing to run: set MACHINE_SSHD=1 and/or POSTROTATE_WORKER_CREDS"
    exit 2
fi
# Stopping (docker stop: one TERM): pass one TERM to each child and wait
# for them — a worker lets its running script finish and report; a second
# TERM would cut that short, so none is sent.
stopping=0
trap 'stopping=1; kill -TERM "${pids[@]}" 2>/dev/null' TERM INT
set +e
wait -n "${pids[@]}"
status=$?
if [ "$stopping" = 1 ]; then
    wait
    exit 0
fi
# One of them exited by itself: stop the others and exit with its status,
# so that the restart policy applies.
kill -TERM "${pids[@]}" 2>/dev/null
wait
exit "$status"
