#!/bin/bash
# debian-rootfs.sh TARBALL IMAGE: make the Debian base image of the
# postrotate/machine image without a container registry. The root file
# system is built once with mmdebstrap (bookworm, minbase, with the
# packages a machine needs) from Debian's mirror into TARBALL, which is
# kept as a cache; IMAGE is imported from it with `docker import` when
# missing. Needs root and mmdebstrap (apt-get install mmdebstrap).
set -euo pipefail
tarball=$1 image=$2
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=openssh-server,bash,python3,jq,sudo,passwd,procps,ca-certificates

if [ ! -s "$tarball" ]; then
    if ! command -v mmdebstrap >/dev/null && [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then
        echo "debian-rootfs.sh: installing mmdebstrap (apt-get)" >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null ||
            { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
    fi
    command -v mmdebstrap >/dev/null || { echo "debian-rootfs.sh: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 1; }
    mkdir -p "$(dirname "$tarball")"
    partial="${tarball%.tar}.partial.tar"
    mmdebstrap --variant=minbase --include="$packages" \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        bookworm "$partial" "$mirror"
    mv -f "$partial" "$tarball"
fi
if [ -z "$(docker images -q "$image")" ]; then
    docker import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["/bin/bash"]' \
        --message "mmdebstrap bookworm minbase: $packages" \
        "$tarball" "$image"
fi
