#!/usr/bin/env bash
# A base image made from Debian's packages with debootstrap, for machines that reach Debian's
# mirrors but no image registry (CI's): Debian 12 minbase with python3, python3-venv and
# ca-certificates, without apt's caches and lists, documentation (copyright files stay), man
# pages and translations.
#
#   deploy/build-base.sh [TAG]             # default localhost/base:bookworm
#
# Needs root, debootstrap and podman (it sources deploy/podman.env). DEBIAN_MIRROR overrides
# the mirror, which is otherwise the one this machine's apt uses.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${1:-localhost/base:bookworm}
mirror=${DEBIAN_MIRROR:-}
if [ -z "$mirror" ]; then
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
    mirror=$(awk '$1 == "deb" {print ($2 ~ /^\[/ ? $3 : $2); exit}' /etc/apt/sources.list)
fi
if [ -z "$mirror" ]; then
    echo "build-base.sh: no Debian mirror found in /etc/apt; set DEBIAN_MIRROR" >&2
    exit 2
fi
# shellcheck source=deploy/podman.env
. deploy/podman.env

work=$(mktemp -d "${TMPDIR:-/var/tmp}/pyserver-base.XXXXXX")
trap 'rm -rf "$work"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$work/rootfs" "$mirror" > "$work/debootstrap.log" 2>&1 || {
    tail -20 "$work/debootstrap.log" >&2
    exit 1
}
(
    cd "$work/rootfs"
    rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* \
        var/log/* usr/share/man/* usr/share/info/* usr/share/locale/*
    find usr/share/doc -type f ! -name copyright -delete
    find usr/share/doc -type d -empty -delete
)
tar -C "$work/rootfs" -c . | podman import --quiet \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "$tag" > /dev/null
echo "build-base.sh: $tag ($(podman image inspect --format '{{.Size}}' "$tag") bytes)" >&2
