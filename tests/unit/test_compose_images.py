"""The pieces the compose images are built from: the venv's run-time closure, the inputs digest
that makes builds idempotent, the free-space check, and Kafka's rendered configuration."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.errors import ConfigError
from services.stack.compose_images import SERVICES_EXTRA, SERVICES_SKIP, inputs_digest
from services.stack.disk_space import require_free
from services.stack.kafka_broker import server_properties
from services.stack.procs import StackError
from services.stack.venv_closure import PROJECT, closure


def test_the_closure_holds_what_the_services_import_and_no_dev_tools() -> None:
    dists = {d.name.lower().replace("_", "-"): d for d in closure((PROJECT, *SERVICES_EXTRA), skip=SERVICES_SKIP)}
    for needed in ("faststream", "aiokafka", "grpcio", "docker", "redis", "sentence-transformers", "torch"):
        assert needed in dists, needed
    # torch asks for cuda-toolkit[cudart,...]: the extras of a dependency are followed
    assert "nvidia-cuda-runtime" in dists
    for left_out in ("pytest", "ruff", "mypy", "grpcio-tools", "xllamacpp", "triton"):
        assert left_out not in dists, f"{left_out} is a dev tool, an unused extra or skipped"
    assert dists[PROJECT].files == (), "the project's code is copied from the checkout, not its install"
    torch = dists["torch"]
    assert all(not f.is_absolute() and (torch.site / f).is_file() for f in torch.files)
    assert any(f.parts[0] == "torch" and f.name == "__init__.py" for f in torch.files)


def test_the_closure_names_what_is_not_installed() -> None:
    with pytest.raises(ConfigError, match="not-a-distribution"):
        closure(("not-a-distribution",))


def test_the_inputs_digest_changes_with_any_input_and_only_then(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM ${BASE}\n")
    (tmp_path / "libs").mkdir()
    (tmp_path / "libs" / "a.jar").write_bytes(b"jar")
    first = inputs_digest(tmp_path, "sha256:base")
    assert inputs_digest(tmp_path, "sha256:base") == first
    assert inputs_digest(tmp_path, "sha256:other-base") != first
    (tmp_path / "libs" / "a.jar").write_bytes(b"JAR")  # same size, other bytes
    assert inputs_digest(tmp_path, "sha256:base") != first
    (tmp_path / "libs" / "a.jar").write_bytes(b"jar")
    assert inputs_digest(tmp_path, "sha256:base") == first
    (tmp_path / "libs" / "a.jar").rename(tmp_path / "libs" / "b.jar")
    assert inputs_digest(tmp_path, "sha256:base") != first


def test_a_build_that_would_not_fit_is_refused_before_it_starts(tmp_path: Path) -> None:
    require_free(tmp_path, 1 << 20)
    with pytest.raises(StackError, match=r"not enough space on the data root: .* GB free, .* GB needed; free some"):
        require_free(tmp_path, 1 << 60, what="the data root")


def test_kafka_in_compose_renders_the_embedded_brokers_template() -> None:
    text = server_properties(port=9092, controller_port=9093, log_dirs="/var/lib/kafka/data", auto_create_topics=True)
    assert "log.dirs=/var/lib/kafka/data" in text
    assert "controller.quorum.voters=1@127.0.0.1:9093" in text
    assert "{" not in text.replace("{{", ""), "every placeholder is filled"
