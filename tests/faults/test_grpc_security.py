"""gRPC Workspaces is safe by default and cannot starve the agent loop (issue 8).

Real grpc.aio servers on free loopback ports, a real Docker backend (and warm pool), the committed
stubs.  Callers: ``system`` (the simulator's grounding), ``alice`` and ``bob`` (external agents).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from services.common.rpc.ise.v1 import workspaces_pb2 as pb
from services.common.rpc.ise.v1 import workspaces_pb2_grpc as pb_grpc
from services.executor.grpc_auth import AuthConfigError, Caller, Callers, internal_episode_id, require_safe_bind
from services.executor.grpc_runtime import GrpcLimits
from services.executor.grpc_server import SERVICE_NAME, WorkspacesServer, callers_from_settings, serve_workspaces
from services.executor.settings import ExecutorSettings
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend
from services.executor.workspace.inspect import mark_episode_start
from services.executor.workspace.pool import WarmPool
from services.simulator.grounding import WorkspaceInspector
from services.stack.procs import free_port

pytestmark = pytest.mark.integration

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parents[2]
SYSTEM_TOKEN, ALICE_TOKEN, BOB_TOKEN = (f"{who}-{uuid.uuid4().hex}" for who in ("system", "alice", "bob"))
SYSTEM, ALICE, BOB = ((("authorization", f"Bearer {t}"),) for t in (SYSTEM_TOKEN, ALICE_TOKEN, BOB_TOKEN))
NF, BAD, UNAUTH = grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNAUTHENTICATED
EXHAUSTED, LATE = grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED


def _callers() -> Callers:
    return Callers(SYSTEM_TOKEN, {"alice": ALICE_TOKEN, "bob": BOB_TOKEN})


@pytest.fixture(scope="module")
def backend() -> Iterator[DockerWorkspaceBackend]:
    from services.stack.docker_daemon import ensure_docker
    from services.stack.workspace_image import DEFAULT_TAG, ensure_workspace_image

    ensure_docker()
    image = os.environ.get("ISE_WORKSPACE_IMAGE") or DEFAULT_TAG
    if image == DEFAULT_TAG:
        ensure_workspace_image(DEFAULT_TAG)
    be = DockerWorkspaceBackend(
        image, WorkspaceLimits(output_cap_bytes=4096), name_prefix=f"ise-sec-{uuid.uuid4().hex[:8]}"
    )
    yield be
    for info in be.list_workspaces():
        be.close(info.episode_id)


@dataclass
class Served:
    server: WorkspacesServer
    address: str
    stub: pb_grpc.WorkspacesStub
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def serving(
    backend: DockerWorkspaceBackend, *, callers: Callers | None = None, limits: GrpcLimits | None = None
) -> AsyncIterator[Served]:
    port = free_port(HOST)
    server = await serve_workspaces(backend, host=HOST, port=port, callers=callers or _callers(), limits=limits)
    try:
        async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
            yield Served(server, f"{HOST}:{port}", pb_grpc.WorkspacesStub(channel), channel)
    finally:
        await server.stop(0.5)


async def _code(call: object) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code()


async def _details(call: object) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call  # type: ignore[misc]
    return info.value.code(), info.value.details() or ""


def _every_rpc(stub: pb_grpc.WorkspacesStub, episode_id: str, **kw: object) -> dict[str, object]:
    """One call of each RPC on ``episode_id`` (not yet awaited)."""
    return {
        "Create": stub.Create(pb.CreateWorkspaceRequest(episode_id=episode_id, run_id="r"), **kw),
        "Exec": stub.Exec(pb.ExecRequest(episode_id=episode_id, command="touch /workspace/planted"), **kw),
        "ReadFile": stub.ReadFile(pb.ReadFileRequest(episode_id=episode_id, path="secret.txt"), **kw),
        "WriteFile": stub.WriteFile(pb.WriteFileRequest(episode_id=episode_id, path="planted", content=b"x"), **kw),
        "Close": stub.Close(pb.CloseWorkspaceRequest(episode_id=episode_id), **kw),
        "List": stub.List(pb.ListWorkspacesRequest(), **kw),
        "Inspect": stub.Inspect(pb.InspectRequest(episode_id=episode_id), **kw),
    }


async def _out_of_reach(
    stub: pb_grpc.WorkspacesStub, episode_id: str, metadata: object, *, readable: bool = False
) -> None:
    """Nothing but (``readable``) Inspect/ReadFile reaches ``episode_id`` for this caller."""
    ep = episode_id
    assert (
        await _code(stub.Exec(pb.ExecRequest(episode_id=ep, command="touch /workspace/planted"), metadata=metadata))
        == NF
    )
    write = pb.WriteFileRequest(episode_id=ep, path="planted", content=b"x")
    assert await _code(stub.WriteFile(write, metadata=metadata)) == NF
    assert not (await stub.Close(pb.CloseWorkspaceRequest(episode_id=ep), metadata=metadata)).removed
    assert ep not in {w.episode_id for w in (await stub.List(pb.ListWorkspacesRequest(), metadata=metadata)).workspaces}
    if not readable:
        assert await _code(stub.Inspect(pb.InspectRequest(episode_id=ep), metadata=metadata)) == NF
        assert await _code(stub.ReadFile(pb.ReadFileRequest(episode_id=ep, path="secret.txt"), metadata=metadata)) == NF


async def _runs(backend: DockerWorkspaceBackend, episode_id: str, argv: str) -> bool:
    """Whether a process with the command line ``argv`` runs in the workspace: a ``docker exec`` of its
    own, beside the workspace's (busy) shell; no procps needed."""
    probe = f"for f in /proc/[0-9]*/cmdline; do [ \"$(tr '\\0' ' ' < $f 2>/dev/null)\" = '{argv} ' ] && exit 0; done; exit 1"
    container = backend.client.containers.get(backend.container_name(episode_id))
    return (await asyncio.to_thread(container.exec_run, ["sh", "-c", probe])).exit_code == 0


