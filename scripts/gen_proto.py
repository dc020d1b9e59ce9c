"""Generate the Python gRPC stubs from ``proto/`` into the committed package ``services.common.rpc``.

    python scripts/gen_proto.py          # (re)write services/common/rpc/ise/v1/*_pb2*.py(i)
    python scripts/gen_proto.py --check  # regenerate into a temp dir; exit 1 naming stale files

protoc writes absolute imports such as ``from ise.v1 import workspaces_pb2``; they are rewritten
to ``from services.common.rpc.ise.v1 import ...`` so the stubs import as an ordinary sub-package
of ``services`` without touching ``sys.path``.  Package ``__init__.py`` files are generated too,
so ``--check`` also notices a missing one.  The output depends on the pinned grpcio-tools version.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services" / "common" / "rpc"
OUT_PACKAGE = "services.common.rpc"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
INIT_DOC = '"""Generated gRPC stubs ({name}); regenerate with scripts/gen_proto.py, never edit."""\n'


def proto_files(proto_dir: Path = PROTO_DIR) -> list[Path]:
    """All ``.proto`` files under ``proto_dir``, relative to it, in a stable order."""
    return sorted(path.relative_to(proto_dir) for path in proto_dir.rglob("*.proto"))


def _fix_imports(text: str, top_packages: set[str]) -> str:
    """Rewrite protoc's absolute imports of our own packages into ``services.common.rpc``."""
    for top in sorted(top_packages):
        text = re.sub(rf"^(\s*)from {top}(\.| import )", rf"\1from {OUT_PACKAGE}.{top}\2", text, flags=re.M)
        text = re.sub(rf"^(\s*)import {top}\.", rf"\1import {OUT_PACKAGE}.{top}.", text, flags=re.M)
    return text


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate every stub and package ``__init__`` into ``out_dir``; return the files written."""
    from grpc_tools import protoc  # a dev dependency: imported only when generating

    files = proto_files(proto_dir)
    if not files:
        raise SystemExit(f"no .proto files under {proto_dir}")
    well_known = importlib.resources.files("grpc_tools") / "_proto"
    with tempfile.TemporaryDirectory() as raw_dir:
        argv = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={raw_dir}",
            f"--pyi_out={raw_dir}",
            f"--grpc_python_out={raw_dir}",
            *(str(path) for path in files),
        ]
        code = protoc.main(argv)
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        top_packages = {path.parts[0] for path in files if len(path.parts) > 1}
        written: list[Path] = []
        for src in sorted(Path(raw_dir).rglob("*")):
            if not src.is_file() or not src.name.endswith(GENERATED_SUFFIXES):
                continue
            dest = out_dir / src.relative_to(raw_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(_fix_imports(src.read_text(), top_packages))
            written.append(dest)
    # Every folder from out_dir down to a stub is a package.
    packages = {rel for stub in written for rel in stub.parent.relative_to(out_dir).parents}
    packages |= {stub.parent.relative_to(out_dir) for stub in written}
    for rel in sorted(packages):
        init = out_dir / rel / "__init__.py"
        init.write_text(INIT_DOC.format(name=".".join([OUT_PACKAGE, *rel.parts])))
        written.append(init)
    return sorted(written)


def _tree(folder: Path) -> dict[str, bytes]:
    """The generated-looking files under ``folder`` (stubs and ``__init__.py``), by relative path."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file() and (path.name.endswith(GENERATED_SUFFIXES) or path.name == "__init__.py")
    }


def stale_files(out_dir: Path = OUT_DIR, proto_dir: Path = PROTO_DIR) -> list[str]:
    """Committed files that differ from a fresh generation (changed, missing or extra)."""
    with tempfile.TemporaryDirectory() as fresh_dir:
        generate(Path(fresh_dir), proto_dir)
        fresh, committed = _tree(Path(fresh_dir)), _tree(out_dir)
    problems = []
    for rel in sorted(fresh.keys() | committed.keys()):
        if rel not in committed:
            problems.append(f"missing: {rel}")
        elif rel not in fresh:
            problems.append(f"extra (no .proto generates it): {rel}")
        elif fresh[rel] != committed[rel]:
            problems.append(f"stale: {rel}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail (exit 1) when the stubs are stale")
    args = parser.parse_args(argv)
    rel_out = OUT_DIR.relative_to(ROOT)
    if args.check:
        problems = stale_files()
        for line in problems:
            print(f"{rel_out}/{line.split(': ', 1)[1]}: {line.split(': ', 1)[0]}", file=sys.stderr)
        if problems:
            print("stubs are stale: run `python scripts/gen_proto.py`", file=sys.stderr)
            return 1
        print(f"{rel_out}: stubs up to date")
        return 0
    for path in OUT_DIR.rglob("*"):
        if path.is_file() and path.name.endswith(GENERATED_SUFFIXES):
            path.unlink()  # drop stubs of removed .proto files
    for path in generate(OUT_DIR):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
