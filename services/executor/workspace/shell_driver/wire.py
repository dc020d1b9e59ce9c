"""The driver's wire format: JSON lines to the host, and quoting text as one bash word."""

import json
import sys


def send(obj):
    """Write one JSON message (one line) to the host and flush it."""
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def ansi_c(text):
    """Quote text as a bash $'...' word on one line."""
    out = ["$'"]
    for ch in text:
        code = ord(ch)
        if ch in "\\'":
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\x{code:02x}")
        else:
            out.append(ch)
    out.append("'")
    return "".join(out)
