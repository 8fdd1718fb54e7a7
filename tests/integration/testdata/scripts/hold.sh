#!/bin/bash
# Holds a step while /tmp/hold exists on its machine: the test creates the
# file, waits for /tmp/held (the step is running), does its harm, then
# removes /tmp/hold to let the step finish. Every start is appended to
# /tmp/hold-starts (to count runs); /tmp/held says who runs it: the SSH
# client's address when it came over SSH.
set -euo pipefail
cat >/dev/null
echo "${POSTROTATE_ROTATION_ID:-?} ${POSTROTATE_STEP:-?} ${POSTROTATE_ATTEMPT:-?}" >>/tmp/hold-starts
echo "${SSH_CLIENT:-local}" >/tmp/held.new
mv -f /tmp/held.new /tmp/held
while [ -e /tmp/hold ]; do sleep 0.2; done
echo "$(hostname): released"
