"""What changed in an episode's workspace since the episode started, read with ``backend.exec`` only.

The reference point is a marker file, ``/opt/ise/episode-start``, created by ``mark_episode_start``
the first time the executor hands the workspace to an episode (gRPC ``Create``, and every agent
turn; creation only happens when the marker is missing, so redeliveries and resumed episodes
never move it).  A marker is used instead of the container's start time because containers from
a warm pool are started long before an episode acquires them, and instead of a time sent by a
client because the container's own clock (shared with the files' times) is the only one that
cannot disagree with the files.  ``find -cnewer`` then lists the regular files under
``/workspace`` whose status-change time (ctime) is later than the marker's mtime (dated 50 ms
back, see ``MARKER_BACKDATE_NS``): image files (older) never appear, files written by ``exec``,
``write`` or ``WriteFile`` do.  ctime rather than mtime, because nothing inside the container can
set it back: ``write`` stores files with a tar header whose mtime is cut to whole seconds (it
would fall before the marker), and ``touch -d`` or ``tar x`` can date an mtime anywhere.
Without a marker (a workspace started some other way) every file is listed and ``since_start``
says so.  The marker lives in the root-only ``/opt/ise`` and is created as root
(``backend.exec_system``, once per episode): the agent can read it but neither move nor delete it,
so it cannot hide its changes from the user model.

The latest commands come from the history the shell driver appends to in the container
(``shell_driver/history.py``: command head, exit code, duration, timed out, end time; written
by the root driver to a root-owned file the agent's commands can read but not change), read with
``tail`` and kept when they ended after the marker.  Everything runs unrecorded in a fresh bash
that does not load the agent's saved shell state, under a clean ``env -i bash --noprofile
--norc``, so the agent's functions, aliases, ``set -e`` or ``cd`` cannot change the answer.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field

from services.executor.errors import WorkspaceError
from services.executor.workspace.base import WorkspaceBackend
from services.executor.workspace.shell_driver.history import PATH as HISTORY_PATH

WORKSPACE_DIR = "/workspace"
MARKER_DIR = "/opt/ise"  # root-owned; the driver keeps the command history here too
MARKER_PATH = f"{MARKER_DIR}/episode-start"
PRUNED_DIRS: tuple[str, ...] = (".git", "node_modules", "__pycache__", ".venv")
DEFAULT_MAX_FILES = 200
DEFAULT_MAX_COMMANDS = 10
MAX_COMMANDS_LIMIT = 100  # history lines are at most ~300 bytes: well inside the exec output cap
MAX_FILES_LIMIT = 5000  # bounded by the exec output cap too (about 64 KiB of listing)
INSPECT_TIMEOUT_S = 20.0
# The kernel stamps file times from a coarse clock (one tick, up to 10 ms), and ``find -cnewer`` is a
# strict comparison: the marker is dated 50 ms back so a file written right after it still counts.
MARKER_BACKDATE_NS = 50_000_000
_CLEAN_SHELL = "/usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C /bin/bash --noprofile --norc -c "


class InspectError(WorkspaceError):
    """The inspection command itself failed in the workspace (not a missing workspace)."""


@dataclass(frozen=True)
class ChangedFile:
    path: str  # relative to /workspace
    size: int
    changed_unix_ms: int


@dataclass(frozen=True)
class CommandOutcome:
    command: str  # the first 200 characters
    exit_code: int
    duration_ms: int
    timed_out: bool
    finished_unix_ms: int


@dataclass(frozen=True)
class WorkspaceState:
    files: list[ChangedFile] = field(default_factory=list)  # most recently changed first
    truncated: bool = False
    since_start: bool = False  # False: no marker, every file under /workspace is listed
    started_unix_ms: int = 0
    commands: list[CommandOutcome] = field(default_factory=list)  # oldest first


def _clean(script: str) -> str:
    return _CLEAN_SHELL + shlex.quote(script)


def mark_episode_start(backend: WorkspaceBackend, episode_id: str) -> None:
    """Create the episode-start marker if it is missing (idempotent; never moves an existing one).

    The check is a cheap unprivileged probe on every turn; the creation, as root, happens once."""
    marker = shlex.quote(MARKER_PATH)
    probe = backend.exec(
        episode_id, _clean(f"[ -e {marker} ]"), workdir=None, timeout_s=INSPECT_TIMEOUT_S, record=False
    )
    if probe.exit_code == 0:
        return
    script = (
        f"[ -e {marker} ] && exit 0; mkdir -p {shlex.quote(MARKER_DIR)} && chmod 0755 {shlex.quote(MARKER_DIR)}; "
        f"t=$(( $(date +%s%N) - {MARKER_BACKDATE_NS} )); "
        f'touch -d "@${{t:0:-9}}.${{t: -9}}" {marker} && chmod 0644 {marker}'
    )
    result = backend.exec_system(episode_id, script)
    if result.exit_code != 0:
        raise InspectError(f"cannot create the episode-start marker (exit {result.exit_code}): {result.stderr[:300]}")


def inspect_script(max_files: int, max_commands: int = DEFAULT_MAX_COMMANDS) -> str:
    """The shell script: a header line, ``history N`` and N history lines, then
    ``ctime\\tsize\\tpath\\0`` records, newest first."""
    marker = shlex.quote(MARKER_PATH)
    history = shlex.quote(HISTORY_PATH)
    prune = " -o ".join(f"-name {shlex.quote(name)}" for name in PRUNED_DIRS)
    return (
        f'if [ -e {marker} ]; then echo "marker $(stat -c %.3Y {marker})"; newer=(-cnewer {marker}); '
        "else echo 'nomarker 0'; newer=(); fi\n"
        f"h=''; [ {max_commands} -gt 0 ] && h=$(tail -n {max_commands} {history} 2>/dev/null)\n"
        "printf 'history %s\\n' \"$(printf '%s' \"$h\" | grep -c '')\"; [ -n \"$h\" ] && printf '%s\\n' \"$h\"\n"
        f"find {WORKSPACE_DIR} -xdev \\( -type d \\( {prune} \\) -prune \\) -o "
        "-type f \"${newer[@]}\" -printf '%C@\\t%s\\t%P\\0' 2>/dev/null "
        f"| sort -z -t $'\\t' -k1,1gr -k3 | head -z -n {max_files + 1}\n"
        "exit 0"
    )


def parse_listing(stdout: str, max_files: int, cut: bool) -> WorkspaceState:
    """Parse ``inspect_script``'s output; ``cut`` means the exec output cap was hit."""
    header, _, rest = stdout.partition("\n")
    kind, _, stamp = header.partition(" ")
    label, _, count = rest.partition("\n")[0].partition(" ")
    if kind not in ("marker", "nomarker") or label != "history" or not count.isdigit():
        raise InspectError(f"unexpected inspection output: {stdout[:200]!r}")
    *history, body = rest.partition("\n")[2].split("\n", int(count))
    started_ms = int(float(stamp or 0) * 1000)
    records = body.split("\0")
    records.pop()  # the text after the last NUL: empty, or a record the output cap cut
    files: list[ChangedFile] = []
    for record in records:
        parts = record.split("\t", 2)
        if len(parts) != 3:
            continue
        changed, size, path = parts
        files.append(ChangedFile(path=path, size=int(size), changed_unix_ms=int(float(changed) * 1000)))
    truncated = cut or len(files) > max_files
    return WorkspaceState(
        files=files[:max_files],
        truncated=truncated,
        since_start=kind == "marker",
        started_unix_ms=started_ms,
        commands=[c for c in map(_command, history) if c is not None and c.finished_unix_ms >= started_ms],
    )


