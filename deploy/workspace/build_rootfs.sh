#!/usr/bin/env bash
# Build the ISE workspace image without any image registry:
#   debootstrap (minbase, Debian bookworm) + the tools agents need -> tar -> `docker import`.
#
# Usage: deploy/workspace/build_rootfs.sh [TAG]        (default TAG: ise-workspace:latest)
#
# Environment:
#   ISE_DEBIAN_MIRROR    Debian mirror URL; default: the bookworm/main mirror apt uses on this host
#   ISE_DEBOOTSTRAP_CACHE  where downloaded .debs are kept between builds
#                        (default: ~/.cache/ise/debootstrap)
#   ISE_ROOTFS_WORKDIR   scratch parent directory (default: /var/tmp); needs ~400 MB
#   ISE_ROOTFS_TMPFS     1 (default): build in a tmpfs mounted there when possible; 0: on disk
#
# Needs root, debootstrap, debian-archive-keyring and a running Docker daemon.
# The image carries the label ise.workspace.inputs-sha256 = sha256 of this file, which
# services/stack/workspace_image.py compares to decide whether a rebuild is due.
# deploy/workspace/Dockerfile is the equivalent for machines that can pull debian:bookworm-slim.
set -euo pipefail

TAG="${1:-ise-workspace:latest}"
SUITE=bookworm
PACKAGES=(
  bash coreutils findutils grep sed gawk procps less file diffutils patch tree
  unzip zip xz-utils bzip2 gzip tar ca-certificates curl jq git python3
)

