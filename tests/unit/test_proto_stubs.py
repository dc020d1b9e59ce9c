"""The committed gRPC stubs match ``proto/``: ``scripts/gen_proto.py --check`` must pass."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "gen_proto.py"


def _load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_proto", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_fresh() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--check"], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, f"stale gRPC stubs; run `python scripts/gen_proto.py`\n{done.stderr}"


def test_check_names_stale_missing_and_extra_files(tmp_path: Path) -> None:
    gen = _load_script()
    copy = tmp_path / "rpc"
    shutil.copytree(gen.OUT_DIR, copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert gen.stale_files(copy) == []
    stub = copy / "ise" / "v1" / "workspaces_pb2.py"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    (copy / "ise" / "v1" / "workspaces_pb2_grpc.py").unlink()
    (copy / "ise" / "v1" / "gone_pb2.py").write_text("")
    assert gen.stale_files(copy) == [
        "extra (no .proto generates it): ise/v1/gone_pb2.py",
        "stale: ise/v1/workspaces_pb2.py",
        "missing: ise/v1/workspaces_pb2_grpc.py",
    ]


def test_stubs_import_as_a_subpackage_of_services() -> None:
    from services.common.rpc.ise.v1 import workspaces_pb2, workspaces_pb2_grpc

    assert workspaces_pb2.DESCRIPTOR.package == "ise.v1"
    assert hasattr(workspaces_pb2_grpc, "WorkspacesStub")
    source = (ROOT / "services/common/rpc/ise/v1/workspaces_pb2_grpc.py").read_text()
    assert "from services.common.rpc.ise.v1 import workspaces_pb2" in source
    assert "\nfrom ise." not in source and "\nimport ise." not in source


def test_episodes_stubs_import_and_document_every_field() -> None:
    from services.common.rpc.ise.v1 import episodes_pb2, episodes_pb2_grpc

    assert episodes_pb2.DESCRIPTOR.package == "ise.v1"
    assert hasattr(episodes_pb2_grpc, "EpisodesStub") and hasattr(episodes_pb2_grpc, "EpisodesServicer")
    drive = episodes_pb2.DESCRIPTOR.services_by_name["Episodes"].methods_by_name["Drive"]
    assert drive.client_streaming and drive.server_streaming
    source = (ROOT / "services/common/rpc/ise/v1/episodes_pb2_grpc.py").read_text()
    assert "from services.common.rpc.ise.v1 import episodes_pb2" in source
    # every field of episodes.proto carries a comment on the line(s) above it
    lines = (ROOT / "proto/ise/v1/episodes.proto").read_text().splitlines()
    fields = [i for i, line in enumerate(lines) if line.strip().endswith(";") and "=" in line and "syntax" not in line]
    undocumented = [lines[i].strip() for i in fields if not lines[i - 1].strip().startswith("//")]
    assert undocumented == []


def _go_plugins_runnable() -> bool:
    """``go`` builds the pinned plugins; without it, plugins built before (.cache/go-bin) still serve."""
    gen = _load_script()
    return shutil.which("go") is not None or all((gen.GO_BIN / name).exists() for name in gen.GO_PLUGINS)


needs_go = pytest.mark.skipif(
    not _go_plugins_runnable(),
    reason="`go` is not installed (nor protoc-gen-go/-go-grpc in .cache/go-bin): the Go stubs are not checked",
)


@needs_go
@pytest.mark.timeout(900)  # a fresh machine builds the two plugins first (go install)
def test_committed_go_stubs_are_fresh() -> None:
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--go", "--check"], cwd=ROOT, capture_output=True, text=True, timeout=900
    )
    assert done.returncode == 0, f"stale Go stubs; run `python scripts/gen_proto.py --go`\n{done.stderr}"


@needs_go
@pytest.mark.timeout(900)
def test_go_check_names_stale_missing_and_extra_files(tmp_path: Path) -> None:
    gen = _load_script()
    copy = tmp_path / "gen"
    shutil.copytree(gen.GO_OUT_DIR, copy)
    stub = copy / "ise" / "v1" / "episodes.pb.go"
    stub.write_text(stub.read_text() + "\n// edited by hand\n")
    (copy / "ise" / "v1" / "workspaces_grpc.pb.go").unlink()
    (copy / "ise" / "v1" / "gone.pb.go").write_text("")
    assert gen.stale_files(copy, go=True) == [
        "stale: ise/v1/episodes.pb.go",
        "extra (no .proto generates it): ise/v1/gone.pb.go",
        "missing: ise/v1/workspaces_grpc.pb.go",
    ]


def test_go_stubs_cover_every_proto() -> None:
    gen = _load_script()
    committed = sorted(p.relative_to(gen.GO_OUT_DIR).as_posix() for p in gen.GO_OUT_DIR.rglob("*.pb.go"))
    assert committed == [
        "ise/v1/episodes.pb.go",
        "ise/v1/episodes_grpc.pb.go",
        "ise/v1/workspaces.pb.go",
        "ise/v1/workspaces_grpc.pb.go",
    ]
    source = (gen.GO_OUT_DIR / "ise" / "v1" / "episodes_grpc.pb.go").read_text()
    assert "package isev1" in source and "func NewEpisodesClient(" in source
