"""The executor's exception tree.

::

    ExecutorError                     root of everything the executor raises on purpose (an ISEError)
    ├── WorkspaceError                a workspace operation failed
    │   ├── WorkspaceNotFound         no live workspace for that episode
    │   ├── WorkspaceUnavailable      the sandbox infrastructure (Docker daemon, image) failed;
    │   │                             also a TransientError
    │   ├── WorkspaceConflict         the episode's name is taken by another run or a foreign container
    │   └── FileOpError               a file operation failed inside a live workspace
    │                                 (missing file, is a directory, permission denied, ...)
    ├── ToolArgumentError             a tool call's arguments are invalid (bad path, bad timeout, ...)
    ├── WebUnavailable                the egress proxy is down or refuses the executor (also a
    │                                 TransientError: the turn is an infrastructure error)
    ├── UnknownEpisodeError           a user turn for an episode no simulator started (also a
    │                                 PermanentError: dead-lettered, no workspace is made)
    ├── ShellUnavailable              the shell driver cannot start here (falls back to docker exec)
    ├── AuthConfigError               unusable or unsafe gRPC auth settings (also a ConfigError)
    ├── SkillError                    a skill folder's SKILL.md is unusable (also a ConfigError)
    ├── DeadlineExceeded              too little of a gRPC call's deadline was left to start the work
    └── Refused                       a gRPC request refused with a specific status code

At the gRPC edge these map to NOT_FOUND, UNAVAILABLE, ALREADY_EXISTS, FAILED_PRECONDITION /
NOT_FOUND (see ``FileOpError.missing``) and INVALID_ARGUMENT; inside the pipeline ``WorkspaceUnavailable``
marks an episode as an infrastructure error (retried, never written as training data).
"""

from __future__ import annotations

import grpc

from services.common.errors import ConfigError, ISEError, PermanentError, TransientError


class ExecutorError(ISEError):
    """Root of the executor's exceptions."""


class WorkspaceError(ExecutorError):
    """A workspace operation failed."""


class WorkspaceNotFound(WorkspaceError):
    """There is no live workspace for the episode."""

    def __init__(self, episode_id: str) -> None:
        super().__init__(f"no workspace for episode {episode_id!r}")
        self.episode_id = episode_id


class WorkspaceUnavailable(WorkspaceError, TransientError):
    """The sandbox infrastructure failed (daemon unreachable, image missing, API error)."""


class WorkspaceConflict(WorkspaceError):
    """The episode's workspace name is taken by another run's workspace or a foreign container."""


class FileOpError(WorkspaceError):
    """A file operation failed inside a live workspace.

    ``missing`` is True when the path (or one of its parents) does not exist, so callers can
    tell "no such file" apart from "is a directory" / "permission denied".
    """

    def __init__(self, path: str, reason: str, *, missing: bool = False) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.missing = missing


class ToolArgumentError(ExecutorError):
    """A tool call (or API request) carried invalid arguments."""


class WebUnavailable(ExecutorError, TransientError):
    """The egress proxy cannot be reached or refuses the executor itself (an infrastructure error)."""


class UnknownEpisodeError(ExecutorError, PermanentError):
    """A user turn names an episode that no simulator registered (forged or long expired)."""


class DeadlineExceeded(ExecutorError):
    """Too little of the call's deadline was left to start the work."""


class ShellUnavailable(ExecutorError):
    """The driver could not be started in this workspace (the caller falls back to docker exec)."""


class Refused(ExecutorError):
    """A request refused with a specific status code (INVALID_ARGUMENT, RESOURCE_EXHAUSTED, ...)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class AuthConfigError(ExecutorError, ConfigError):
    """The gRPC auth settings are unusable (or unsafe for the bind address)."""


class SkillError(ExecutorError, ConfigError):
    """A skill's SKILL.md is unusable (front matter, name, description, size); names the file and the fix."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem
