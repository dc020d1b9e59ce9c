"""In-container driver of a workspace's long-lived shell: a standard-library package shipped into
each workspace (``put_archive`` to ``/opt/ise/shell_driver``) and run there as
``python3 -m shell_driver PIDS_LIMIT``.  Never imported on the host except by tests of its pure parts.

It keeps ONE interactive bash whose state (cwd, exported and plain variables, functions,
aliases) persists from one command to the next, and answers JSON lines on stdin/stdout:

* ``{"id": int, "cmd": str, "workdir": str|null, "timeout": float, "cap": int, "record": bool}``
  runs a command (``op`` absent or ``"exec"``): zero or more ``{"id", "o"|"e": base64}`` chunks
  (only the first ``cap`` bytes of each stream), then ``{"id", "done": true, "exit_code",
  "duration_ms", "truncated", "timed_out", "note"}``.  ``record`` (default true) appends the
  outcome to the workspace's command history (``history.py``).
* ``{"id", "op": "read", "path", "max"}`` and ``{"id", "op": "write", "path", "data": base64}``
  read or replace one file (``files.py``): one ``{"id", "done": true, ...}`` reply, with
  ``"error"`` (and ``"missing"``) when it failed.

The first line on stdout is ``{"ready": true, "pid": N}``.  Requests are sequential (the host
holds a per-episode lock).  Modules: ``driver.py`` (requests, timeouts, process watchdog),
``bash.py`` (the bash process and its pipes), ``procs.py`` (session members, signals, pids
usage), ``files.py``, ``history.py``, ``wire.py`` (JSON lines, bash quoting).
"""
