"""What a trainer does with a dataset, done for real: load it with Hugging Face ``datasets`` and
render every conversation with a tool-aware chat template (the local model's ChatML-with-tools
template, through ``transformers``' own renderer)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from services.common.llm.local_server import TEMPLATE_PATH
from services.dedup.export import REFERENCE_FIELDS


def check_reference_fields(record: dict[str, Any]) -> None:
    """``record`` carries the reference's top-level fields with its meanings, and ``success``."""
    assert set(record) >= set(REFERENCE_FIELDS), set(REFERENCE_FIELDS) - set(record)
    assert {"persona", "domains"} <= set(record["metadata"])
    messages = record["messages"]
    assert record["total_steps"] == sum(len(m.get("tool_calls") or []) for m in messages)
    assert (
        record["final_output"] == [m["content"] for m in messages if m["role"] == "assistant" and m.get("content")][-1]
    )
    assert all(isinstance(m["success"], bool) for m in messages if m["role"] == "tool")
    assert (record["status"] == "completed") == (record["metadata"]["verdict"] == "success")


def load_with_datasets(files: list[Path], cache_dir: Path) -> list[dict[str, Any]]:
    """The rows ``datasets.load_dataset("json", ...)`` gives for ``files`` (offline)."""
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    import datasets

    loaded = datasets.load_dataset("json", data_files=[str(f) for f in files], split="train", cache_dir=str(cache_dir))
    return [dict(row) for row in loaded]


def render_chat(record: dict[str, Any]) -> str:
    """The conversation as a tool-aware chat template renders it for training."""
    from transformers.utils.chat_template_utils import render_jinja_template

    messages = [
        {
            **m,
            "tool_calls": [
                {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
                for c in m["tool_calls"]
            ],
        }
        if m.get("tool_calls") and all(_is_json(c["function"]["arguments"]) for c in m["tool_calls"])
        else m
        for m in record["messages"]
    ]
    rendered = render_jinja_template([messages], tools=record["tools"], chat_template=TEMPLATE_PATH.read_text())
    return str(rendered[0][0] if isinstance(rendered, tuple) else rendered[0])


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True
