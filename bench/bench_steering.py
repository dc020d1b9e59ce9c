"""Diversity steering against the paper's fixed prior: the accepted pool's Vendi as it grows.

Not a test. Both runs in this process, seeds fixed, the same production pieces the pipeline
uses: the sampler (``sample_tuple``, with and without cell weights), the scripted renderer over
HTTP (``render`` against ``ScriptedLLMServer``), the real all-mpnet-base-v2 embedder, the gate
(``IntentGate`` at its calibrated threshold) and the exact incremental Vendi per domain x
complexity cell (``VendiByCell``). Intents are drawn in batches of ``--batch`` (rendered, then
embedded together, as the job renders several at once); steered, after each batch the gate's
report updates ``CellGains`` and the next batch is drawn with ``steering_weights`` (as the job
does from Redis, where the gate saves them after its report every second). Prints the Vendi (q=1) of the accepted pool at sizes along the way, for both, and the
ratio; writes each accepted pool as intents.jsonl so that ``ise diversity A --compare B --png``
plots both curves.

    .venv/bin/python bench/bench_steering.py [--intents 2000] [--out bench-steering/]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tqdm import tqdm

from services.common.contracts.intent import Intent
from services.common.ids import derive_seed, digest
from services.common.llm.client import LLMClient
from services.common.llm.scripted_server import ScriptedLLMServer
from services.common.settings import LLMSettings
from services.common.steering import CELL_GROUP, CellGains, cell_label, steering_weights
from services.dedup.embedder import Embedder, build_embedder
from services.dedup.gate import IntentGate
from services.dedup.settings import DedupSettings
from services.dedup.vendi import VendiByCell
from services.intent.catalog import load_catalog
from services.intent.jsonl_io import intent_to_reference
from services.intent.renderer import RenderError, RenderLimits, render
from services.intent.sampler import sample_tuple

CHECKPOINTS = (100, 200, 500, 1000, 1500, 2000, 5000, 10000)


async def run(
    steer: bool, count: int, batch: int, llm: LLMClient, embedder: Embedder, threshold: float
) -> tuple[dict[int, float], list[Intent]]:
    """Vendi (q=1) of the accepted pool at each checkpoint, and the accepted intents."""
    catalog = load_catalog()
    gate = IntentGate(embedder.dim, threshold)
    cells = VendiByCell(embedder.dim)
    gains = CellGains()
    weights: dict[str, float] = {}
    accepted: list[Intent] = []
    curve: dict[int, float] = {}
    bar = tqdm(total=count, desc="steered" if steer else "prior", unit="intent")
    for start in range(0, count, batch):  # a batch is drawn with the weights of the last report
        drawn = []
        for index in range(start, min(count, start + batch)):
            seed = derive_seed(0, index)
            tup = sample_tuple(catalog, seed, weights if steer else None)
            try:
                text, _, _ = await render(llm, tup, RenderLimits(attempts=1))
            except RenderError:
                continue
            drawn.append((index, tup, text))
        vectors = await asyncio.to_thread(embedder.encode, [text for *_, text in drawn])
        for (index, tup, text), vector in zip(drawn, vectors, strict=True):
            if not gate.check(text, vector).accepted:
                continue
            intent_id = "intent_" + digest(0, index, length=12)
            gate.add(intent_id, text, vector)
            labels = [cell_label(d.id, tup.complexity) for d in tup.domains]
            cells.add(vector[None, :], [{CELL_GROUP: labels}])
            accepted.append(tup.to_intent(intent_id, text))
            if len(accepted) in CHECKPOINTS:
                curve[len(accepted)] = cells.overall.score(1)
        if steer:
            weights = steering_weights(gains.update(cells.report(orders=(1,))))
        bar.update(min(count, start + batch) - start)
    bar.close()
    curve[len(accepted)] = cells.overall.score(1)
    return curve, accepted


def write_pool(path: Path, intents: list[Intent]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as out:
        for intent in intents:
            out.write(json.dumps(intent_to_reference(intent), ensure_ascii=False) + "\n")


async def main(args: argparse.Namespace) -> None:
    settings = DedupSettings()
    embedder = await asyncio.to_thread(build_embedder, settings)
    with ScriptedLLMServer() as server:
        llm = LLMClient(LLMSettings(base_url=server.base_url, model="default:intent", max_retries=0), "intent")
        prior, prior_pool = await run(False, args.intents, args.batch, llm, embedder, settings.gate_threshold())
        steered, steered_pool = await run(True, args.intents, args.batch, llm, embedder, settings.gate_threshold())
    write_pool(args.out / "prior.jsonl", prior_pool)
    write_pool(args.out / "steered.jsonl", steered_pool)
    print(
        f"{args.intents} intents each, scripted renderer, {embedder.name}, gate threshold {settings.gate_threshold()}"
    )
    print(f"accepted: prior {len(prior_pool)}, steered {len(steered_pool)}")
    print(f"{'accepted':>9} {'prior':>8} {'steered':>8} {'ratio':>6}  (Vendi q=1 of the accepted pool)")
    for size in sorted(set(prior) & set(steered)):
        print(f"{size:>9} {prior[size]:8.2f} {steered[size]:8.2f} {steered[size] / prior[size]:6.3f}")
    print(f"pools written to {args.out}/prior.jsonl and steered.jsonl")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--intents", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=25, help="intents drawn between gain updates")
    parser.add_argument("--out", type=Path, default=Path("bench-steering"))
    asyncio.run(main(parser.parse_args()))
