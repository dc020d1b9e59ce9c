#!/usr/bin/env bash
# Install the Docker Compose v2 CLI plugin, built from source through the Go module proxy.
#
# Usage: scripts/install_compose.sh [--force]
#
# Skipped when `docker compose version` already works (any Compose v2), unless --force.
# Otherwise: `go mod download` github.com/docker/compose/v2@$ISE_COMPOSE_VERSION, build its
# ./cmd (as Compose's own Makefile does: CGO off, -trimpath, version stamped), and install
# the binary as a Docker CLI plugin. On this 2-core machine the build takes about 7 minutes.
#
# Environment:
#   ISE_COMPOSE_VERSION      module version to build (default v2.40.3)
#   ISE_COMPOSE_PLUGIN_DIR   where the plugin goes (default: /usr/local/lib/docker/cli-plugins
#                            as root, ~/.docker/cli-plugins otherwise; both are on the
#                            Docker CLI's plugin search path)
#   TMPDIR                   scratch parent for the module and build caches (default /var/tmp);
#                            needs ~2 GB, removed when the script ends
#   GOPROXY, GOFLAGS         honoured as usual (the Go module proxy is the only source used)
#
# Needs: Go 1.24+ (`go` on PATH) and the docker CLI.
set -euo pipefail

VERSION="${ISE_COMPOSE_VERSION:-v2.40.3}"
MODULE=github.com/docker/compose/v2
FORCE=0
case "${1:-}" in
  --force) FORCE=1 ;;
  "") ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) echo "usage: $0 [--force]  (unknown argument: $1)" >&2; exit 2 ;;
esac

log() { printf '\033[1m[install_compose]\033[0m %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

command -v docker >/dev/null || die "the docker CLI is missing: apt-get install docker.io"
if [[ $FORCE == 0 ]] && docker compose version >/dev/null 2>&1; then
  log "$(docker compose version) already installed"
  exit 0
fi
# Go from PATH, else where the official tarball installs it.
if ! command -v go >/dev/null && [[ -x /usr/local/go/bin/go ]]; then PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null || die "Go is missing (need Go 1.24+ on PATH to build Compose $VERSION)"

if [[ -n ${ISE_COMPOSE_PLUGIN_DIR:-} ]]; then
  PLUGIN_DIR="$ISE_COMPOSE_PLUGIN_DIR"
elif [[ $(id -u) -eq 0 ]]; then
  PLUGIN_DIR=/usr/local/lib/docker/cli-plugins
else
  PLUGIN_DIR="$HOME/.docker/cli-plugins"
fi

WORK="$(mktemp -d "${TMPDIR:-/var/tmp}/ise-compose.XXXXXX")"
cleanup() {
  chmod -R u+w "$WORK" 2>/dev/null || true  # the module cache is read-only
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP
export GOMODCACHE="$WORK/mod" GOCACHE="$WORK/cache" GOPATH="$WORK/gopath"
export GOFLAGS="${GOFLAGS:+$GOFLAGS }-mod=mod" CGO_ENABLED=0

START=$SECONDS
log "downloading $MODULE@$VERSION from ${GOPROXY:-$(go env GOPROXY)}"
SRC="$(go mod download -json "$MODULE@$VERSION" 2>"$WORK/go.log" \
  | python3 -c 'import json, sys; print(json.load(sys.stdin).get("Dir", ""))')" || true
[[ -d $SRC ]] || { tail -n 20 "$WORK/go.log" >&2; die "go mod download of $MODULE@$VERSION failed (GOPROXY reachable?)"; }
cp -r "$SRC" "$WORK/src"
chmod -R u+w "$WORK/src"

log "building $MODULE/cmd $VERSION with $(go version | cut -d' ' -f3) (about 7 minutes on 2 cores)"
# Its dependencies are fetched now (~300 modules); their download lines go to the log only.
if ! (cd "$WORK/src" && go build -trimpath -ldflags "-s -w -X $MODULE/internal.Version=$VERSION" \
      -o "$WORK/docker-compose" ./cmd) >>"$WORK/go.log" 2>&1; then
  tail -n 40 "$WORK/go.log" >&2
  die "go build of Compose $VERSION failed (last lines above)"
fi

mkdir -p "$PLUGIN_DIR"
install -m 0755 "$WORK/docker-compose" "$PLUGIN_DIR/docker-compose.tmp"
mv -f "$PLUGIN_DIR/docker-compose.tmp" "$PLUGIN_DIR/docker-compose"
docker compose version >/dev/null 2>&1 \
  || die "built $PLUGIN_DIR/docker-compose, but \`docker compose version\` fails: is $PLUGIN_DIR on the CLI's plugin path?"
log "installed $(docker compose version) at $PLUGIN_DIR/docker-compose in $((SECONDS - START))s"