def _idle_ids(backend: DockerWorkspaceBackend, pool: WarmPool) -> list[str]:
    rows = backend.client.api.containers(filters={"label": [f"ise.pool.owner={pool.owner}"]})
    return [r["Id"] for r in rows if "-pool-" in r["Names"][0]]


# -- configuration ---------------------------------------------------------------------------------


async def test_binding_beyond_loopback_needs_a_token(backend: DockerWorkspaceBackend, tmp_path: Path) -> None:
    for host in ("0.0.0.0", "::", "", "10.1.2.3", "executor"):
        with pytest.raises(AuthConfigError, match="ISE_EXEC_GRPC_TOKEN"):
            await serve_workspaces(backend, host=host, port=free_port(HOST), token=None)
    with pytest.raises(AuthConfigError, match="set ISE_EXEC_GRPC_TOKEN"):
        callers_from_settings(ExecutorSettings(grpc_host="0.0.0.0", grpc_token=""))
    # any token makes a public address acceptable; loopback needs none
    require_safe_bind("0.0.0.0", Callers(SYSTEM_TOKEN))
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        require_safe_bind(host, Callers())
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(f"# external agents\ncarol {uuid.uuid4().hex}\n\n")
    settings = ExecutorSettings(
        grpc_host="0.0.0.0", grpc_caller_tokens={"alice": ALICE_TOKEN}, grpc_tokens_file=str(tokens_file)
    )
    assert sorted(callers_from_settings(settings).names()) == ["alice", "carol"]
    with pytest.raises(AuthConfigError, match="too short"):
        callers_from_settings(ExecutorSettings(grpc_token="secret"))
    with pytest.raises(AuthConfigError, match="share a token"):
        Callers(SYSTEM_TOKEN, {"alice": SYSTEM_TOKEN})
    with pytest.raises(AuthConfigError, match="invalid gRPC caller name"):
        Callers(None, {"system": ALICE_TOKEN})


def test_tokens_identify_callers() -> None:
    callers = _callers()
    assert callers.identify(SYSTEM) == Caller("system", system=True)
    assert callers.identify(ALICE) == Caller("alice")
    assert callers.identify((("authorization", f"bearer {BOB_TOKEN}"),)) == Caller("bob")
    for metadata in (
        None,
        (),
        (("authorization", "Bearer wrong-token-0123456789"),),
        (("authorization", ALICE_TOKEN),),
        (("authorization", f"Basic {ALICE_TOKEN}"),),
        (("authorization", "Bearer "),),
    ):
        assert callers.identify(metadata) is None, metadata
    assert Callers().identify(SYSTEM) == Caller("anonymous"), "no tokens configured: one anonymous caller"


# -- authentication and ownership -----------------------------------------------------------------


