"""Dedup service settings (env prefix ``ISE_DEDUP_``): embedding model, gate threshold, dataset."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class DedupSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ISE_DEDUP_", extra="forbid")

    model: str = Field("all-mpnet-base-v2", description="all-mpnet-base-v2, all-MiniLM-L6-v2, or a model folder.")
    dtype: str = Field("float32", description="float32 or bfloat16 (CPU).")
    batch_size: int = Field(32, ge=1)
    threshold: float = Field(
        0.92, gt=0, le=1, description="Cosine at or above which an intent is a near-duplicate of the pool."
    )
    dataset_dir: str = Field("out", description="Root of the dataset: <dir>/<run_id>/trajectories-*.jsonl.")
    shard_lines: int = Field(1000, ge=1, description="Trajectories per JSONL shard.")
