"""The driver's wire format: JSON lines to the host."""

import json
import sys


def send(obj):
    """Write one JSON message (one line) to the host and flush it."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()
