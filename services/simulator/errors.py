"""The simulator's exceptions (under ``ISEError``, see ``services/common/errors.py``).

::

    TransientError
    └── UserModelError      the user LLM kept answering with something that is not a decision;
                            the episode ends as an infrastructure error and is retried
"""

from __future__ import annotations

from services.common.errors import TransientError


class UserModelError(TransientError):
    """The user LLM kept answering with something that is not a decision."""
