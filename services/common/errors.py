"""The root of every ISE exception, and the two kinds a consumer must tell apart.

    ISEError
    ├── ConfigError          bad settings or input files: fix the config, retrying will not help
    ├── PermanentError       this message can never be processed: dead-letter it, move on
    │   └── ContractError    the bytes are not a valid event of the expected model
    └── TransientError       infrastructure hiccup (broker, Redis, LLM endpoint): retry with backoff

Each service derives its own tree from these (see ``services/<name>/errors.py``).
"""

from __future__ import annotations


class ISEError(Exception):
    """Root of all ISE-Trace errors."""


class ConfigError(ISEError, ValueError):
    """Invalid settings or input; the message says which setting and how to fix it."""


class PermanentError(ISEError):
    """Processing this message can never succeed; it goes to ``ise.dlq``."""


class ContractError(PermanentError, ValueError):
    """A message is not a valid event of the model its topic carries."""


class TransientError(ISEError):
    """A temporary failure of something outside the process; worth retrying."""
