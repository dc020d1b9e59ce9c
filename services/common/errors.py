"""The root of every ISE exception, and the two kinds a consumer must tell apart.

    ISEError
    ├── ConfigError          bad settings or input files: fix the config, retrying will not help
    ├── PermanentError       this message can never be processed: dead-letter it, move on
    │   ├── ContractError    the bytes are not a valid event of the expected model
    │   └── LLMRequestError  an LLM endpoint refused the request (400/404/422)
    ├── TransientError       infrastructure hiccup (broker, Redis, LLM endpoint): retry with backoff
    │   └── LLMUnavailable   an LLM endpoint did not answer, timed out, or kept answering 429/5xx
    ├── LocalModelError      the local model server cannot be installed, started or reached
    └── LockTimeout          another process held a set-up lock for too long

Each service derives its own tree from these, in its own ``errors.py``: ``services/intent``,
``services/dedup``, ``services/simulator``, ``services/executor`` and ``services/stack``.
Outages of Redis and Kafka themselves arrive as the client libraries' exceptions; the bus tells
them apart with ``retry.is_outage``.
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


class LLMUnavailable(TransientError):
    """The endpoint did not answer, timed out, or answered 429/5xx after the client's retries."""


class LLMRequestError(PermanentError):
    """The endpoint refused the request (400/404/422): retrying the same request will not help."""


class LocalModelError(ISEError, RuntimeError):
    """The local model server cannot be installed, started or reached."""


class LockTimeout(ISEError, TimeoutError):
    """Another process held the lock for longer than we were willing to wait."""
