#!/bin/bash
# Runs on the machine web-01 (through its own worker). Reads the payload the
# way many Keeper scripts do: one line with `IFS= read -r`, then base64 -d.
set -euo pipefail
IFS= read -r line
json=$(printf '%s' "$line" | base64 -d)
user=$(printf '%s' "$json" | sed -n 's/.*"user":"\([^"]*\)".*/\1/p')
echo "updating the credentials of ${user} in the webapp config on $(hostname)"
echo "rotation ${POSTROTATE_ROTATION_ID} step ${POSTROTATE_STEP} attempt ${POSTROTATE_ATTEMPT}"
