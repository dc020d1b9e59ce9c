"""The intent service's exceptions (under ``ISEError``, see ``services/common/errors.py``).

::

    ConfigError
    └── IntentFileError        a line of an intents file that cannot be imported
    PermanentError
    └── RenderError            the LLM did not produce a valid request within the attempts
    TransientError
    └── PublishInterrupted     publishing stopped part-way; re-running with the same run id is safe
"""

from __future__ import annotations

import os

from services.common.errors import ConfigError, PermanentError, TransientError


class IntentFileError(ConfigError):
    """A line of an intents file that cannot be imported (``line`` is None for the whole file)."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, field: str, problem: str) -> None:
        self.path, self.line, self.field, self.problem = str(path), line, field, problem
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {field}: {problem}" if field else f"{where}: {problem}")


class RenderError(PermanentError):
    """The LLM did not produce a valid request within the allowed attempts."""


class PublishInterrupted(TransientError):
    """Publishing stopped part-way (the broker failed); ``published`` intents are on the topic."""

    def __init__(self, run_id: str, published: int, total: int, cause: BaseException) -> None:
        self.run_id, self.published, self.total, self.cause = run_id, published, total, cause
        super().__init__(
            f"publishing to run {run_id} stopped after {published} of {total} intent(s): "
            f"{type(cause).__name__}: {cause}. Re-run the same command with --run-id {run_id} once the broker "
            "is reachable: event ids are deterministic, so intents already published are not counted twice"
        )
