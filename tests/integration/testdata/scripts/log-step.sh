#!/bin/bash
# Appends "<rotation id> <step> <user> <host>" to /tmp/steps.log on the
# machine it runs on, for the tests to check what ran, once, in which order.
set -euo pipefail
IFS= read -r line
user=$(printf '%s' "$line" | base64 -d | jq -r .user)
echo "${POSTROTATE_ROTATION_ID:?} ${POSTROTATE_STEP:?} $user $(hostname)" >>/tmp/steps.log
