"""The local web's git repositories: small bare repos made from stdlib packages on this machine,
with fixed authors and dates (same content, same commit ids), prepared for git's dumb HTTP
protocol (``git update-server-info``) so a static file server can serve ``git clone``."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sysconfig
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("ise.web.git")

GIT_HOST = "git.ise.test"
AUTHOR = ("ISE Fixtures", "fixtures@ise.test")


@dataclass(frozen=True)
class RepoSpec:
    """A repository: the stdlib package it copies and the files each commit adds."""

    name: str
    package: str
    summary: str
    commits: tuple[tuple[str, tuple[str, ...]], ...]  # (message, files added by that commit)


REPOS = (
    RepoSpec(
        "json",
        "json",
        "A JSON encoder and decoder (the Python 3.11 standard library's json package).",
        (
            ("Add the decoder and its scanner", ("decoder.py", "scanner.py")),
            ("Add the encoder and the package API", ("encoder.py", "__init__.py")),
            ("Add the json.tool command line", ("tool.py",)),
        ),
    ),
    RepoSpec(
        "tomllib",
        "tomllib",
        "A TOML 1.0 parser (the Python 3.11 standard library's tomllib package).",
        (
            ("Add the parser's types and regular expressions", ("_types.py", "_re.py")),
            ("Add the parser and the package API", ("_parser.py", "__init__.py")),
        ),
    ),
    RepoSpec(
        "wsgiref",
        "wsgiref",
        "WSGI utilities and a reference server (the Python 3.11 standard library's wsgiref package).",
        (
            ("Add headers and utilities", ("headers.py", "util.py", "types.py")),
            ("Add the handlers and the validator", ("handlers.py", "validate.py")),
            ("Add the simple server and the package docstring", ("simple_server.py", "__init__.py")),
        ),
    ),
)


def clone_url(name: str) -> str:
    return f"http://{GIT_HOST}/{name}.git"


def _git_env(when: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME=AUTHOR[0],
        GIT_AUTHOR_EMAIL=AUTHOR[1],
        GIT_COMMITTER_NAME=AUTHOR[0],
        GIT_COMMITTER_EMAIL=AUTHOR[1],
        GIT_AUTHOR_DATE=when,
        GIT_COMMITTER_DATE=when,
    )
    return env


def _git(cwd: Path, *args: str, when: str = "2024-01-01T12:00:00+00:00") -> str:
    out = subprocess.run(
        ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", "-c", "core.autocrlf=false", *args],
        cwd=cwd,
        env=_git_env(when),
        capture_output=True,
        text=True,
        timeout=120,
    )
    if out.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} failed in {cwd}: {out.stderr.strip()}")
    return out.stdout


def _readme(spec: RepoSpec, files: list[str], stage: int) -> str:
    listing = "\n".join(f"- `{spec.package}/{f}`" for f in sorted(files))
    return (
        f"# {spec.name}\n\n{spec.summary}\n\n"
        f"A fixture repository of ISE-Trace's local web: the files are copied unchanged from this\n"
        f"machine's Python standard library (license: PSF-2.0), committed in {len(spec.commits)} steps.\n\n"
        f"## Files (after step {stage})\n\n{listing}\n\n"
        f"## Clone\n\n```\ngit clone {clone_url(spec.name)}\n```\n"
    )


def build_repo(spec: RepoSpec, dest: Path, stdlib: Path) -> Path:
    """Make ``dest/<name>.git`` (bare, packed, ready for dumb HTTP) from ``stdlib/<package>``."""
    source = stdlib / spec.package
    work = dest / f".work-{spec.name}"
    bare = dest / f"{spec.name}.git"
    shutil.rmtree(work, ignore_errors=True)
    (work / spec.package).mkdir(parents=True)
    _git(work, "init", "-q")
    added: list[str] = []
    for step, (message, files) in enumerate(spec.commits, start=1):
        for name in files:
            target = work / spec.package / name
            target.write_bytes((source / name).read_bytes())
            target.chmod(0o644)
            added.append(name)
        (work / "README.md").write_text(_readme(spec, added, step), encoding="utf-8")
        when = f"2024-01-{step:02d}T12:00:00+00:00"
        _git(work, "add", "-A", when=when)
        _git(work, "commit", "-q", "-m", message, when=when)
    _git(work, "tag", "-a", "v1.0", "-m", f"{spec.name} 1.0", when=f"2024-01-{len(spec.commits):02d}T13:00:00+00:00")
    _git(dest, "init", "-q", "--bare", bare.name)
    _git(work, "push", "-q", str(bare), "main", "v1.0")
    _git(bare, "repack", "-a", "-d", "-q")
    _git(bare, "update-server-info")
    shutil.rmtree(bare / "hooks", ignore_errors=True)
    (bare / "description").write_text(spec.summary + "\n", encoding="utf-8")
    shutil.rmtree(work)
    return bare


def build_repos(dest: Path, stdlib: Path | None = None) -> list[str]:
    """Build every repository of REPOS under ``dest``; returns their names."""
    stdlib = stdlib or Path(sysconfig.get_paths()["stdlib"])
    dest.mkdir(parents=True, exist_ok=True)
    names = []
    for spec in REPOS:
        build_repo(spec, dest, stdlib)
        log.info("built git repo %s (%d commits) -> %s", spec.name, len(spec.commits), clone_url(spec.name))
        names.append(spec.name)
    return names