def _command(line: str) -> CommandOutcome | None:
    """One history record; None for a line that is not one (a half-written or edited file)."""
    try:
        raw = json.loads(line)
        return CommandOutcome(
            command=str(raw["cmd"]),
            exit_code=int(raw["exit_code"]),
            duration_ms=int(raw["duration_ms"]),
            timed_out=bool(raw["timed_out"]),
            finished_unix_ms=int(raw["t"]),
        )
    except (ValueError, KeyError, TypeError):
        return None


def inspect_workspace(
    backend: WorkspaceBackend,
    episode_id: str,
    *,
    max_files: int = DEFAULT_MAX_FILES,
    max_commands: int = DEFAULT_MAX_COMMANDS,
) -> WorkspaceState:
    """The files under /workspace created or changed and the latest commands since the episode started (blocking).

    Raises the backend's errors (``WorkspaceNotFound``, ``WorkspaceUnavailable``) unchanged and
    ``InspectError`` when the listing command fails.
    """
    if not 0 < max_files <= MAX_FILES_LIMIT:
        raise ValueError(f"max_files must be in (0, {MAX_FILES_LIMIT}], got {max_files}")
    if not 0 <= max_commands <= MAX_COMMANDS_LIMIT:
        raise ValueError(f"max_commands must be in [0, {MAX_COMMANDS_LIMIT}], got {max_commands}")
    result = backend.exec(
        episode_id,
        _clean(inspect_script(max_files, max_commands)),
        workdir=None,
        timeout_s=INSPECT_TIMEOUT_S,
        record=False,
    )
    if result.exit_code != 0 or result.timed_out:
        raise InspectError(f"inspection failed (exit {result.exit_code}): {result.stderr[:300]}")
    return parse_listing(result.stdout, max_files, result.truncated)
