#!/usr/bin/env bash
# Installs the real registry software and clients the test suite runs (Debian packages), if missing.
set -euo pipefail
need=()
command -v docker-registry >/dev/null || need+=(docker-registry)
command -v skopeo >/dev/null || need+=(skopeo)
command -v htpasswd >/dev/null || need+=(apache2-utils)
command -v dockerd >/dev/null || need+=(docker.io)
command -v docker >/dev/null || need+=(docker.io)
command -v podman >/dev/null || need+=(podman)
command -v containerd >/dev/null || need+=(containerd)
command -v ctr >/dev/null || need+=(containerd)
command -v tar >/dev/null || need+=(tar)
command -v openssl >/dev/null || need+=(openssl)
# the container image test builds its base from Debian packages (scripts/build-image.sh)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
# npm run bench (not part of npm test) drives the load with wrk
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  echo "installing: ${need[*]}"
  $SUDO apt-get update -q
  # shellcheck disable=SC2046
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q $(printf '%s\n' "${need[@]}" | sort -u)
fi
