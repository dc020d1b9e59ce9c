"""Calibrate the gate's near-duplicate threshold on labelled pairs (bench/data/gate_pairs.yaml).

Prints the cosine of every paraphrase pair (must be rejected) and every related-but-distinct
pair (must be accepted) per model, the gap between them, and the midpoint. The defaults in
services/dedup/settings.py (CALIBRATED_THRESHOLDS) were chosen from this output, leaning a
little toward the paraphrase side so that related work is never thrown away.

    .venv/bin/python bench/calibrate_gate.py [MODEL ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

from services.dedup.embedder import build_embedder
from services.dedup.settings import CALIBRATED_THRESHOLDS

PAIRS = Path(__file__).parent / "data" / "gate_pairs.yaml"


def pair_cosines(model: str, pairs: list[list[str]]) -> list[float]:
    embedder = build_embedder(model=model)
    try:
        rows = embedder.encode([text for pair in pairs for text in pair])
    finally:
        embedder.close()
    return sorted(float(rows[2 * i] @ rows[2 * i + 1]) for i in range(len(pairs)))


def main(models: list[str]) -> None:
    data = yaml.safe_load(PAIRS.read_text())
    for model in models:
        para = pair_cosines(model, data["paraphrase"])
        dist = pair_cosines(model, data["distinct"])
        gap = (max(dist), min(para))
        print(
            f"{model}\n  paraphrase {' '.join(f'{s:.3f}' for s in para)}\n  distinct   {' '.join(f'{s:.3f}' for s in dist)}"
        )
        print(
            f"  gap {gap[0]:.3f}..{gap[1]:.3f}  midpoint {sum(gap) / 2:.3f}  configured {CALIBRATED_THRESHOLDS.get(model)}"
        )


if __name__ == "__main__":
    main(sys.argv[1:] or list(CALIBRATED_THRESHOLDS))
