#!/bin/bash
# The compose "enrol" job: enrols every worker host through serve's API
# (postrotate worker add) into the shared creds volume, once. A host whose
# credentials file exists is left alone (enrolling again would replace the
# identity the running workers hold). Each file is owned by the user its
# workers run as (the scratch worker image runs as 65532), mode 0600.
set -euo pipefail
server=${POSTROTATE_SERVER:-http://serve:7480}
for spec in ${ENROL_HOSTS:?ENROL_HOSTS: "host:uid ..."}; do
    host=${spec%%:*} uid=${spec#*:}
    out=/creds/$host.creds
    if [ -s "$out" ]; then
        echo "enrol: $host already enrolled ($out)"
        continue
    fi
    postrotate worker add "$host" --server "$server" --api-token-file /secrets/api.token --out "$out.new"
    chown "$uid:$uid" "$out.new"
    mv -f "$out.new" "$out"
    echo "enrol: $host enrolled into $out (owner $uid)"
done
