"""``ise view``'s index and pages without a browser: counts, filters, facet counts, search,
paging, lazy loading by offset, skipped lines, escaping of record text, bad input.

Our records are made by the dataset writer's own ``training_record`` from a ``TrajectoryFinished``
event; the reference's middle format and a plain OpenAI-messages record are written as those
tools write them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from services.cli import main as cli
from services.common.contracts.events import TrajectoryFinished
from services.common.contracts.intent import DomainRef, Intent, Persona, TaskRef
from services.common.contracts.messages import ChatMessage, FunctionCall, ToolCall, ToolResultMeta, Verdict
from services.common.errors import ConfigError
from services.dedup.cost import load_prices
from services.dedup.record import training_record
from services.viewer.conversation import trajectory
from services.viewer.index import PAGE_SIZE, DatasetIndex, Query
from services.viewer.render import list_page, trajectory_page
from services.viewer.server import ViewerServer

DIFF = "--- a/notes/plan.md\n+++ b/notes/plan.md\n@@ -1,2 +1,2 @@\n plan\n-- old step\n+- new step\n"
EVIL = "<script>alert('x')</script>"


def ours(i: int, verdict: str = "success", complexity: str = "medium", domain: str = "file-io", text: str = "") -> dict:
    """One of our records, through the dataset writer's own code."""
    intent = Intent(
        intent_id=f"intent_{i}",
        text=text or f"Request {i}: summarise the turbine readings in data/t{i}.csv",
        persona=Persona(id=f"p{i}", name="Ana Ruiz", role="Wind analyst", industry="Energy"),
        domains=[DomainRef(id=domain, name=domain.upper())],
        tasks=[TaskRef(id="t1", name="Summarise CSV", domain=domain)],
        complexity=complexity,  # type: ignore[arg-type]
        seed=i,
    )
    calls = [
        ToolCall(id=f"c{i}a", function=FunctionCall(name="exec", arguments='{"command": "./check.sh"}')),
        ToolCall(id=f"c{i}b", function=FunctionCall(name="edit", arguments='{"path": "notes/plan.md"}')),
    ]
    messages = [
        ChatMessage(role="system", content="runtime prompt"),
        ChatMessage(role="user", content=intent.text),
        ChatMessage(role="assistant", content="", tool_calls=calls, reasoning_content="think first"),
        ChatMessage(role="tool", tool_call_id=f"c{i}a", name="exec", content=f"{EVIL}\n(Command exited with code 3)"),
        ChatMessage(role="tool", tool_call_id=f"c{i}b", name="edit", content="Successfully replaced text."),
        ChatMessage(role="assistant", content="Fixed."),
        ChatMessage(role="user", content="Check it again."),
        ChatMessage(role="assistant", content="Done."),
    ]
    event = TrajectoryFinished(
        event_id=f"e{i}",
        run_id="run-1",
        producer="test",
        episode_id=f"ep-{i}",
        intent=intent,
        verdict=Verdict(verdict),
        reason=f"reason {i}",
        messages=messages,
        tool_results=[
            ToolResultMeta(tool_call_id=f"c{i}a", name="exec", ok=False, exit_code=3, duration_ms=41),
            ToolResultMeta(tool_call_id=f"c{i}b", name="edit", ok=True, duration_ms=2, diff=DIFF),
        ],
        user_turns=2,
        verification_asked=True,
        role_drift_messages=1,
    )
    return training_record(event)


def reference(i: int) -> dict[str, Any]:
    """The reference implementation's middle format: arguments as objects, exit codes in the text."""
    return {
        "status": "failed",
        "session_id": f"intent_{i}__worker__uuid",
        "intent": f"Reference intent {i}: back up the photos",
        "messages": [
            {"role": "user", "content": f"Reference intent {i}: back up the photos"},
            {"role": "assistant", "tool_calls": [{"id": "r1", "function": {"name": "exec", "arguments": {"x": 1}}}]},
            {"role": "tool", "tool_call_id": "r1", "name": "exec", "content": "no\n\n(Command exited with code 2)"},
        ],
        "metadata": {"domains": [{"name": "Backup", "selected_tasks": [{"name": "Copy files"}]}]},
    }


PLAIN = {
    "messages": [{"role": "user", "content": "Plain question about Kubernetes"}, {"role": "assistant", "content": "ok"}]
}


def write_lines(path: Path, values: list[Any], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(v) + "\n" for v in values) + tail)
    return path


@pytest.fixture
def dataset(tmp_path: Path) -> DatasetIndex:
    records = [ours(0, complexity="simple"), ours(1, verdict="failed", domain="web"), ours(2, domain="web")]
    write_lines(tmp_path / "a.jsonl", [*records, {"no": "messages"}], tail="not json\n")
    write_lines(tmp_path / "b.jsonl", [reference(3), PLAIN], tail='{"messages": [')  # torn last line
    (tmp_path / "c.json").write_text(json.dumps([ours(4, text=f"Tricky {EVIL} request")]))
    return DatasetIndex.build(sorted(tmp_path.iterdir()), progress=False)


