"""Dedup service settings (env prefix ``ISE_DEDUP_``): embedding model, gate threshold, dataset;
and the price table behind the dataset's cost figures (``ISE_PRICES_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.errors import ConfigError

CALIBRATED_THRESHOLDS = {"all-mpnet-base-v2": 0.80, "all-MiniLM-L6-v2": 0.72}
"""Chosen in the gap between paraphrases and related-but-distinct intents of
bench/data/gate_pairs.yaml (``python bench/calibrate_gate.py``): mpnet paraphrases 0.852-0.948 vs
distinct <= 0.687; MiniLM 0.750-0.953 vs <= 0.671. See services/dedup/README.md."""


class DedupSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISE_DEDUP_", extra="forbid")

    model: str = Field("all-mpnet-base-v2", description="all-mpnet-base-v2, all-MiniLM-L6-v2, or a model folder.")
    dtype: str = Field(
        "float32", description="float32 or bfloat16; on CPUs without native bf16 (AVX2 only) bf16 is ~8x slower."
    )
    batch_size: int = Field(32, ge=1)
    threshold: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Cosine at or above which an intent is a near-duplicate of the pool "
        "(default: the model's calibrated value, see CALIBRATED_THRESHOLDS).",
    )
    dataset_dir: str = Field("out", description="Root of the dataset: <dir>/<run_id>/trajectories-*.jsonl.")
    shard_lines: int = Field(1000, ge=1, description="Trajectories per JSONL shard.")

    def gate_threshold(self) -> float:
        if self.threshold is not None:
            return self.threshold
        try:
            return CALIBRATED_THRESHOLDS[self.model]
        except KeyError:
            raise ConfigError(
                f"no calibrated threshold for model {self.model!r}: set ISE_DEDUP_THRESHOLD "
                "(calibrate with bench/calibrate_gate.py)"
            ) from None


class PriceSettings(BaseSettings):
    """Where the price table of ``services/dedup/cost.py`` comes from (env prefix ``ISE_PRICES_``)."""

    model_config = SettingsConfigDict(env_prefix="ISE_PRICES_", extra="forbid")

    file: str = Field(
        "",
        description="Your own price table (YAML, the shipped services/common/llm/prices.yaml's shape): its "
        "entries replace and extend the shipped ones. Empty: the shipped table only.",
    )
