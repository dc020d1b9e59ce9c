"""In-container driver of a workspace's long-lived shell: a standard-library package shipped into
each workspace (``put_archive`` to ``/opt/ise/shell_driver``) and run there as
``python3 -m shell_driver PIDS_LIMIT AGENT_USER`` as root.  Never imported on the host except by
tests of its pure parts.

It runs each command as a fresh bash of the unprivileged agent user whose exit status, reaped by
the driver, is the result (no control channel a command could forge); the shell state (cwd,
exported and plain variables, functions, aliases, umask) persists from one command to the next
through a state file the agent's bash saves and restores.  It answers JSON lines on stdin/stdout:

* ``{"id": int, "cmd": str, "workdir": str|null, "timeout": float, "cap": int, "record": bool}``
  runs a command (``op`` absent or ``"exec"``): zero or more ``{"id", "o"|"e": base64}`` chunks
  (only the first ``cap`` bytes of each stream), then ``{"id", "done": true, "exit_code",
  "duration_ms", "truncated", "timed_out", "note"}``.  ``record`` (default true) appends the
  outcome to the workspace's command history (``history.py``); ``record: false`` (the executor's
  own probes) also runs without the agent's saved shell state.
* ``{"id", "op": "read", "path", "max"}`` and ``{"id", "op": "write", "path", "data": base64}``
  read or replace one file (``files.py``, with the agent's uid and gid): one ``{"id", "done":
  true, ...}`` reply, with ``"error"`` (and ``"missing"``) when it failed.

The first line on stdout is ``{"ready": true, "pid": N, "uid": agent uid}``.  Requests are
sequential (the host holds a per-episode lock).  Modules: ``driver.py`` (requests, timeouts, process watchdog),
``bash.py`` (the agent user and one command's bash), ``procs.py`` (session and user members,
signals, pids usage), ``files.py``, ``history.py`` (root-owned, outside the agent's reach),
``wire.py`` (JSON lines).
"""
