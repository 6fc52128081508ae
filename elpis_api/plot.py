"""`elpis plot TASK -o FILE`: the task's affect trajectory as a PNG or SVG chart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

MOOD_COLOURS = {
    "frustrated": "#d62728",
    "anxious": "#ff7f0e",
    "bored": "#8c8c8c",
    "tired": "#7f7f7f",
    "neutral": "#bcbd22",
    "calm": "#17becf",
    "satisfied": "#2ca02c",
    "curious": "#1f77b4",
    "confident": "#9467bd",
}


def plot_trajectory(task: dict[str, Any], items: list[dict[str, Any]], out: Path) -> Path:
    """Valence, arousal and dominance per turn, the mood at each turn, the sampling temperature the
    state chose for the next turn, and where the agent replanned."""
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    if not items:
        raise ValueError(f"task {task['id']} has no emotion steps yet")
    turns = [i["turn"] for i in items]
    fig, (ax, ax_t) = plt.subplots(
        2, 1, figsize=(9, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, constrained_layout=True
    )
    for key, style in (("valence", "-o"), ("arousal", "-s"), ("dominance", "-^")):
        ax.plot(turns, [i[key] for i in items], style, label=key, markersize=4)
    ax.axhline(0, color="black", linewidth=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_ylabel("affect")
    for item in items:
        ax.annotate(
            item["mood"],
            (item["turn"], 0.97),
            rotation=90,
            fontsize=7,
            ha="center",
            va="top",
            color=MOOD_COLOURS.get(item["mood"], "black"),
        )
        if item.get("replan_next"):
            ax.axvline(item["turn"] + 0.5, color="#d62728", linestyle="--", linewidth=1)
    if any(i.get("replan_next") for i in items):
        ax.plot([], [], "--", color="#d62728", label="replan")
    ax.legend(loc="lower left", fontsize=8)
    status = task.get("status", "")
    ax.set_title(f"task {task['id']} ({status}): {task.get('instruction', '')[:70]}", fontsize=10)
    ax_t.plot(turns, [i["temperature"] for i in items], "-o", color="#555555", markersize=3)
    ax_t.set_ylabel("temperature\n(next turn)", fontsize=8)
    ax_t.set_xlabel("turn")
    ax_t.set_xticks(turns)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