def test_entries_counts_and_skipped_lines(dataset: DatasetIndex) -> None:
    assert [e.verdict for e in dataset.entries] == ["success", "failed", "success", "failed", "unknown", "success"]
    assert [e.ident for e in dataset.entries][:4] == ["ep-0", "ep-1", "ep-2", "intent_3__worker__uuid"]
    first = dataset.entries[0]
    assert (first.user_turns, first.messages, first.tool_calls, first.nonzero_exits) == (2, 7, 2, 1)
    assert first.tools == ("exec", "edit") and first.domains == ("FILE-IO",) and first.complexity == "simple"
    assert dataset.entries[3].domains == ("Backup",) and dataset.entries[3].nonzero_exits == 1
    problems = [str(s) for s in dataset.skipped]
    assert len(problems) == 3
    assert "a.jsonl:4" in problems[0] and 'no "messages" list' in problems[0]
    assert "a.jsonl:5" in problems[1] and "not valid JSON" in problems[1]
    assert "b.jsonl:3" in problems[2] and "cut off mid-write" in problems[2]


def test_filters_and_facet_counts(dataset: DatasetIndex) -> None:
    everything = dataset.select(Query())
    assert everything.total == 6
    assert dict(everything.counts["verdict"]) == {"success": 3, "failed": 2, "unknown": 1}
    assert dict(everything.counts["tool"]) == {"exec": 5, "edit": 4}
    assert dict(everything.counts["turns"]) == {"2": 4, "1": 2} and everything.counts["turns"][0][0] == "1"
    assert [c for c, _ in everything.counts["complexity"]] == ["simple", "medium", "unknown"]

    failed = dataset.select(Query.parse({"verdict": ["failed"]}))
    assert [n for n, _ in failed.rows] == [1, 3]
    # the chosen facet keeps its alternatives; the others count only the failed records
    assert dict(failed.counts["verdict"]) == {"success": 3, "failed": 2, "unknown": 1}
    assert dict(failed.counts["domain"]) == {"WEB": 1, "Backup": 1}

    both = dataset.select(Query.parse({"verdict": ["success"], "domain": ["WEB"]}))
    assert [n for n, _ in both.rows] == [2]
    assert dict(both.counts["verdict"]) == {"failed": 1, "success": 1}  # every WEB record, by verdict
    none = dataset.select(Query.parse({"tool": ["web_fetch"]}))
    assert none.total == 0 and ("web_fetch", 0) in none.counts["tool"]


def test_search_over_intents_and_intent_fields(dataset: DatasetIndex) -> None:
    def hits(text: str) -> list[int]:
        return [n for n, _ in dataset.select(Query(text=text)).rows]

    assert hits("TURBINE t1.csv") == [1]  # every word, any case
    assert hits("kubernetes") == [4]  # a plain record: its first user message
    assert hits("wind analyst") == [0, 1, 2, 5]  # the persona
    assert hits("copy files") == [3]  # the reference's selected task
    assert hits("turbine backup") == []
    assert dataset.select(Query(filters=("success", None, None, None, None), text="turbine")).total == 2


def test_paging(tmp_path: Path) -> None:
    write_lines(tmp_path / "many.jsonl", [ours(i) for i in range(PAGE_SIZE * 2 + 3)])
    index = DatasetIndex.build([tmp_path / "many.jsonl"], progress=False)
    second = index.select(Query(page=2))
    assert (second.total, second.pages, second.page) == (2 * PAGE_SIZE + 3, 3, 2)
    assert [n for n, _ in second.rows] == list(range(PAGE_SIZE, 2 * PAGE_SIZE))
    assert index.select(Query(page=99)).page == 3 and len(index.select(Query(page=99)).rows) == 3
    assert Query.parse({"page": ["-4"]}).page == 1 and Query.parse({"page": ["x"]}).page == 1


def test_query_urls_round_trip() -> None:
    query = Query.parse({"verdict": ["failed"], "q": ["a&b <c>"], "page": ["2"]})
    url = query.url("tool", "exec", page=3)
    assert Query.parse(parse_qs(urlsplit(url).query)) == Query(("failed", None, None, "exec", None), "a&b <c>", 3)
    assert Query.parse(parse_qs(urlsplit(query.url("verdict", None)).query)).filters[0] is None
    assert Query().url() == "/"


def test_records_load_lazily_by_offset(dataset: DatasetIndex, tmp_path: Path) -> None:
    assert dataset.record(2)["metadata"]["episode_id"] == "ep-2"
    assert dataset.record(4) == PLAIN
    assert dataset.record(5)["metadata"]["episode_id"] == "ep-4"  # from the .json array
    with pytest.raises(IndexError):
        dataset.record(6)
    (tmp_path / "a.jsonl").write_text("")  # the file changed since the index was built
    with pytest.raises(ValueError, match=r"a\.jsonl:3"):
        dataset.record(2)