async def test_calls_without_a_valid_token_are_unauthenticated(backend: DockerWorkspaceBackend) -> None:
    async with serving(backend) as served:
        for metadata in (None, (("authorization", "Bearer not-a-known-token-42"),)):
            for name, call in _every_rpc(served.stub, "u1", metadata=metadata).items():
                assert await _code(call) == UNAUTH, name
        reflection = reflection_pb2_grpc.ServerReflectionStub(served.channel)
        listing = [reflection_pb2.ServerReflectionRequest(list_services="")]
        with pytest.raises(grpc.aio.AioRpcError) as info:
            [reply async for reply in reflection.ServerReflectionInfo(iter(listing))]
        assert info.value.code() == UNAUTH
        replies = [reply async for reply in reflection.ServerReflectionInfo(iter(listing), metadata=ALICE)]
        assert SERVICE_NAME in {s.name for s in replies[0].list_services_response.service}
        health = health_pb2_grpc.HealthStub(served.channel)
        reply = await health.Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING, "health checks need no token"
    assert backend.get(internal_episode_id(Caller("alice"), "u1")) is None, "nothing was created"


async def test_callers_reach_only_their_own_workspaces(backend: DockerWorkspaceBackend) -> None:
    async with serving(backend) as served:
        stub = served.stub
        mine = (await stub.Create(pb.CreateWorkspaceRequest(episode_id="w1", run_id="r"), metadata=ALICE)).workspace
        assert (mine.episode_id, mine.labels["ise.grpc.owner"]) == ("w1", "alice")
        await stub.WriteFile(
            pb.WriteFileRequest(episode_id="w1", path="secret.txt", content=b"alice's"), metadata=ALICE
        )

        for other in (BOB, SYSTEM):  # neither another caller nor the system token reaches alice's workspace
            assert not (await stub.List(pb.ListWorkspacesRequest(), metadata=other)).workspaces
            assert not (await stub.List(pb.ListWorkspacesRequest(run_id="r"), metadata=other)).workspaces
            await _out_of_reach(stub, "w1", other)
        internal = mine.name.removeprefix(backend.name_prefix + "-")  # not even by its backend name
        await _out_of_reach(stub, internal, BOB)
        await _out_of_reach(stub, internal, SYSTEM)

        # bob's "w1" is his own, separate workspace
        his = (await stub.Create(pb.CreateWorkspaceRequest(episode_id="w1", run_id="r"), metadata=BOB)).workspace
        assert his.workspace_id != mine.workspace_id and his.labels["ise.grpc.owner"] == "bob"
        assert await _code(stub.ReadFile(pb.ReadFileRequest(episode_id="w1", path="secret.txt"), metadata=BOB)) == NF
        assert (await stub.Close(pb.CloseWorkspaceRequest(episode_id="w1"), metadata=BOB)).removed

        read = await stub.ReadFile(pb.ReadFileRequest(episode_id="w1", path="secret.txt"), metadata=ALICE)
        assert read.content == b"alice's", "alice's workspace is untouched"
        listed = await stub.List(pb.ListWorkspacesRequest(), metadata=ALICE)
        assert [w.episode_id for w in listed.workspaces] == ["w1"]
        ran = await stub.Exec(pb.ExecRequest(episode_id="w1", command="ls /workspace"), metadata=ALICE)
        assert ran.stdout == "secret.txt\n", "nothing was planted"
        assert (await stub.Close(pb.CloseWorkspaceRequest(episode_id="w1"), metadata=ALICE)).removed


