#!/usr/bin/env bash
# Build the compose stack's images on the local Docker daemon, with no registry:
#   ise-workspace (the base: Debian bookworm from debootstrap), ise-kafka, ise-redis, ise-prometheus, ise-services.
# Idempotent: an image whose inputs did not change is skipped. Checks free space first.
#
# Usage: scripts/build_images.sh [--rebuild] [kafka|redis|services ...]    (--help for more)
#
# Needs `make install` (the services image is made from its venv) and a running Docker daemon
# (`ise stack up` starts one). The code is services/stack/compose_images.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${ISE_VENV:-.venv}
[[ -x $VENV/bin/python ]] || { echo "error: no $VENV: run \`make install\` first" >&2; exit 2; }
exec "$VENV/bin/python" -m services.stack.compose_images "$@"