log() { printf '[build_rootfs %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap and chroot need it)"
command -v debootstrap >/dev/null || die "debootstrap missing: apt-get install debootstrap debian-archive-keyring"
command -v docker >/dev/null || die "docker CLI missing: apt-get install docker.io"
docker info >/dev/null 2>&1 || die "no Docker daemon answers (start one: python -m services.stack.docker_daemon)"

SCRIPT_PATH="$(readlink -f "${BASH_SOURCE[0]}")"
INPUTS_SHA="$(sha256sum "$SCRIPT_PATH" | cut -d' ' -f1)"

# The mirror apt is configured to use for bookworm on this machine (one-line and deb822 sources
# alike; read from apt's configuration, needs no downloaded lists), unless overridden.
MIRROR="${ISE_DEBIAN_MIRROR:-}"
if [[ -z $MIRROR ]]; then
  MIRROR="$(apt-get update --print-uris 2>/dev/null \
    | sed -n "s|^'\(.*\)/dists/$SUITE/InRelease'.*|\1|p" | head -n 1 || true)"
fi
if [[ -z $MIRROR ]]; then
  MIRROR="$(apt-cache policy 2>/dev/null \
    | awk -v s="$SUITE/main" '$3 == s && /Packages/ {print $2; exit}' || true)"
fi
[[ -n $MIRROR ]] || die "no Debian $SUITE/main mirror in apt's sources; set ISE_DEBIAN_MIRROR"

# Honour an apt proxy, if one is configured, for debootstrap's wget.
eval "$(apt-config shell APT_HTTP_PROXY Acquire::http::Proxy APT_HTTPS_PROXY Acquire::https::Proxy)"
[[ -n ${APT_HTTP_PROXY:-} && -z ${http_proxy:-} ]] && export http_proxy="$APT_HTTP_PROXY"
[[ -n ${APT_HTTPS_PROXY:-} && -z ${https_proxy:-} ]] && export https_proxy="$APT_HTTPS_PROXY"

CACHE="${ISE_DEBOOTSTRAP_CACHE:-$HOME/.cache/ise/debootstrap}"
mkdir -p "$CACHE"
# One build at a time per cache (debootstrap's cache dir is not safe for concurrent use).
exec 9>"$CACHE/.build.lock"
if ! flock -n 9; then log "another build holds $CACHE/.build.lock; waiting"; flock 9; fi
WORK="$(mktemp -d "${ISE_ROOTFS_WORKDIR:-/var/tmp}/ise-rootfs.XXXXXX")"
ROOT="$WORK/rootfs"
cleanup() {
  for m in proc sys dev/pts dev; do mountpoint -q "$ROOT/$m" 2>/dev/null && umount -l "$ROOT/$m"; done
  if mountpoint -q "$WORK"; then umount -l "$WORK"; fi
  rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 143' TERM INT HUP
# Build in RAM when we may mount a tmpfs (dpkg's many small writes and the final clean-up are
# much faster there; ~300 MB is used); otherwise on disk.
if [[ ${ISE_ROOTFS_TMPFS:-1} == 1 ]] && mount -t tmpfs -o size=4g,mode=755 ise-rootfs "$WORK" 2>/dev/null; then
  log "building in a tmpfs at $WORK"
fi

START=$SECONDS
log "debootstrap --variant=minbase $SUITE from $MIRROR into $ROOT (takes a few minutes)"
INCLUDE="$(IFS=,; echo "${PACKAGES[*]}")"
# dpkg inside the target without an fsync per file: several times faster on slow disks.
mkdir -p "$ROOT/etc/dpkg/dpkg.cfg.d"
echo force-unsafe-io >"$ROOT/etc/dpkg/dpkg.cfg.d/00-ise-build-unsafe-io"
# Full output to a log; only the phase lines (3+ words, "..."), errors and warnings to stderr.
if ! debootstrap --variant=minbase --include="$INCLUDE" --cache-dir="$CACHE" \
      "$SUITE" "$ROOT" "$MIRROR" 2>&1 | tee "$WORK/debootstrap.log" \
      | { grep --line-buffered -E '^I: \S+ \S+ .*\.\.\.$|successfully|^[EW]:' >&2 || true; }; then
  tail -n 30 "$WORK/debootstrap.log" >&2
  [[ -f $ROOT/debootstrap/debootstrap.log ]] && tail -n 30 "$ROOT/debootstrap/debootstrap.log" >&2
  die "debootstrap failed (mirror $MIRROR reachable? set ISE_DEBIAN_MIRROR to another)"
fi
log "debootstrap done in $((SECONDS - START))s"
rm -f "$ROOT/etc/dpkg/dpkg.cfg.d/00-ise-build-unsafe-io"

log "configuring: user agent (uid 1000, home /workspace), git defaults, slimming"
chroot "$ROOT" /usr/sbin/useradd --create-home --home-dir /workspace --shell /bin/bash \
  --uid 1000 --user-group agent
cat >"$ROOT/etc/gitconfig" <<'EOF'
[user]
	name = ISE Agent
	email = agent@workspace.invalid
[init]
	defaultBranch = main
[safe]
	directory = *
[advice]
	detachedHead = false
EOF
# Later package installs (if a user gives the container network) stay slim too.
cat >"$ROOT/etc/dpkg/dpkg.cfg.d/01-ise-slim" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
EOF
printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
  >"$ROOT/etc/apt/apt.conf.d/01-ise-norecommends"
echo "deb $MIRROR $SUITE main" >"$ROOT/etc/apt/sources.list"
echo "ise-workspace" >"$ROOT/etc/hostname"

find "$ROOT/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
find "$ROOT/usr/share/doc" -mindepth 1 -type d -empty -delete
rm -rf "$ROOT"/usr/share/{man,info}/* "$ROOT"/var/cache/apt/* "$ROOT"/var/lib/apt/lists/* \
  "$ROOT"/var/cache/debconf/*-old "$ROOT"/var/lib/dpkg/*-old "$ROOT"/var/log/* "$ROOT"/tmp/* \
  "$ROOT"/debootstrap
find "$ROOT/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
# docker manages these at run time.
: >"$ROOT/etc/resolv.conf"
: >"$ROOT/etc/hosts"
log "rootfs size: $(du -sh --one-file-system "$ROOT" | cut -f1)"

log "docker import -> $TAG"
tar --numeric-owner --xattrs --one-file-system -C "$ROOT" -c . | docker import \
  --change 'WORKDIR /workspace' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive PAGER=cat GIT_PAGER=cat' \
  --change "LABEL ise.workspace.inputs-sha256=$INPUTS_SHA" \
  --change "LABEL ise.workspace.suite=$SUITE" \
  --change 'LABEL org.opencontainers.image.title=ise-workspace' \
  --change 'CMD ["sleep","infinity"]' \
  --message "ise workspace rootfs ($SUITE minbase, built by build_rootfs.sh)" \
  - "$TAG" >/dev/null
log "built $TAG ($(docker image inspect --format '{{.Id}} {{.Size}}' "$TAG") bytes) in $((SECONDS - START))s"