async def test_pipeline_episodes_and_the_warm_pool_are_out_of_reach(backend: DockerWorkspaceBackend) -> None:
    pool = WarmPool(backend, 1).start()
    try:
        assert pool.wait_full(120)
        pipeline = "ep-" + uuid.uuid4().hex[:16]
        backend.create(pipeline, "run-p")  # the agent loop's workspace: takes the warm one, which refills
        mark_episode_start(backend, pipeline)
        await asyncio.sleep(0.02)  # ctimes have ms resolution: the file is strictly newer than the episode's start
        backend.write_file(pipeline, "secret.txt", b"pipeline")
        assert pool.wait_full(120)
        rows = backend.client.api.containers(filters={"label": [f"ise.pool.owner={pool.owner}"]})
        idle = [r["Names"][0].removeprefix(f"/{backend.name_prefix}-") for r in rows if "-pool-" in r["Names"][0]]
        assert len(idle) == 1
        async with serving(backend) as served, serving(backend, callers=Callers()) as anonymous:
            stub = served.stub
            for metadata in (ALICE, SYSTEM):
                await _out_of_reach(stub, idle[0], metadata)
            await _out_of_reach(stub, pipeline, ALICE)
            await _out_of_reach(anonymous.stub, pipeline, None)
            await _out_of_reach(anonymous.stub, idle[0], None)
            # the system caller may read (only read) the pipeline's episode
            await _out_of_reach(stub, pipeline, SYSTEM, readable=True)
            state = await stub.Inspect(pb.InspectRequest(episode_id=pipeline), metadata=SYSTEM)
            assert state.since_start and [f.path for f in state.files] == ["secret.txt"]
            read = await stub.ReadFile(pb.ReadFileRequest(episode_id=pipeline, path="secret.txt"), metadata=SYSTEM)
            assert read.content == b"pipeline"

            # a gRPC Create never takes the warm container: it would not carry the owner label
            made = await stub.Create(pb.CreateWorkspaceRequest(episode_id="fresh", run_id="r"), metadata=ALICE)
            assert made.workspace.labels["ise.grpc.owner"] == "alice" and "ise.pool" not in made.workspace.labels
            assert _idle_ids(backend, pool) == [r["Id"] for r in rows if "-pool-" in r["Names"][0]]
            await stub.Close(pb.CloseWorkspaceRequest(episode_id="fresh"), metadata=ALICE)
        assert backend.read_file(pipeline, "secret.txt", max_bytes=100) == (b"pipeline", False)
        planted = backend.exec(pipeline, "ls /workspace", workdir=None, timeout_s=10, record=False)
        assert planted.stdout == "secret.txt\n"
        backend.close(pipeline)
    finally:
        pool.stop()


async def test_grounding_uses_the_system_token(backend: DockerWorkspaceBackend) -> None:
    pipeline = "ep-" + uuid.uuid4().hex[:16]
    backend.create(pipeline, "run-p")
    mark_episode_start(backend, pipeline)
    await asyncio.sleep(0.02)
    backend.write_file(pipeline, "notes/plan.md", b"plan\n")
    async with serving(backend) as served:
        grounded = WorkspaceInspector(served.address, SYSTEM_TOKEN)
        outsider = WorkspaceInspector(served.address, ALICE_TOKEN)
        try:
            view = await grounded.digest(pipeline)
            assert view is not None and view.files == "files created or changed since the start: notes/plan.md (5 B)"
            assert await outsider.digest(pipeline) is None
        finally:
            await grounded.close()
            await outsider.close()
    backend.close(pipeline)


# -- limits -----------------------------------------------------------------------------------------


async def test_oversized_requests_are_refused(backend: DockerWorkspaceBackend) -> None:
    limits = GrpcLimits(
        max_message_bytes=1 << 20, max_write_bytes=256 << 10, max_read_bytes=256 << 10, max_command_bytes=1024
    )
    async with serving(backend, limits=limits) as served:
        stub = served.stub
        await stub.Create(pb.CreateWorkspaceRequest(episode_id="big", run_id="r"), metadata=ALICE)

        def write(size: int) -> object:
            return stub.WriteFile(pb.WriteFileRequest(episode_id="big", path="f", content=b"a" * size), metadata=ALICE)

        assert (await write(256 << 10)).bytes_written == 256 << 10
        code, details = await _details(write((256 << 10) + 1))
        assert code == BAD and "ISE_EXEC_GRPC_MAX_WRITE_BYTES" in details
        assert await _code(write(2 << 20)) == EXHAUSTED  # past the message limit: refused by gRPC itself
        code, details = await _details(stub.Exec(pb.ExecRequest(episode_id="big", command="#" * 1025), metadata=ALICE))
        assert code == BAD and "ISE_EXEC_GRPC_MAX_COMMAND_BYTES" in details
        assert (
            await stub.Exec(pb.ExecRequest(episode_id="big", command=":" + " " * 1023), metadata=ALICE)
        ).exit_code == 0
        too_much = pb.ReadFileRequest(episode_id="big", path="f", max_bytes=(256 << 10) + 1)
        assert await _code(stub.ReadFile(too_much, metadata=ALICE)) == BAD
        long_path = pb.ReadFileRequest(episode_id="big", path="a/" * 3000)
        assert await _code(stub.ReadFile(long_path, metadata=ALICE)) == BAD
        for request in (
            pb.CreateWorkspaceRequest(episode_id="e" * 129, run_id="r"),
            pb.CreateWorkspaceRequest(episode_id="ok", run_id="r" * 129),
            pb.CreateWorkspaceRequest(episode_id="ok", run_id="bad\nrun"),
        ):
            assert await _code(stub.Create(request, metadata=ALICE)) == BAD
        slow = pb.ExecRequest(episode_id="big", command="true", timeout_s=1e9)
        assert await _code(stub.Exec(slow, metadata=ALICE)) == BAD
        await stub.Close(pb.CloseWorkspaceRequest(episode_id="big"), metadata=ALICE)


