"""An example external agent: bridges any OpenAI-compatible chat endpoint to ``ise.v1.Episodes``.

    python -m services.clients.example_agent --target 127.0.0.1:50061 --token "$TOKEN" \\
        --llm-base-url http://127.0.0.1:8765/v1 --llm-model default:agent --episodes 0

Each LLM step is one chat completion with the episode's tools; its tool calls run for real in
the episode's workspace. Prints one JSON line per finished episode. A broken stream is resumed
with the episode's lease token. ``--episodes 0``: serve until stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from typing import Any

import grpc
from openai import AsyncOpenAI

from services.clients.episodes import EpisodeResult, EpisodesClient, EpisodesError, Message, Policy

log = logging.getLogger("ise.example_agent")


def openai_policy(llm: AsyncOpenAI, model: str) -> Policy:
    """One LLM step: a chat completion with tools, as an OpenAI assistant message (plus usage)."""

    async def policy(messages: list[Message], tools: list[Message]) -> Message:
        wire: Any = {"messages": messages, "tools": tools}  # OpenAI's typed dicts, as plain JSON
        response = await llm.chat.completions.create(model=model, **wire)
        choice = response.choices[0].message
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in choice.tool_calls or []
            if c.type == "function"
        ]
        usage: dict[str, Any] = response.usage.model_dump() if response.usage else {}
        return {"content": choice.content, "tool_calls": calls, "usage": usage}

    return policy


async def serve(args: argparse.Namespace) -> int:
    """Play episodes until ``args.episodes`` are done (0: until the server goes away); 1 when the
    stream ended with an error, which is logged in one line."""
    llm = AsyncOpenAI(base_url=args.llm_base_url, api_key=args.llm_api_key or "none", max_retries=2)
    policy = openai_policy(llm, args.llm_model)
    client = EpisodesClient(args.target, token=args.token, agent_name=args.name, model=args.llm_model)
    done = 0
    try:
        await client.connect()
        while args.episodes <= 0 or done < args.episodes:
            result = await _play_one(client, policy)
            if result is None:
                continue  # the server ended that episode's turn (lease lost, workspace gone): the next one
            done += 1
            print(
                json.dumps({"episode_id": result.episode_id, "verdict": result.verdict, "turns": result.turns}),
                flush=True,
            )
    except (EpisodesError, grpc.aio.AioRpcError) as exc:
        why = f"{exc.code}: {exc.message}" if isinstance(exc, EpisodesError) else f"{exc.code().name}: {exc.details()}"
        log.error("the Episodes stream at %s ended (%s) after %d episode(s)", args.target, why, done)
        return 1
    finally:
        await client.close()
    return 0


async def _play_one(client: EpisodesClient, policy: Policy) -> EpisodeResult | None:
    """One episode; a broken stream is resumed with the lease token; None when the server aborted it."""
    resumed = False
    while True:
        try:
            return await client.run_episode(policy, resumed=resumed)
        except EpisodesError as exc:
            if exc.code == "ABORTED":  # the stream goes on; the episode is retried by the pipeline
                log.warning("episode %s aborted by the server: %s", client.episode_id, exc.message)
                client.episode_id = client.lease_token = ""
                return None
            if not client.lease_token or exc.code != "UNAVAILABLE":
                raise
            log.warning("stream broke (%s); resuming %s", exc, client.episode_id)
            await asyncio.sleep(1.0)
            await client.connect(resume_token=client.lease_token)
            resumed = True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--target",
        default=os.environ.get("ISE_AGENT_TARGET", "127.0.0.1:50061"),
        help="host:port of an executor's gRPC server (`ise run --agent external` prints it; or ISE_AGENT_TARGET)",
    )
    parser.add_argument(
        "--token", default=os.environ.get("ISE_AGENT_TOKEN", ""), help="bearer token (or ISE_AGENT_TOKEN)"
    )
    parser.add_argument("--name", default="example-agent", help="recorded as metadata.models.agent (with the model)")
    parser.add_argument(
        "--llm-base-url",
        default=os.environ.get("OPENAI_BASE_URL", "http://127.0.0.1:8765/v1"),
        help="the agent's OpenAI-compatible endpoint (or OPENAI_BASE_URL)",
    )
    parser.add_argument("--llm-model", default="default:agent", help="the model name sent to that endpoint")
    parser.add_argument("--llm-api-key", default=os.environ.get("OPENAI_API_KEY", ""), help="(or OPENAI_API_KEY)")
    parser.add_argument("--episodes", type=int, default=0, help="episodes to play (0: until stopped)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