def test_conversation_joins_tool_results_and_their_facts(dataset: DatasetIndex) -> None:
    view = trajectory(dataset.record(0), dataset.prices)
    assert view.reason == "reason 0" and view.tasks == ("Summarise CSV",)
    assert ("name", "Ana Ruiz") in view.persona and ("role drift kept", "1", True) in view.flags
    assert ("verification asked", "yes", False) in view.flags
    exec_result, edit_result = (m.result for m in view.messages if m.role == "tool")
    assert exec_result is not None and exec_result.failed and exec_result.exit_code == 3
    assert exec_result.duration_ms == 41
    assert edit_result is not None and not edit_result.failed
    assert [d.kind for d in edit_result.diff] == ["file", "file", "hunk", "same", "del", "add"]
    call = next(m for m in view.messages if m.calls)
    assert call.reasoning == "think first" and call.calls[0].arguments == '{\n  "command": "./check.sh"\n}'
    assert [m.turn for m in view.messages] == [0, 1, 1, 1, 1, 1, 2, 2]

    ref = trajectory(dataset.record(3), dataset.prices)  # no recorded facts: the text's exit code
    result = ref.messages[2].result
    assert result is not None and result.failed and result.exit_code == 2 and result.duration_ms is None
    assert ref.messages[1].calls[0].arguments == '{\n  "x": 1\n}' and ref.persona == []


def test_pages_escape_record_text(dataset: DatasetIndex) -> None:
    listed = list_page(dataset, Query(text="tricky"), "data <dir>")
    page = trajectory_page(dataset, 5, "data <dir>")
    for html in (listed, page):
        assert "<script" not in html
        assert "data &lt;dir&gt;" in html
    assert "Tricky &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; request" in listed
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;\n(Command exited with code 3)" in page
    assert '<span class="d-add">+- new step</span>' in page
    assert '<span class="exit bad">exit 3</span>' in page
    assert "3 line(s) skipped" in list_page(dataset, Query(), "x")


def test_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["view", str(tmp_path / "missing")]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    write_lines(tmp_path / "junk.jsonl", [{"no": "messages"}])
    assert cli.main(["view", str(tmp_path / "junk.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "holds no trajectory records (1 line(s) skipped" in err and 'no "messages" list' in err
    with pytest.raises(SystemExit) as exited:
        cli.main(["view", str(tmp_path), "--port", "70000"])
    assert exited.value.code == 2 and "not a port number" in capsys.readouterr().err


def test_stats_points_at_the_viewer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_lines(tmp_path / "d.jsonl", [ours(0), PLAIN])
    assert cli.main(["stats", str(data), "--no-save"]) == 0
    assert f"browse: ise view {data}" in capsys.readouterr().out.splitlines()


def test_a_port_in_use_is_a_config_error(dataset: DatasetIndex) -> None:
    first = ViewerServer(dataset, "x")
    port = first.server_address[1]
    try:
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is in use; pass another --port"):
            ViewerServer(dataset, "x", port)
    finally:
        first.server_close()


def test_cost_per_trajectory_and_per_selection(tmp_path: Path) -> None:
    """Priced by the table (``services.dedup.cost``): each trajectory's cost by role, the matching
    records' total on the list; a model without a price makes it n/a, never $0."""
    priced, unpriced = ours(0), ours(1, verdict="failed")
    for record, agent_model in ((priced, "house-agent"), (unpriced, "mystery-model")):
        record["metadata"]["usage"]["agent"].update(prompt_tokens=1_000_000, completion_tokens=100_000)
        record["metadata"]["models"] = {"agent": agent_model, "user": "house-user"}
    prices = tmp_path / "prices.yaml"
    prices.write_text(
        "models:\n  house-agent: {prompt: 2.0, completion: 10.0}\n  house-user: {prompt: 1, completion: 1}\n"
    )
    data = tmp_path / "data"
    data.mkdir()
    write_lines(data / "a.jsonl", [priced, unpriced])
    index = DatasetIndex.build([data / "a.jsonl"], progress=False, prices=load_prices(prices))
    assert [e.cost_usd for e in index.entries] == [3.0, None]
    assert index.select(Query.parse({"verdict": ["success"]})).cost == "$3.0000 (mean $3.0000)"
    assert index.select(Query()).cost.startswith("n/a: 1 of 2 priced")
    assert dict(trajectory(index.record(0), index.prices).cost) == {
        "agent": "$3.0000",
        "user": "$0",
        "intent": "$0",
        "total": "$3.0000",
    }
    assert "no price for mystery-model" in dict(trajectory(index.record(1), index.prices).cost)["total"]
    assert 'id="cost"' in list_page(index, Query(), "data") and "cost agent" in trajectory_page(index, 0, "data")