async def test_live_workspaces_per_caller_are_capped(backend: DockerWorkspaceBackend) -> None:
    async with serving(backend, limits=GrpcLimits(max_workspaces_per_caller=2)) as served:
        stub = served.stub

        def create(episode_id: str, metadata: object) -> object:
            return stub.Create(pb.CreateWorkspaceRequest(episode_id=episode_id, run_id="r"), metadata=metadata)

        # concurrent Creates cannot slip past the cap
        results = await asyncio.gather(*(create(f"c{i}", ALICE) for i in range(4)), return_exceptions=True)
        refused = [r for r in results if isinstance(r, grpc.aio.AioRpcError)]
        assert len(refused) == 2 and all(r.code() == EXHAUSTED for r in refused), results
        assert "ISE_EXEC_GRPC_MAX_WORKSPACES_PER_CALLER" in (refused[0].details() or "")
        made = sorted(r.workspace.episode_id for r in results if not isinstance(r, BaseException))
        await create(made[0], ALICE)  # an existing one is not a new one
        await create("c9", BOB)  # the cap is per caller
        await stub.Close(pb.CloseWorkspaceRequest(episode_id=made[0]), metadata=ALICE)
        await create("c9", ALICE)
        for episode_id, metadata in ((made[1], ALICE), ("c9", ALICE), ("c9", BOB)):
            assert (await stub.Close(pb.CloseWorkspaceRequest(episode_id=episode_id), metadata=metadata)).removed


# -- starvation, deadlines, shutdown --------------------------------------------------------------------


async def test_slow_execs_do_not_starve_the_agent_loop(backend: DockerWorkspaceBackend) -> None:
    pipeline = "ep-" + uuid.uuid4().hex[:16]
    backend.create(pipeline, "run-p")
    mark_episode_start(backend, pipeline)
    async with serving(backend) as served:
        stub = served.stub
        for i in range(4):
            await stub.Create(pb.CreateWorkspaceRequest(episode_id=f"s{i}", run_id="r"), metadata=ALICE)
        sleeps = [
            asyncio.ensure_future(
                stub.Exec(pb.ExecRequest(episode_id=f"s{i % 4}", command="sleep 15", timeout_s=20), metadata=ALICE)
            )
            for i in range(8)
        ]
        await asyncio.sleep(1.5)  # 4 running (alice's share of the pool), 4 waiting for their workspace
        started = time.monotonic()
        # what the agent loop does for every tool call: asyncio's default executor is free
        await asyncio.wait_for(asyncio.gather(*(asyncio.to_thread(time.sleep, 0.05) for _ in range(8))), timeout=5)
        listed = await stub.List(pb.ListWorkspacesRequest(), metadata=BOB, timeout=5)  # another caller is served
        assert not listed.workspaces
        state = await stub.Inspect(pb.InspectRequest(episode_id=pipeline), metadata=SYSTEM, timeout=5)  # grounding too
        assert state.since_start
        assert time.monotonic() - started < 10
        assert not any(task.done() for task in sleeps), "all of that happened while the 8 slow Execs ran"
        for task in sleeps:
            task.cancel()
        await asyncio.gather(*sleeps, return_exceptions=True)
    for i in range(4):
        backend.close(internal_episode_id(Caller("alice"), f"s{i}"))
    backend.close(pipeline)


