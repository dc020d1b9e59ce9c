"""argparse ``type=`` checkers for the ``ise`` options, so bad values fail with a usage message."""

from __future__ import annotations

import argparse
import math

from services.common.contracts.envelope import is_safe_id


def _number(value: str, kind: type[int] | type[float]) -> int | float:
    try:
        number = kind(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, not {value!r}"
        ) from None
    if isinstance(number, float) and not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"expected a finite number, not {value!r}")
    return number


def positive_int(value: str) -> int:
    """An integer >= 1."""
    number = int(_number(value, int))
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {value}")
    return number


def non_negative_int(value: str) -> int:
    """An integer >= 0."""
    number = int(_number(value, int))
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {value}")
    return number


def positive_float(value: str) -> float:
    """A finite number > 0."""
    number = float(_number(value, float))
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {value}")
    return number


def run_id_arg(value: str) -> str:
    """A run id that is a safe id (it names the folder ``out/<run_id>`` and keys every event)."""
    if not is_safe_id(value) or value.endswith("\n"):  # the pattern ends in "$", which passes a trailing newline
        raise argparse.ArgumentTypeError(
            f"{value!r} is not a usable run id: use 1-128 letters, digits, '.', '_', ':' or '-', starting with "
            "a letter or digit (it names the folder out/<run_id>)"
        )
    return value
