"""The embedded stack's exceptions (under ``ISEError``, see ``services/common/errors.py``).

::

    ISEError
    └── StackError             a piece of the local stack could not be installed, started or reached
        └── QuotaRootUnavailable   the btrfs data root for disk quotas cannot be set up here
"""

from __future__ import annotations

from services.common.errors import ISEError


class StackError(ISEError, RuntimeError):
    """A piece of the local stack could not be installed, started or reached."""


class QuotaRootUnavailable(StackError):
    """The btrfs data root cannot be set up on this machine (the reason says why)."""