async def test_exec_past_its_deadline_is_killed(backend: DockerWorkspaceBackend) -> None:
    async with serving(backend) as served:
        stub = served.stub
        await stub.Create(pb.CreateWorkspaceRequest(episode_id="dl", run_id="r"), metadata=ALICE)
        internal = internal_episode_id(Caller("alice"), "dl")
        started = time.monotonic()
        call = stub.Exec(pb.ExecRequest(episode_id="dl", command="sleep 30"), metadata=ALICE, timeout=2)
        await asyncio.sleep(1)
        assert await _runs(backend, internal, "sleep 30"), "the probe sees the command while it runs"
        assert await _code(call) == LATE
        assert time.monotonic() - started < 6
        deadline = time.monotonic() + 8
        while await _runs(backend, internal, "sleep 30"):
            assert time.monotonic() < deadline, "the command outlived the call's deadline"
            await asyncio.sleep(0.2)

        # a call whose deadline passes while it waits never runs
        first = asyncio.ensure_future(
            stub.Exec(pb.ExecRequest(episode_id="dl", command="sleep 3", timeout_s=10), metadata=ALICE)
        )
        await asyncio.sleep(0.5)
        late = pb.ExecRequest(episode_id="dl", command="touch /workspace/late")
        assert await _code(stub.Exec(late, metadata=ALICE, timeout=1)) == LATE
        assert (await first).exit_code == 0
        await asyncio.sleep(0.5)
        assert await _code(stub.ReadFile(pb.ReadFileRequest(episode_id="dl", path="late"), metadata=ALICE)) == NF
        await stub.Close(pb.CloseWorkspaceRequest(episode_id="dl"), metadata=ALICE)


async def test_stop_is_prompt(backend: DockerWorkspaceBackend) -> None:
    port = free_port(HOST)
    server = await serve_workspaces(
        backend, host=HOST, port=port, callers=_callers(), limits=GrpcLimits(stop_grace_s=1)
    )
    async with grpc.aio.insecure_channel(f"{HOST}:{port}") as channel:
        stub = pb_grpc.WorkspacesStub(channel)
        await stub.Create(pb.CreateWorkspaceRequest(episode_id="st", run_id="r"), metadata=ALICE)
        running = asyncio.ensure_future(
            stub.Exec(pb.ExecRequest(episode_id="st", command="sleep 60", timeout_s=120), metadata=ALICE)
        )
        await asyncio.sleep(1)
        started = time.monotonic()
        await server.stop()
        assert time.monotonic() - started < 5
        with pytest.raises(grpc.aio.AioRpcError):
            await running
    workers = [t for t in threading.enumerate() if t.name.startswith("ise-grpc")]
    assert all(t.daemon for t in workers), "gRPC workers never hold up the process's exit"
    backend.close(internal_episode_id(Caller("alice"), "st"))


STOP_SCRIPT = """
import asyncio, sys, time, grpc
from services.common.rpc.ise.v1 import workspaces_pb2 as pb, workspaces_pb2_grpc as pb_grpc
from services.executor.grpc_server import serve_workspaces
from services.executor.workspace.base import WorkspaceLimits
from services.executor.workspace.docker_backend import DockerWorkspaceBackend

async def main(image, prefix, port):
    backend = DockerWorkspaceBackend(image, WorkspaceLimits(), name_prefix=prefix)
    server = await serve_workspaces(backend, host="127.0.0.1", port=port)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = pb_grpc.WorkspacesStub(channel)
    await stub.Create(pb.CreateWorkspaceRequest(episode_id="x", run_id="r"))
    call = asyncio.ensure_future(stub.Exec(pb.ExecRequest(episode_id="x", command="sleep 60", timeout_s=120)))
    await asyncio.sleep(1)
    print(time.monotonic(), flush=True)  # "SIGTERM" arrives: the executor stops its server and exits
    await server.stop()
    call.cancel()

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_the_process_exits_promptly_with_a_command_running(backend: DockerWorkspaceBackend) -> None:
    prefix = f"ise-sec-{uuid.uuid4().hex[:8]}"
    other = DockerWorkspaceBackend(backend.image, WorkspaceLimits(), name_prefix=prefix)
    try:
        done = subprocess.run(
            [sys.executable, "-c", STOP_SCRIPT, backend.image, prefix, str(free_port(HOST))],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
        exited = time.monotonic()
        assert done.returncode == 0, (done.stdout[-500:], done.stderr[-2000:])
        assert exited - float(done.stdout.split()[-1]) < 8, "the process waited for the running command"
    finally:
        for info in other.list_workspaces():
            other.close(info.episode_id)
