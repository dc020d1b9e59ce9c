"""Generate the Python gRPC stubs from ``proto/`` into the committed package ``services.common.rpc``.

    python scripts/gen_proto.py          # (re)write services/common/rpc/ise/v1/*_pb2*.py(i)
    python scripts/gen_proto.py --check  # regenerate into a temp dir; exit 1 naming stale files
    python scripts/gen_proto.py --go [--check]  # the same for the Go stubs in clients/go/gen/

protoc writes absolute imports such as ``from ise.v1 import workspaces_pb2``; they are rewritten
to ``from services.common.rpc.ise.v1 import ...`` so the stubs import as an ordinary sub-package
of ``services`` without touching ``sys.path``.  Package ``__init__.py`` files are generated too,
so ``--check`` also notices a missing one.  The output depends on the pinned grpcio-tools version.

``--go`` generates the Go stubs (``clients/go/gen/ise/v1/*.pb.go``, package ``isev1``) with the same
protoc plus ``protoc-gen-go`` and ``protoc-gen-go-grpc`` at pinned versions, installed on first use
with ``go install`` into the project-local ``.cache/go-bin`` (needs ``go`` and the Go module proxy;
the committed stubs need neither).  The ``.proto`` files carry no ``go_package``: the import path is
given to the plugins with ``M`` options.
"""

from __future__ import annotations

import argparse
import importlib.resources
import re
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "proto"
OUT_DIR = ROOT / "services" / "common" / "rpc"
OUT_PACKAGE = "services.common.rpc"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")
GO_MODULE = "github.com/ise-trace/ise-trace/clients/go"
GO_DIR = ROOT / "clients" / "go"
GO_OUT_DIR = GO_DIR / "gen"
GO_BIN = ROOT / ".cache" / "go-bin"
GO_PLUGINS = {  # plugin -> the module path@version `go install` takes it from
    "protoc-gen-go": "google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12",
    "protoc-gen-go-grpc": "google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.1",
}
GO_SUFFIXES = (".pb.go",)
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


def _run_protoc(
    proto_dir: Path, files: list[Path], out_dir: Path, options: list[str], suffixes: tuple[str, ...], fix: Any = None
) -> list[Path]:
    """protoc (grpcio-tools) with ``options`` (``{raw}`` is its output folder); copy the files
    ending in ``suffixes`` into ``out_dir`` (through ``fix(text)`` when given); return them."""
    from grpc_tools import protoc  # a dev dependency: imported only when generating

    well_known = importlib.resources.files("grpc_tools") / "_proto"
    written: list[Path] = []
    with tempfile.TemporaryDirectory() as raw_dir:
        argv = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            *(option.format(raw=raw_dir) for option in options),
            *(str(path) for path in files),
        ]
        code = protoc.main(argv)
        if code != 0:
            raise SystemExit(f"protoc failed with exit code {code}")
        for src in sorted(Path(raw_dir).rglob("*")):
            if not src.is_file() or not src.name.endswith(suffixes):
                continue
            dest = out_dir / src.relative_to(raw_dir)
            dest.parent.mkdir(parents=True, exist_ok=True)
            if fix is None:
                dest.write_bytes(src.read_bytes())
            else:
                dest.write_text(fix(src.read_text()))
            written.append(dest)
    return written


def _proto_files_or_exit(proto_dir: Path) -> list[Path]:
    files = proto_files(proto_dir)
    if not files:
        raise SystemExit(f"no .proto files under {proto_dir}")
    return files


