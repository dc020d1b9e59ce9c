"""The ise.v1.Workspaces gRPC server end to end: real grpc.aio server, real Docker backend.

Servers listen on free loopback ports; the client uses the committed generated stubs.  ``open_address``
serves without tokens (the one anonymous caller), ``auth_address`` with the system caller's token.
Ownership, limits, deadlines and starvation are in tests/faults/test_grpc_security.py.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import docker
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.rpc.ise.v1 import workspaces_pb2 as pb
from services.common.rpc.ise.v1 import workspaces_pb2_grpc as pb_grpc
from services.executor.grpc_server import SERVICE_NAME, WorkspacesServer, serve_workspaces
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.inspect import mark_episode_start
from services.simulator.grounding import WorkspaceInspector, WorkspaceView
from services.stack.procs import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
TOKEN = "test-token-" + uuid.uuid4().hex


def workspace_image() -> str:
    """Make sure a daemon answers and the workspace image exists; return its tag."""
    from services.stack.docker_daemon import ensure_docker
    from services.stack.workspace_image import DEFAULT_TAG, ensure_workspace_image

    ensure_docker()
    override = os.environ.get("ISE_WORKSPACE_IMAGE")
    if override:
        docker.from_env().images.get(override)
        return override
    ensure_workspace_image(DEFAULT_TAG)
    return DEFAULT_TAG


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    be = DockerWorkspaceBackend(
        workspace_image(), WorkspaceLimits(output_cap_bytes=4096), name_prefix=f"ise-grpc-{uuid.uuid4().hex[:8]}"
    )
    yield be
    for info in be.list_workspaces():
        be.close(info.episode_id)


async def _start(backend: DockerWorkspaceBackend, token: str | None) -> tuple[WorkspacesServer, str]:
    port = free_port(HOST)
    server = await serve_workspaces(backend, host=HOST, port=port, token=token)
    return server, f"{HOST}:{port}"


@pytest.fixture(scope="module")
async def open_address(backend: DockerWorkspaceBackend) -> AsyncIterator[str]:
    server, address = await _start(backend, None)
    yield address
    await server.stop(grace=1)


@pytest.fixture(scope="module")
async def auth_address(backend: DockerWorkspaceBackend) -> AsyncIterator[str]:
    server, address = await _start(backend, TOKEN)
    yield address
    await server.stop(grace=1)


async def test_create_exec_write_read_close(open_address: str) -> None:
    async with grpc.aio.insecure_channel(open_address) as channel:
        stub = pb_grpc.WorkspacesStub(channel)
        created = await stub.Create(pb.CreateWorkspaceRequest(episode_id="g1", run_id="run-g"))
        again = await stub.Create(pb.CreateWorkspaceRequest(episode_id="g1", run_id="run-g"))
        assert created.workspace.workspace_id == again.workspace.workspace_id
        assert created.workspace.image_digest.startswith("sha256:")
        assert created.workspace.labels["ise.run"] == "run-g"

        result = await stub.Exec(pb.ExecRequest(episode_id="g1", command="echo hi; echo no >&2; exit 7"))
        assert (result.exit_code, result.stdout, result.stderr) == (7, "hi\n", "no\n")
        assert not result.timed_out and not result.truncated

        killed = await stub.Exec(pb.ExecRequest(episode_id="g1", command="sleep 30", timeout_s=1))
        assert killed.timed_out and killed.exit_code == 124

        big = await stub.Exec(pb.ExecRequest(episode_id="g1", command="head -c 1000000 /dev/zero | tr '\\0' a"))
        assert big.truncated and len(big.stdout) == 4096

        payload = bytes(range(256)) * 100
        wrote = await stub.WriteFile(pb.WriteFileRequest(episode_id="g1", path="d/e/f.bin", content=payload))
        assert wrote.bytes_written == len(payload)
        read = await stub.ReadFile(pb.ReadFileRequest(episode_id="g1", path="/workspace/d/e/f.bin"))
        assert read.content == payload and not read.truncated
        part = await stub.ReadFile(pb.ReadFileRequest(episode_id="g1", path="d/e/f.bin", max_bytes=3))
        assert part.content == payload[:3] and part.truncated

        listed = await stub.List(pb.ListWorkspacesRequest(run_id="run-g"))
        assert [w.episode_id for w in listed.workspaces] == ["g1"]

        assert (await stub.Close(pb.CloseWorkspaceRequest(episode_id="g1"))).removed is True
        assert (await stub.Close(pb.CloseWorkspaceRequest(episode_id="g1"))).removed is False
        assert not (await stub.List(pb.ListWorkspacesRequest(run_id="run-g"))).workspaces


def _files(resp: pb.InspectResponse) -> dict[str, int]:
    return {f.path: f.size for f in resp.files}


async def test_inspect_lists_what_the_episode_changed(open_address: str) -> None:
    async with grpc.aio.insecure_channel(open_address) as channel:
        stub = pb_grpc.WorkspacesStub(channel)
        await stub.Create(pb.CreateWorkspaceRequest(episode_id="g3", run_id="run-g"))  # the episode starts here
        empty = await stub.Inspect(pb.InspectRequest(episode_id="g3"))
        assert empty.since_start and empty.started_unix_ms > 0
        assert list(empty.files) == [] and not empty.truncated

        # the agent's shell state must not change the answer
        hostile = "find() { echo fake; }; sort() { :; }; alias head=false; set -o pipefail; cd /tmp"
        assert (await stub.Exec(pb.ExecRequest(episode_id="g3", command=hostile))).exit_code == 0
        made = "cd /workspace && mkdir -p notes .git/objects && printf 'plan\\n' > notes/plan.md && echo x > .git/objects/o"
        assert (await stub.Exec(pb.ExecRequest(episode_id="g3", command=made))).exit_code == 0
        await asyncio.sleep(0.02)  # ctimes have ms resolution here: the next file is strictly newer
        await stub.WriteFile(pb.WriteFileRequest(episode_id="g3", path="out/data bin.csv", content=b"a,b\n1,2\n"))
        await stub.Create(pb.CreateWorkspaceRequest(episode_id="g3", run_id="run-g"))  # does not move the marker
        state = await stub.Inspect(pb.InspectRequest(episode_id="g3"))
        assert _files(state) == {"notes/plan.md": 5, "out/data bin.csv": 8}
        assert state.since_start and state.started_unix_ms == empty.started_unix_ms and not state.truncated
        assert state.files[0].path == "out/data bin.csv"  # newest first
        # the commands, oldest first; the executor's own probes (marker, listing) are not recorded
        assert [(c.command, c.exit_code, c.timed_out) for c in state.commands] == [
            (hostile, 0, False),
            (made, 0, False),
        ]
        assert all(f.changed_unix_ms >= state.started_unix_ms for f in state.files)

        assert (await stub.Exec(pb.ExecRequest(episode_id="g3", command="type -t find"))).stdout == "function\n"
        await stub.Exec(pb.ExecRequest(episode_id="g3", command="false"))
        await stub.Exec(pb.ExecRequest(episode_id="g3", command="sleep 30", timeout_s=0.5))
        latest = await stub.Inspect(pb.InspectRequest(episode_id="g3", max_commands=2))
        assert [(c.command, c.exit_code, c.timed_out) for c in latest.commands] == [
            ("false", 1, False),
            ("sleep 30", 124, True),
        ]
        assert latest.commands[1].duration_ms >= 500 and latest.commands[1].finished_unix_ms >= latest.started_unix_ms
        assert list((await stub.Inspect(pb.InspectRequest(episode_id="g3", max_commands=0))).commands) == []

        nf, bad = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT
        assert await _code(stub.Inspect(pb.InspectRequest(episode_id="nope"))) == nf
        assert await _code(stub.Inspect(pb.InspectRequest(episode_id="g3", max_files=0))) == bad
        assert await _code(stub.Inspect(pb.InspectRequest(episode_id="g3", max_commands=101))) == bad
        await stub.Close(pb.CloseWorkspaceRequest(episode_id="g3"))


async def test_system_caller_inspects_a_pipeline_episode(
    backend: DockerWorkspaceBackend, open_address: str, auth_address: str
) -> None:
    # the agent loop's workspace: a container started before its episode (as from a warm pool), with a
    # file from before the episode
    backend.create("ep-g5", "run-g")
    backend.write_file("ep-g5", "old/before.txt", b"older")
    await asyncio.sleep(0.3)
    system = (("authorization", f"Bearer {TOKEN}"),)
    async with grpc.aio.insecure_channel(auth_address) as channel:
        stub = pb_grpc.WorkspacesStub(channel)
        unmarked = await stub.Inspect(pb.InspectRequest(episode_id="ep-g5"), metadata=system)
        assert not unmarked.since_start and _files(unmarked)["old/before.txt"] == 5
        mark_episode_start(backend, "ep-g5")  # what the agent loop does when a turn starts
        assert list((await stub.Inspect(pb.InspectRequest(episode_id="ep-g5"), metadata=system)).files) == []
        # an edit of a pre-episode file counts; a file from before the episode alone does not
        backend.exec("ep-g5", "echo more >> old/before.txt", workdir=None, timeout_s=10)
        capped = await stub.Inspect(pb.InspectRequest(episode_id="ep-g5", max_files=1), metadata=system)
        assert _files(capped) == {"old/before.txt": 10} and not capped.truncated
        assert [c.command for c in capped.commands] == ["echo more >> old/before.txt"]
        read = await stub.ReadFile(pb.ReadFileRequest(episode_id="ep-g5", path="old/before.txt"), metadata=system)
        assert read.content == b"oldermore\n"
    async with grpc.aio.insecure_channel(open_address) as channel:  # no token: the anonymous caller
        stub = pb_grpc.WorkspacesStub(channel)
        assert await _code(stub.Inspect(pb.InspectRequest(episode_id="ep-g5"))) == grpc.StatusCode.NOT_FOUND
    backend.close("ep-g5")


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def test_errors_map_to_status_codes(open_address: str) -> None:
    async with grpc.aio.insecure_channel(open_address) as channel:
        stub = pb_grpc.WorkspacesStub(channel)
        await stub.Create(pb.CreateWorkspaceRequest(episode_id="g2", run_id="run-g"))
        nf = grpc.StatusCode.NOT_FOUND
        assert await _code(stub.Exec(pb.ExecRequest(episode_id="nope", command="true"))) == nf
        assert await _code(stub.ReadFile(pb.ReadFileRequest(episode_id="g2", path="missing"))) == nf
        assert await _code(stub.ReadFile(pb.ReadFileRequest(episode_id="g2", path="/"))) == (
            grpc.StatusCode.FAILED_PRECONDITION
        )
        bad = grpc.StatusCode.INVALID_ARGUMENT
        assert await _code(stub.Exec(pb.ExecRequest(episode_id="g2", command="true", timeout_s=-1))) == bad
        assert await _code(stub.Exec(pb.ExecRequest(episode_id="g2", command=""))) == bad
        assert await _code(stub.Create(pb.CreateWorkspaceRequest(episode_id="a/b", run_id="r"))) == bad
        assert await _code(stub.Create(pb.CreateWorkspaceRequest(episode_id="g2", run_id="other"))) == (
            grpc.StatusCode.ALREADY_EXISTS
        )
        slow = stub.Exec(pb.ExecRequest(episode_id="g2", command="sleep 5", timeout_s=10), timeout=1)
        assert await _code(slow) == grpc.StatusCode.DEADLINE_EXCEEDED
        await stub.Close(pb.CloseWorkspaceRequest(episode_id="g2"))


async def test_health_is_serving(open_address: str) -> None:
    async with grpc.aio.insecure_channel(open_address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", SERVICE_NAME):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_reflection_lists_the_service(open_address: str) -> None:
    async with grpc.aio.insecure_channel(open_address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol=SERVICE_NAME),
        ]
        replies = [reply async for reply in stub.ServerReflectionInfo(iter(requests))]
        names = {service.name for service in replies[0].list_services_response.service}
        assert {SERVICE_NAME, "grpc.health.v1.Health"} <= names
        assert replies[1].file_descriptor_response.file_descriptor_proto, "the .proto is served"


async def test_bearer_token_auth(auth_address: str) -> None:
    async with grpc.aio.insecure_channel(auth_address) as channel:
        stub = pb_grpc.WorkspacesStub(channel)
        request = pb.ListWorkspacesRequest(run_id="run-auth")
        unauth = grpc.StatusCode.UNAUTHENTICATED
        assert await _code(stub.List(request)) == unauth
        assert await _code(stub.List(request, metadata=(("authorization", "Bearer wrong"),))) == unauth
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        listing = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [reply async for reply in listing]
        assert info.value.code() == unauth

        good = (("authorization", f"Bearer {TOKEN}"),)
        assert not (await stub.List(request, metadata=good)).workspaces
        created = await stub.Create(pb.CreateWorkspaceRequest(episode_id="g3", run_id="run-auth"), metadata=good)
        assert created.workspace.episode_id == "g3"
        assert (await stub.Close(pb.CloseWorkspaceRequest(episode_id="g3"), metadata=good)).removed

        health = health_pb2_grpc.HealthStub(channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, "health checks need no token"


async def test_inspector_asks_the_next_replica(backend: DockerWorkspaceBackend, auth_address: str) -> None:
    """The simulator's grounding over several executor replicas: one down, one that does not know
    the workspace (another Docker host's), one that does: the digest comes from the last, which is
    then asked first; a workspace no replica knows gives None (the turn's own digest is used)."""
    elsewhere = DockerWorkspaceBackend(
        workspace_image(), WorkspaceLimits(), name_prefix=f"ise-grpc-other-{uuid.uuid4().hex[:8]}"
    )
    other_server, other_address = await _start(elsewhere, TOKEN)
    down = f"{HOST}:{free_port(HOST)}"
    backend.create("ep-f1", "run-f")
    mark_episode_start(backend, "ep-f1")
    backend.exec("ep-f1", "echo hi > found.txt", workdir=None, timeout_s=10)
    inspector = WorkspaceInspector(f"{down},{other_address},{auth_address}", TOKEN)
    try:
        view = await inspector.digest("ep-f1")
        assert view is not None and "found.txt (3 B)" in view.files, view
        assert inspector.answering == auth_address
        assert "found.txt" in ((await inspector.digest("ep-f1")) or WorkspaceView("")).files
        assert await inspector.digest("ep-nobody-has") is None
    finally:
        await inspector.close()
        await other_server.stop(grace=1)
        backend.close("ep-f1")
