"""Unknown ``ISE_*`` environment variables are reported at start-up, never silently ignored.

Every setting is a field of a settings class (one per component, each with its own prefix),
plus a short list of variables read by the stack's tooling. A variable under ``ISE_`` that is
none of these is almost always a typo (``ISE_SIM_MAX_TURN=3``); :func:`check_environment`
names it and the closest known setting, and the process refuses to start (a ``ConfigError``).
Set ``ISE_ALLOW_UNKNOWN_SETTINGS=1`` to downgrade that to a warning (e.g. while rolling out a
setting that only newer services know).
"""

from __future__ import annotations

import difflib
import importlib
import logging
import os
from collections.abc import Mapping

from pydantic_settings import BaseSettings

from services.common.errors import ConfigError

log = logging.getLogger(__name__)

SETTINGS_CLASSES = (
    "services.common.settings:KafkaSettings",
    "services.common.settings:RedisSettings",
    "services.common.metrics:MetricsSettings",
    "services.intent.settings:IntentSettings",
    "services.dedup.settings:DedupSettings",
    "services.dedup.settings:PriceSettings",
    "services.simulator.settings:SimulatorSettings",
    "services.executor.settings:ExecutorSettings",
    "services.stack.settings:StackSettings",
)
"""Every component's settings class (``module:Class``); each declares its ``env_prefix``."""

LLM_ROLES = ("intent", "user", "agent")

TOOLING = frozenset(
    {
        "ISE_ALLOW_UNKNOWN_SETTINGS",
        "ISE_RUN_ID",  # the intent job's run id (set by `ise run`)
        "ISE_LOG_LEVEL",
        "ISE_LLM_MODEL",  # default model name for every LLM role
        "ISE_MODEL_CACHE",  # where the embedding model is reassembled
        "ISE_DEBIAN_MIRROR",  # read by deploy/workspace/build_rootfs.sh
        "ISE_DEBOOTSTRAP_CACHE",
        "ISE_ROOTFS_WORKDIR",
        "ISE_ROOTFS_TMPFS",
        "ISE_VENV",
        "ISE_WEB_CACHE_DIR",  # the local web's built corpus and index (services/web/cache.py)
        "ISE_EGRESS_MITMDUMP",  # another mitmdump binary (services/egress/launcher.py)
        "ISE_EGRESS_SECRET_FILE",  # read by the proxy's addon inside mitmdump
        "ISE_COMPOSE_VERSION",  # scripts/install_compose.sh: the Compose release it builds
        "ISE_COMPOSE_PLUGIN_DIR",
        "ISE_LLM_ENV_FILE",  # compose.yaml: the services' env file (deploy/compose/*.env)
        "ISE_OUT_DIR",  # compose.yaml: the host folder mounted as the dataset dir
    }
)
"""Variables read by the stack's scripts and tooling rather than by a settings class."""


def _fields(cls: type[BaseSettings], prefix: str) -> set[str]:
    names = set()
    for name, info in cls.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif alias is not None:
            names |= {str(choice).upper() for choice in getattr(alias, "choices", ())}
        else:
            names.add(f"{prefix}{name}".upper())
    return names


def known_settings() -> set[str]:
    """Every ``ISE_*`` variable some component reads."""
    from services.common.settings import LLMSettings

    names = set(TOOLING)
    for spec in SETTINGS_CLASSES:
        module, _, attr = spec.partition(":")
        cls = getattr(importlib.import_module(module), attr)
        names |= _fields(cls, str(cls.model_config.get("env_prefix", "")))
    for role in LLM_ROLES:
        names |= _fields(LLMSettings, f"ISE_LLM_{role.upper()}_")
    return names


def unknown_settings(environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Unknown ``ISE_*`` names in ``environ``, each with the closest known name (or None)."""
    env = os.environ if environ is None else environ
    known = known_settings()
    unknown = sorted(name for name in env if name.startswith("ISE_") and name not in known)
    return {name: next(iter(difflib.get_close_matches(name, known, n=1, cutoff=0.8)), None) for name in unknown}


def check_environment(environ: Mapping[str, str] | None = None) -> None:
    """Raise :class:`ConfigError` naming every unknown ``ISE_*`` variable (a warning with
    ``ISE_ALLOW_UNKNOWN_SETTINGS=1``)."""
    env = os.environ if environ is None else environ
    unknown = unknown_settings(env)
    if not unknown:
        return
    lines = [f"  {name}" + (f" (did you mean {hint}?)" if hint else "") for name, hint in unknown.items()]
    message = "unknown ISE_* settings in the environment:\n" + "\n".join(lines)
    message += "\nFix or unset them (ISE_ALLOW_UNKNOWN_SETTINGS=1 turns this into a warning)."
    if env.get("ISE_ALLOW_UNKNOWN_SETTINGS", "").lower() in ("1", "true", "yes"):
        log.warning("%s", message)
        return
    raise ConfigError(message)
