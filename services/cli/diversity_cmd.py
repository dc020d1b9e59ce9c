"""``ise diversity POOL.jsonl``: how diverse an intent pool is, in the paper's terms.

Reads an ``intents.jsonl`` in the reference layout (:func:`services.intent.jsonl_io.read_intents`;
bad lines are reported and skipped), embeds every ``natural_language_intent`` with a local
sentence-transformers model in batches (progress bar on stderr), then reports:

* the Vendi Score with the cosine kernel at orders q = 1, 2 and ∞, over the whole pool and per
  domain and per complexity cell, computed exactly from the d×d matrix XᵀX/n in float64
  (:mod:`services.dedup.vendi`);
* corpus-level Distinct-1/2/3 (:mod:`services.dedup.distinct`);
* the Vendi-vs-pool-size curve over nested random subsets of one seeded permutation, as in the
  paper's figure (:func:`services.dedup.diversity.vendi_curve`).

It prints a compact table and writes everything as JSON and the curve as a PNG. Run it as
``python -m services.cli.diversity_cmd POOL.jsonl`` or, once wired in, ``ise diversity``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from services.common.errors import ISEError
from services.dedup.model_assets import MINILM, MPNET

if TYPE_CHECKING:
    import numpy as np

DESCRIPTION = """\
Measure the diversity of an intent pool (intents.jsonl, reference layout).

