#!/usr/bin/env bash
# Builds the base root file system of regtape's image from Debian packages, into a tar (atomically):
#   scripts/image-base.sh OUT.tar
# Debian bookworm (apt variant, plus ca-certificates for https upstreams), without docs, man pages and
# translations (the copyright files stay). Needs the Debian package mmdebstrap and the apt sources this
# machine reaches; no base image is pulled. The image tests key their cache of OUT.tar on this file.
set -euo pipefail
out="${1:?usage: scripts/image-base.sh OUT.tar}"
command -v mmdebstrap >/dev/null || { echo "image-base: mmdebstrap is missing (apt-get install mmdebstrap)" >&2; exit 2; }
tmp="$(dirname "$out")/.$(basename "$out").$$.tmp.tar"
trap 'rm -f "$tmp"' EXIT
mmdebstrap --quiet --variant=apt --format=tar --include=ca-certificates \
  --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  bookworm "$tmp" < /dev/null >&2
mv "$tmp" "$out"
