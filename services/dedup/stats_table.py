"""The text of ``ise stats``: the paper's table for one or more datasets side by side.

Rows are the per-trajectory measures (mean, median, p90, max for each dataset) with the paper's
figure in the last column, then the shares, the user-turn histogram and, per dataset, the mixes
(verdicts, complexity, domains, tools, tasks) and the cost (``services.dedup.cost``).
"""

from __future__ import annotations

from typing import Any

from services.dedup.cost import describe
from services.dedup.stats import MEASURES, paper_figures

LABELS = {
    "user_turns": "user turns",
    "messages": "messages (no system)",
    "tool_calls": "tool calls",
    "unique_tools": "unique tools",
}
_NAME_W = 24
_CELL_W = 7


def _num(value: Any) -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.2f}"
    return str(int(value)) if isinstance(value, float) else str(value)


def _row(name: str, cells: list[str]) -> str:
    return f"{name:{_NAME_W}}" + "".join(f"{c:>{_CELL_W}}" for c in cells)


def format_tables(named: list[tuple[str, dict[str, Any]]]) -> str:
    """The table for each ``(label, stats)`` side by side, the paper last."""
    paper = paper_figures()
    head = ["mean", "med", "p90", "max"] * len(named)
    selection = named[0][1].get("selection", "success")
    over = "successful trajectories (a record without a verdict counts)" if selection == "success" else "every verdict"
    lines = [f"over {over}"]
    lines += [
        f"  [{i + 1}] {label}: {stats['trajectories']} of {stats['records_read']} records"
        for i, (label, stats) in enumerate(named)
    ]
    group = "".join(f"{f'[{i + 1}]':>{_CELL_W * 4}}" for i in range(len(named)))
    lines += ["", f"{'':{_NAME_W}}{group}{'paper':>{_CELL_W + 2}}", _row("per trajectory", [*head, "  mean"])]
    for measure in MEASURES:
        cells = [_num(stats[measure][k]) for _, stats in named for k in ("mean", "median", "p90", "max")]
        lines.append(_row(LABELS[measure], [*cells, _num(paper.get(measure, {}).get("mean"))]))
    lines.append("")
    shares = (
        ("non-zero exit (exec)", "nonzero_exit_share"),
        ("tool results failed", "tool_failure_share"),
        ("role-drift rate", "role_drift_rate"),
        ("verified before done", "verified_share"),
    )
    for name, key in shares:
        lines.append(_row(name, [f"{stats[key]:.2%}" for _, stats in named]))
    axes = paper.get("intent_axes", {})
    lines.append(
        _row(
            "domains x tasks x tools",
            [" x ".join(_num(s["intent_axes"][k]) for k in ("domains", "tasks", "tools")) for _, s in named],
        )
        + f"   paper {axes.get('domains')} x {axes.get('tasks')} x {axes.get('tools')}"
    )
    lines += ["", "user turns (histogram)"]
    turns = sorted({int(k) for _, s in named for k in s["user_turn_histogram"]})
    for turn in turns:
        counts = [s["user_turn_histogram"].get(str(turn), 0) for _, s in named]
        bars = "  ".join(
            f"{c:>5} {'#' * _bar(c, s['trajectories'])}".ljust(27) for c, (_, s) in zip(counts, named, strict=True)
        )
        lines.append(f"  {turn:>3}  {bars}".rstrip())
    for i, (_, stats) in enumerate(named):
        lines += ["", f"[{i + 1}] mixes"]
        for title in ("verdicts", "complexity", "domains", "tools", "tasks"):
            mix = stats.get(title) or {}
            top = ", ".join(f"{k} {v}" for k, v in list(mix.items())[:10])
            lines.append(f"  {title:12} {top or '-'}" + (f" (+{len(mix) - 10} more)" if len(mix) > 10 else ""))
        foreign = stats.get("records_without_metadata") or 0
        if foreign:
            lines.append(f"  {foreign} record(s) without ISE metadata: counted from their messages only")
        if stats.get("cost"):
            lines += ["", f"[{i + 1}] cost, every verdict: {stats['cost']['counted']}"]
            lines += [f"  {line}" for line in describe(stats["cost"])]
    return "\n".join(lines)


def _bar(count: int, total: int, width: int = 20) -> int:
    return round(width * count / total) if total else 0
