#!/bin/bash
# Holds a step while /tmp/hold exists on its machine: the test creates the
# file, waits for /tmp/held (the step is running), does its harm, then
# removes /tmp/hold to let the step finish.
set -euo pipefail
cat >/dev/null
touch /tmp/held
while [ -e /tmp/hold ]; do sleep 0.2; done
echo "$(hostname): released"