Each natural_language_intent is embedded with a local sentence-transformers model (offline), then:
  Vendi Score   exp(Renyi entropy) of the eigenvalues of the cosine kernel K/n, orders q=1
                (Shannon, the paper's number), q=2 and q=inf; an "effective number of distinct
                intents" between 1 and n. Computed exactly via the d x d matrix X^T X / n in
                float64 (same eigenvalues as the n x n kernel), overall and per domain and per
                complexity cell (an intent with 3 domains counts in 3 domain cells).
  Distinct-N    unique n-grams / total n-grams over the whole pool, N = 1, 2, 3 (lowercased word
                tokens, n-grams within each intent).
  Vendi curve   Vendi (q=1) of nested random subsets of increasing size (10, 20, 50, ... n) of one
                seeded permutation, as in the paper's Vendi-vs-pool-size figure (log-x PNG).
The paper reports Vendi 61.57 (q=1, all-mpnet-base-v2) over its 43,956 intents; scores depend on
the model, so compare like with like."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``diversity`` command to an ``add_subparsers()`` object; returns its parser."""
    parser = subparsers.add_parser(
        "diversity",
        help="Vendi Score (overall, per domain/complexity), Distinct-N and the Vendi curve of an intent pool",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure(parser)
    return parser


def configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("pool", type=Path, metavar="POOL.jsonl", help="intents file in the reference layout")
    parser.add_argument(
        "--model",
        default=MPNET,
        choices=(MPNET, MINILM),
        help=f"embedding model (default {MPNET}, 768-d, as in the paper; {MINILM} is 384-d and ~6x faster)",
    )
    parser.add_argument("--batch-size", type=_positive, default=64, help="texts per embedding batch (default 64)")
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the full report here (default: POOL's folder, <stem>.diversity.json)",
    )
    parser.add_argument(
        "--png",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the Vendi curve here (default: POOL's folder, <stem>.vendi-curve.png)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the curve's random permutation (default 0)")
    parser.add_argument(
        "--sizes",
        type=_sizes,
        default=None,
        metavar="N,N,...",
        help="curve subset sizes (default 10, 20, 50, 100, ... and the pool size)",
    )
    parser.add_argument(
        "--paper", action="store_true", help="overlay the paper's curve (read off its figure) on the PNG"
    )
    parser.add_argument(
        "--compare",
        type=Path,
        default=None,
        metavar="OTHER.jsonl",
        help="a second pool whose curve (same sizes and seed) is printed and drawn beside this one's, e.g. "
        "the fixed prior against diversity steering (bench/bench_steering.py writes both)",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(handler=run)
    return parser


def _positive(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, not {value}")
    return number


def _sizes(value: str) -> list[int]:
    try:
        sizes = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, not {value!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError(f"sizes must be integers >= 1, not {value!r}")
    return sizes


def load_pool(path: Path) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """(texts, labels, problems): labels are ``{"domain": [names], "complexity": tier}`` per intent."""
    from services.intent.jsonl_io import read_intents

    intents, errors = read_intents(path)
    texts = [intent.text for intent in intents]
    labels = [
        {"domain": [d.name or d.id for d in intent.domains], "complexity": intent.complexity} for intent in intents
    ]
    return texts, labels, [str(e) for e in errors]


def embed(texts: list[str], model: str, batch_size: int, quiet: bool = False) -> tuple[np.ndarray, str]:
    """Unit-norm float32 embeddings of ``texts`` (one row each) and the model's name."""
    import numpy as np
    from tqdm import tqdm

    from services.dedup.embedder import build_embedder

    embedder = build_embedder(model=model, batch_size=batch_size)
    try:
        out = np.empty((len(texts), embedder.dim), dtype=np.float32)
        with tqdm(
            total=len(texts),
            unit="intent",
            desc=f"embedding ({embedder.name})",
            disable=quiet,
            file=sys.stderr,
            mininterval=0.5,
        ) as bar:
            for start in range(0, len(texts), batch_size):
                batch = texts[start : start + batch_size]
                out[start : start + len(batch)] = embedder.encode(batch)
                bar.update(len(batch))
        return out, embedder.name
    finally:
        embedder.close()


def run(args: argparse.Namespace) -> int:
    """Run ``ise diversity``; returns the exit code (2 on a bad pool or a missing model)."""
    from services.dedup.diversity import (
        PAPER_CURVE,
        PAPER_POOL,
        PAPER_VENDI,
        diversity_report,
        format_report,
        plot_curve,
        vendi_curve,
    )

    pool: Path = args.pool
    json_path: Path = args.json or pool.with_name(f"{pool.stem}.diversity.json")
    png_path: Path = args.png or pool.with_name(f"{pool.stem}.vendi-curve.png")
    try:
        texts, labels, problems = load_pool(pool)
        for problem in problems[:5]:
            print(f"ise diversity: skipped {problem}", file=sys.stderr)
        if len(problems) > 5:
            print(f"ise diversity: ... and {len(problems) - 5} more bad lines skipped", file=sys.stderr)
        if not texts:
            raise ISEError(f"{pool}: no usable intents")
        started = time.perf_counter()
        embeddings, model_name = embed(texts, args.model, args.batch_size, quiet=args.quiet)
        embed_s = time.perf_counter() - started
        other = None
        if args.compare is not None:
            other_texts, _, _ = load_pool(args.compare)
            if not other_texts:
                raise ISEError(f"{args.compare}: no usable intents")
            other = embed(other_texts, args.model, args.batch_size, quiet=args.quiet)[0]
    except ISEError as exc:
        print(f"ise diversity: error: {exc}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    report = diversity_report(texts, embeddings, labels)
    curve = vendi_curve(embeddings, args.sizes, seed=args.seed)
    other_curve = vendi_curve(other, args.sizes, seed=args.seed) if other is not None else None
    metrics_s = time.perf_counter() - started
    result = {
        "pool": str(pool),
        "model": model_name,
        "skipped_lines": len(problems),
        **report,
        "curve": {"q": 1, "seed": args.seed, "points": [{"n": n, "vendi": v} for n, v in curve]},
        "paper": {"vendi_q1": PAPER_VENDI, "n": PAPER_POOL, "model": MPNET},
        **(
            {"compare": {"pool": str(args.compare), "points": [{"n": n, "vendi": v} for n, v in other_curve]}}
            if other_curve
            else {}
        ),
        "seconds": {"model_load_and_embedding": round(embed_s, 3), "metrics": round(metrics_s, 3)},
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    png_path.parent.mkdir(parents=True, exist_ok=True)
    plot_curve(
        curve,
        png_path,
        title=f"Vendi Score vs. pool size ({model_name})",
        label=f"{pool.name}",
        reference=PAPER_CURVE if args.paper else None,
        others=[(args.compare.name, other_curve)] if other_curve else (),
    )
    print(
        f"pool {pool}: {report['n']} intents, model {model_name} ({report['dim']}-d), "
        f"model load + embedding {embed_s:.1f} s, metrics {metrics_s:.2f} s"
    )
    print(format_report(report, curve))
    if other_curve:
        print(f"{args.compare.name} (q=1): " + ", ".join(f"{n:,}: {v:.2f}" for n, v in other_curve))
    print(f"wrote {json_path}\nwrote {png_path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = configure(
        argparse.ArgumentParser(
            prog="ise diversity",
            description=DESCRIPTION,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
    )
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
