"""Which installed files the services need at run time: the dependency closure of ``ise-trace``.

Owns: walking ``Requires-Dist`` from the installed ``ise-trace`` distribution (none of its own
extras; the extras it asks of a dependency, e.g. ``cuda-toolkit[cudart]``, followed; markers
evaluated for the running interpreter) through the distributions of the running Python
environment, and listing the files each one owns (pip's ``RECORD``) under its site-packages.
The compose services image copies exactly these (``compose_images.py``), not the test, lint and
build tools of the development venv.  Run as ``python -m services.stack.venv_closure [--skip
NAME] [ROOT ...]`` to print the closure with each distribution's size.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from services.common.errors import ConfigError

PROJECT = "ise-trace"


@dataclass(frozen=True)
class InstalledDist:
    """One distribution of the closure: its name, version and the files it owns."""

    name: str
    version: str
    site: Path  # the site-packages folder it is installed in
    files: tuple[Path, ...]  # relative to ``site``

    @property
    def size(self) -> int:
        return sum((self.site / f).stat().st_size for f in self.files)


def _installed() -> dict[str, md.Distribution]:
    found: dict[str, md.Distribution] = {}
    for dist in md.distributions():
        found.setdefault(canonicalize_name(dist.metadata["Name"]), dist)  # first on sys.path wins
    return found


def _requirements(dist: md.Distribution, extra: str) -> list[tuple[str, frozenset[str]]]:
    """(name, extras) ``dist`` needs here for ``extra`` ("" for its base requirements)."""
    needed: list[tuple[str, frozenset[str]]] = []
    for line in dist.requires or ():
        req = Requirement(line)
        if (req.marker is None and not extra) or (req.marker is not None and req.marker.evaluate({"extra": extra})):
            needed.append((canonicalize_name(req.name), frozenset(req.extras)))
    return needed


def _owned_files(dist: md.Distribution) -> tuple[Path, tuple[Path, ...]]:
    """Its site-packages and the files it installed there (console scripts in ``bin/`` excluded)."""
    site = Path(os.path.normpath(str(dist.locate_file(""))))
    files = []
    for entry in dist.files or ():
        path = Path(os.path.normpath(str(dist.locate_file(entry))))
        if path.is_relative_to(site) and path.is_file():
            files.append(path.relative_to(site))
    return site, tuple(files)


def closure(roots: Iterable[str] = (PROJECT,), *, skip: Iterable[str] = ()) -> list[InstalledDist]:
    """The installed distributions ``roots`` need, transitively, minus ``skip`` (and what only a
    skipped one needs).  The project's own entry lists no files: its code is this checkout."""
    installed = _installed()
    skipped = {canonicalize_name(n) for n in skip}
    pending: list[tuple[str, frozenset[str]]] = [(canonicalize_name(r), frozenset()) for r in roots]
    missing = [name for name, _ in pending if name not in installed]
    if missing:
        raise ConfigError(f"not installed in {sys.prefix}: {', '.join(missing)} (run `make install`)")
    seen: dict[str, InstalledDist] = {}
    followed: dict[str, set[str]] = {}  # the extras (and "" for the base) already followed, by name
    while pending:
        name, extras = pending.pop()
        if name in skipped:
            continue
        dist = installed.get(name)
        if dist is None:
            raise ConfigError(f"{name} is required but not installed in {sys.prefix} (run `make install`)")
        todo = ({""} | extras) - followed.setdefault(name, set())
        followed[name] |= todo
        if name not in seen:
            site, files = _owned_files(dist)
            if name == canonicalize_name(PROJECT):
                files = ()  # the project itself: an editable install of this checkout, copied as code
            seen[name] = InstalledDist(dist.metadata["Name"], dist.version, site, files)
        for extra in sorted(todo):
            pending.extend(_requirements(dist, extra))
    return sorted(seen.values(), key=lambda d: d.name.lower())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.stack.venv_closure",
        description="Print the installed distributions ROOT needs at run time (transitively) with their sizes.",
    )
    parser.add_argument("roots", nargs="*", default=[PROJECT], help=f"distributions to start from ({PROJECT})")
    parser.add_argument("--skip", action="append", default=[], help="leave this distribution out (repeatable)")
    args = parser.parse_args(argv)
    try:
        dists = closure(args.roots, skip=args.skip)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for dist in sorted(dists, key=lambda d: d.size, reverse=True):
        print(f"{dist.size / 1e6:9.1f} MB  {dist.name}=={dist.version}  ({len(dist.files)} files)")
    print(f"{sum(d.size for d in dists) / 1e6:9.1f} MB  total, {len(dists)} distributions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
