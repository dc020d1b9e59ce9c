"""The workspace's command history: one JSON line per command the agent ran, in the container.

``/opt/ise/history.jsonl`` lives as long as the container (driver restarts and executor
replicas share it); gRPC ``Workspaces.Inspect`` reads its tail in a clean shell to report the
last exit codes.  Only the driver writes it, as root, in a folder only root may write
(``/opt/ise``, 0755): the agent's commands run as an unprivileged user and can read it but
neither edit, replace nor pre-plant it.  Each record is ``{"t": unix ms at the end, "cmd": the
first 200 characters, "exit_code", "duration_ms", "timed_out"}``.  The file is rewritten to its last ``KEEP`` records
whenever it reaches twice that, so it stays small however long the episode.
"""

import json
import os
import time

PATH = "/opt/ise/history.jsonl"
KEEP = 200
CMD_CHARS = 200


class History:
    def __init__(self, path=PATH):
        self.path = path
        try:
            with open(path, "rb") as fh:
                self.count = sum(1 for _ in fh)
        except OSError:
            self.count = 0

    def record(self, cmd, exit_code, duration_ms, timed_out):
        line = json.dumps(
            {
                "t": int(time.time() * 1000),
                "cmd": cmd[:CMD_CHARS],
                "exit_code": exit_code,
                "duration_ms": duration_ms,
                "timed_out": timed_out,
            },
            separators=(",", ":"),
        )
        try:
            with open(self.path, "a", encoding="utf-8") as fh:
                fh.write(line + "\n")
            self.count += 1
            if self.count >= 2 * KEEP:
                self.trim()
        except OSError:
            pass  # a full disk must not break the shell: the history is best effort

    def trim(self):
        with open(self.path, encoding="utf-8", errors="replace") as fh:
            lines = fh.readlines()[-KEEP:]
        tmp = self.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            fh.writelines(lines)
        os.replace(tmp, self.path)
        self.count = len(lines)
