#!/bin/bash
# Runs on ssh-01 over SSH from gateway-1, as the admin: appends a line to
# ~/rotations.log saying whose password changed (and its fingerprint).
set -euo pipefail
IFS= read -r line
payload=$(printf '%s' "$line" | base64 -d)
user=$(jq -r .user <<<"$payload")
fingerprint=$(jq -j .newPassword <<<"$payload" | sha256sum | cut -c1-16)
echo "$(date -u +%Y-%m-%dT%H:%M:%SZ) password of $user rotated (sha256 prefix $fingerprint)" >>"$HOME/rotations.log"
echo "$(hostname) as $(id -un): $HOME/rotations.log has $(wc -l <"$HOME/rotations.log") line(s)"
