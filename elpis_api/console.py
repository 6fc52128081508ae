"""Terminal views: live progress per task, the task summary, step tables."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress import BarColumn, Progress, TextColumn
from rich.syntax import Syntax
from rich.table import Table

from elpis_api.client import ElpisClient

console = Console()
FINISHED = {"succeeded", "failed", "cancelled"}
STATUS_STYLE = {
    "queued": "dim",
    "running": "cyan",
    "succeeded": "green",
    "failed": "red",
    "cancelled": "yellow",
}


def mood_of(task: dict[str, Any]) -> str:
    emotion = task.get("emotion") or {}
    if not emotion:
        return "-"
    return (
        f"{emotion.get('mood', '?')} (v={emotion.get('valence', 0):+.2f} a={emotion.get('arousal', 0):+.2f})"
    )


def watch_tasks(client: ElpisClient, task_ids: list[int], poll: float = 1.0) -> list[dict[str, Any]]:
    """Show one progress bar per task (turns used of the budget, status, mood) until all are finished."""
    progress = Progress(
        TextColumn("[bold]task {task.fields[tid]:>4}"),
        BarColumn(bar_width=24),
        TextColumn("{task.completed:>2.0f}/{task.total:<2.0f} turns"),
        TextColumn("[{task.fields[style]}]{task.fields[status]:<9}"),
        TextColumn("{task.fields[mood]}"),
        console=console,
    )
    bars = {
        tid: progress.add_task("", total=1, tid=tid, status="queued", style="dim", mood="-")
        for tid in task_ids
    }
    details: dict[int, dict[str, Any]] = {}
    with Live(progress, console=console, refresh_per_second=4):
        while True:
            for tid in task_ids:
                task = client.task(tid)
                details[tid] = task
                turns = task["steps_by_kind"].get("emotion", 0)
                progress.update(
                    bars[tid],
                    completed=turns,
                    total=max(task["budget"].get("max_steps", 1), turns),
                    status=task["status"],
                    style=STATUS_STYLE.get(task["status"], ""),
                    mood=mood_of(task),
                )
            if all(d["status"] in FINISHED for d in details.values()):
                return [details[t] for t in task_ids]
            time.sleep(poll)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float], lo: float = -1.0, hi: float = 1.0) -> str:
    span = hi - lo
    return "".join(SPARKS[min(len(SPARKS) - 1, int((v - lo) / span * len(SPARKS)))] for v in values)


def trajectory_text(items: list[dict[str, Any]]) -> str:
    """One line a person can read at a glance: valence and arousal per turn, mood changes, trend,
    and where the agent replanned."""
    if not items:
        return "-"
    moods: list[str] = []
    for item in items:
        if not moods or moods[-1] != item["mood"]:
            moods.append(item["mood"])
    replans = [str(i["turn"] + 1) for i in items if i.get("replan_next")]
    valence, arousal = sparkline([i["valence"] for i in items]), sparkline([i["arousal"] for i in items])
    text = f"valence {valence}  arousal {arousal}  {' → '.join(moods)}; trend {items[-1].get('trend') or '-'}"
    if replans:
        text += f"; replanned at turn {', '.join(replans)}"
    return text


def task_summary(task: dict[str, Any], emotions: list[dict[str, Any]] | None = None) -> Panel:
    kinds = task.get("steps_by_kind", {})
    order = ["observe", "memory", "reflect", "think", "tool_call", "tool_result", "emotion"]
    table = Table.grid(padding=(0, 2))
    table.add_row(
        "status",
        f"[{STATUS_STYLE.get(task['status'], '')}]{task['status']}[/]"
        + (f"  ({task['failure_reason']})" if task.get("failure_reason") else ""),
    )
    table.add_row("instruction", task["instruction"])
    table.add_row(
        "steps", ", ".join(f"{k} {kinds.get(k, 0)}" for k in order) + f"  (total {sum(kinds.values())})"
    )
    table.add_row("emotion", mood_of(task))
    if emotions is not None:
        table.add_row("trajectory", trajectory_text(emotions))
    tests = {True: "[green]pass[/]", False: "[red]fail[/]", None: "not run"}[task.get("test_passed")]
    table.add_row("tests", tests)
    table.add_row("tokens", f"{task['prompt_tokens']} prompt + {task['completion_tokens']} completion")
    if task.get("summary"):
        table.add_row("summary", task["summary"])
    diff = task.get("diff") or ""
    body: list[Any] = [table]
    if diff:
        body.append(
            Syntax(
                diff if len(diff) < 6000 else diff[:6000] + "\n[... diff cut ...]",
                "diff",
                theme="ansi_dark",
                word_wrap=True,
            )
        )
    else:
        body.append("[dim](no change to the repository)[/]")
    return Panel(Group(*body), title=f"task {task['id']}", expand=True)


def steps_table(steps: list[dict[str, Any]]) -> Table:
    table = Table("seq", "turn", "kind", "tool", "content", "ms", "temp", "mood")
    for s in steps:
        emotion = s.get("emotion") or {}
        mood = (emotion.get("after") or emotion).get("mood", "") if emotion else ""
        temp = (s.get("sampling") or {}).get("temperature")
        content = (s.get("content") or "").replace("\n", " ")
        table.add_row(
            str(s["seq"]),
            str(s["turn"]),
            s["kind"],
            s.get("tool_name") or "",
            content[:90] + ("…" if len(content) > 90 else ""),
            f"{s['duration_ms']:.0f}" if s.get("duration_ms") is not None else "",
            f"{temp:.2f}" if temp is not None else "",
            mood,
        )
    return table


def _seconds(task: dict[str, Any]) -> str:
    from datetime import datetime

    if not task.get("started_at") or not task.get("finished_at"):
        return "-"
    spent = datetime.fromisoformat(task["finished_at"]) - datetime.fromisoformat(task["started_at"])
    return f"{spent.total_seconds():.1f} s"


def summary_table(tasks: list[dict[str, Any]]) -> Table:
    """One row per task once a batch is done: outcome, turns, mood, tests, tokens, time."""
    table = Table("task", "status", "turns", "mood", "tests", "tokens", "time", "summary", title="summary")
    for t in tasks:
        tests = {True: "[green]pass[/]", False: "[red]fail[/]", None: "-"}[t.get("test_passed")]
        table.add_row(
            str(t["id"]),
            f"[{STATUS_STYLE.get(t['status'], '')}]{t['status']}[/]",
            str((t.get("steps_by_kind") or {}).get("emotion", 0)),
            mood_of(t),
            tests,
            str(t["prompt_tokens"] + t["completion_tokens"]),
            _seconds(t),
            (t.get("summary") or t.get("failure_reason") or "")[:80],
        )
    ok = sum(t["status"] == "succeeded" for t in tasks)
    table.caption = f"{ok}/{len(tasks)} succeeded"
    return table
