#!/bin/bash
# Runs on web-01, by its own worker (as root): rewrites the app's config
# with the user and a fingerprint of the new password (never the password
# itself), as a real script would restart a service with it.
set -euo pipefail
IFS= read -r line
payload=$(printf '%s' "$line" | base64 -d)
user=$(jq -r .user <<<"$payload")
fingerprint=$(jq -j .newPassword <<<"$payload" | sha256sum | cut -c1-16)
mkdir -p /srv/app
cat >/srv/app/app.conf.new <<CONF
# written by postrotate: rotation ${POSTROTATE_ROTATION_ID:-?}, step ${POSTROTATE_STEP:-?}
user = $user
password_sha256_prefix = $fingerprint
updated_at = $(date -u +%Y-%m-%dT%H:%M:%SZ)
CONF
mv -f /srv/app/app.conf.new /srv/app/app.conf
echo "$(hostname): /srv/app/app.conf updated for $user (sha256 prefix $fingerprint)"