def generate(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate every stub and package ``__init__`` into ``out_dir``; return the files written."""
    files = _proto_files_or_exit(proto_dir)
    top_packages = {path.parts[0] for path in files if len(path.parts) > 1}
    options = ["--python_out={raw}", "--pyi_out={raw}", "--grpc_python_out={raw}"]
    written = _run_protoc(
        proto_dir, files, out_dir, options, GENERATED_SUFFIXES, lambda text: _fix_imports(text, top_packages)
    )
    # Every folder from out_dir down to a stub is a package.
    packages = {rel for stub in written for rel in stub.parent.relative_to(out_dir).parents}
    packages |= {stub.parent.relative_to(out_dir) for stub in written}
    for rel in sorted(packages):
        init = out_dir / rel / "__init__.py"
        init.write_text(INIT_DOC.format(name=".".join([OUT_PACKAGE, *rel.parts])))
        written.append(init)
    return sorted(written)


def _plugin_version_ok(binary: Path, want: str) -> bool:
    import subprocess

    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout
    except OSError:
        return False
    return want.lstrip("v") in out


def go_plugins(go_bin: Path = GO_BIN) -> dict[str, Path]:
    """The pinned Go protoc plugins, installed into ``go_bin`` with ``go install`` when absent or stale."""
    import os
    import shutil
    import subprocess

    go = shutil.which("go")
    plugins: dict[str, Path] = {}
    for name, spec in GO_PLUGINS.items():
        binary = go_bin / name
        if not (binary.exists() and _plugin_version_ok(binary, spec.rsplit("@", 1)[1])):
            if go is None:
                raise SystemExit(f"{name} is not in {go_bin} and `go` is not installed: cannot build it")
            go_bin.mkdir(parents=True, exist_ok=True)
            env = os.environ | {"GOBIN": str(go_bin), "GOFLAGS": "-mod=mod"}
            subprocess.run([go, "install", spec], check=True, env=env, cwd=ROOT, timeout=600)
        plugins[name] = binary
    return plugins


def generate_go(out_dir: Path, proto_dir: Path = PROTO_DIR) -> list[Path]:
    """Generate the Go stubs (``ise/v1/*.pb.go`` under ``out_dir``); return the files written."""
    files = _proto_files_or_exit(proto_dir)
    plugins = go_plugins()
    gen_package = f"{GO_MODULE}/{GO_OUT_DIR.relative_to(GO_DIR).as_posix()}"
    # each proto's Go package: gen/<its folder>, named after the folder's parts (ise/v1 -> isev1)
    mappings = [
        f"M{path.as_posix()}={gen_package}/{path.parent.as_posix()};{''.join(path.parent.parts)}" for path in files
    ]
    options = [
        f"--plugin=protoc-gen-go={plugins['protoc-gen-go']}",
        f"--plugin=protoc-gen-go-grpc={plugins['protoc-gen-go-grpc']}",
        "--go_out={raw}",
        "--go-grpc_out={raw}",
        f"--go_opt=module={gen_package}",
        f"--go-grpc_opt=module={gen_package}",
        *(f"--go_opt={m}" for m in mappings),
        *(f"--go-grpc_opt={m}" for m in mappings),
    ]
    return sorted(_run_protoc(proto_dir, files, out_dir, options, GO_SUFFIXES))


def _tree(folder: Path, suffixes: tuple[str, ...] = GENERATED_SUFFIXES) -> dict[str, bytes]:
    """The generated-looking files under ``folder`` (stubs and ``__init__.py``), by relative path."""
    if not folder.exists():
        return {}
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in folder.rglob("*")
        if path.is_file()
        and (path.name.endswith(suffixes) or (suffixes == GENERATED_SUFFIXES and path.name == "__init__.py"))
    }


def stale_files(out_dir: Path = OUT_DIR, proto_dir: Path = PROTO_DIR, *, go: bool = False) -> list[str]:
    """Committed files that differ from a fresh generation (changed, missing or extra)."""
    suffixes = GO_SUFFIXES if go else GENERATED_SUFFIXES
    with tempfile.TemporaryDirectory() as fresh_dir:
        (generate_go if go else generate)(Path(fresh_dir), proto_dir)
        fresh, committed = _tree(Path(fresh_dir), suffixes), _tree(out_dir, suffixes)
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
    parser.add_argument("--go", action="store_true", help="the Go stubs in clients/go/gen/ (needs `go`)")
    args = parser.parse_args(argv)
    out_dir, suffixes = (GO_OUT_DIR, GO_SUFFIXES) if args.go else (OUT_DIR, GENERATED_SUFFIXES)
    rel_out = out_dir.relative_to(ROOT)
    if args.check:
        problems = stale_files(out_dir, go=args.go)
        for line in problems:
            print(f"{rel_out}/{line.split(': ', 1)[1]}: {line.split(': ', 1)[0]}", file=sys.stderr)
        if problems:
            print(f"stubs are stale: run `python scripts/gen_proto.py{' --go' if args.go else ''}`", file=sys.stderr)
            return 1
        print(f"{rel_out}: stubs up to date")
        return 0
    for path in out_dir.rglob("*"):
        if path.is_file() and path.name.endswith(suffixes):
            path.unlink()  # drop stubs of removed .proto files
    for path in (generate_go if args.go else generate)(out_dir):
        print(path.relative_to(ROOT))
    return 0


if __name__ == "__main__":
    sys.exit(main())
