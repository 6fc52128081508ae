"""Long-term memory: what the agent keeps across tasks, in Postgres with pgvector.

- Short-term memory is a task's own persisted steps (observations = tool_result steps, reflections =
  reflect steps): the loop writes nothing extra, and consolidation reads them once the task is over.
- Consolidation turns each finished task into long-term memories, extracted deterministically from
  its steps: one episodic memory (what was asked, what was tried, how it ended and how it felt),
  a procedural one for a success (the steps that worked, the files they changed), and semantic facts
  about the repository (its test command, its layout). A new memory close to an existing one of the
  same kind, repository and outcome is merged into it (importance raised, lineage extended) instead
  of stored again. Memories retrieved often are strengthened; unused, unimportant ones decay with
  time and are forgotten, unless they were emotionally intense.
- Retrieval ranks memories by similarity to the task, recency, importance and emotional salience,
  and fills a token budget, most valuable first.

Consolidation is safe to run twice at once (each transaction first takes a Postgres advisory lock,
`pg_try_advisory_xact_lock`, and gives up when another run holds it), idempotent (a task is marked
consolidated in the same transaction as its memories; reinforcement records what it already counted;
forgetting depends only on the stored rows and the clock) and crash-safe (one transaction per task).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath
from typing import Any, Protocol

import numpy as np
from sqlalchemy import and_, delete, func, literal, or_, select, text, update
from sqlalchemy.orm import Session

from configs.settings import MemorySettings
from elpis_worker.embedding import EmbeddingMismatchError
from elpis_worker.metrics import observe_memories_written
from elpis_worker.turns import group_turns
from models import Step, StepKind, Task, TaskStatus, session_scope
from models.memory import ConsolidatedTask, EmbeddingModel, Memory, MemoryKind
from models.records import Affect, MemoryDetail, RecalledMemory, ToolResultDetail

log = logging.getLogger(__name__)

# Advisory-lock key of consolidation (any constant shared by every Elpis process; b"elpismem").
CONSOLIDATION_LOCK = int.from_bytes(b"elpismem", "big") & 0x7FFF_FFFF_FFFF_FFFF
# Importance added to a memory each time a near-duplicate is merged into it, and per retrieval
# folded in by consolidation.
MERGE_BOOST = 0.1
REINFORCE_STEP = 0.05
# Candidates fetched from the vector index before re-ranking by the combined score.
CANDIDATE_FACTOR = 8
MIN_CANDIDATES = 40
SECONDS_PER_DAY = 86_400.0
FINISHED = (TaskStatus.succeeded, TaskStatus.failed, TaskStatus.cancelled)
RENDER_HEADER = "Memories from earlier tasks (most useful first):"
# Tool steps listed in an episode; longer runs are cut in the middle.
MAX_EPISODE_STEPS = 12


class Embedder(Protocol):
    name: str
    dimension: int

    def embed(self, texts: list[str], batch_size: int = 8) -> np.ndarray: ...


def _settings() -> MemorySettings:
    from configs import get_settings

    return get_settings().memory


def _embedder(embedder: Embedder | None, cfg: MemorySettings) -> Embedder:
    if embedder is not None:
        return embedder
    from elpis_worker.embedding import get_embedder

    return get_embedder(cfg)


# --- the model guard ------------------------------------------------------------------------------

_checked: set[tuple[str, str, int]] = set()


def check_embedding_model(database_url: str, embedder: Embedder) -> None:
    """Refuse to embed when the database's vectors come from another model or have another width:
    mixing them would silently make every similarity meaningless."""
    key = (database_url, embedder.name, embedder.dimension)
    if key in _checked:
        return
    with session_scope(database_url) as s:
        row = s.get(EmbeddingModel, 1)
        column = s.scalar(
            text(
                "SELECT atttypmod FROM pg_attribute "
                "WHERE attrelid = 'memory'::regclass AND attname = 'embedding'"
            )
        )
    if row is None:
        raise EmbeddingMismatchError(
            "the database has no embedding_model row: run `elpis migrate` to create the memory tables"
        )
    if row.name != embedder.name or row.dimension != embedder.dimension or column != embedder.dimension:
        raise EmbeddingMismatchError(
            f"the memories in this database are embedded with {row.name} ({row.dimension} dimensions, "
            f"column vector({column})), but this process loads {embedder.name} ({embedder.dimension} "
            "dimensions). Vectors of two models cannot be compared: either set memory.embedding_model "
            "and memory.embedding_path back, or write an Alembic migration that changes "
            f"memory.embedding to vector({embedder.dimension}), re-embeds or deletes the memories and "
            "updates the embedding_model row"
        )
    _checked.add(key)


# --- scoring --------------------------------------------------------------------------------------


def salience(valence: float, arousal: float) -> float:
    """Emotional intensity in [0, 1]: how strongly the memory was felt, pleasant or not."""
    return min(1.0, max(abs(valence), abs(arousal)))


def _age_days(row_updated: datetime | None, row_accessed: datetime | None, now: datetime) -> float:
    moments = [m for m in (row_updated, row_accessed) if m is not None]
    if not moments:
        return 0.0
    return max(0.0, (now - max(moments)).total_seconds() / SECONDS_PER_DAY)


def recency(age_days: float, half_life_days: float) -> float:
    return 0.5 ** (age_days / half_life_days)


def strength(memory: Memory, now: datetime, cfg: MemorySettings) -> float:
    """Importance decayed by the time since the memory was last formed, merged or retrieved."""
    age = _age_days(memory.updated_at, memory.last_accessed_at, now)
    return memory.importance * recency(age, cfg.half_life_days)


def combined_score(memory: Memory, similarity: float, now: datetime, cfg: MemorySettings) -> float:
    w = cfg.weights
    age = _age_days(memory.updated_at, memory.last_accessed_at, now)
    return (
        w.similarity * similarity
        + w.recency * recency(age, cfg.half_life_days)
        + w.importance * min(1.0, memory.importance)
        + w.salience * salience(memory.valence, memory.arousal)
    )


# --- retrieval ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetrievedMemory:
    id: int
    kind: str
    content: str
    score: float
    similarity: float
    valence: float
    arousal: float
    outcome: str | None  # "success" / "failure" / None


def _render_line(memory: RetrievedMemory) -> str:
    tag = {"success": ", worked", "failure": ", failed"}.get(memory.outcome or "", "")
    return f"- [{memory.kind}{tag}] {memory.content}"


def render_memories(memories: Sequence[RetrievedMemory]) -> str:
    """The block placed in the prompt; empty when nothing was recalled."""
    if not memories:
        return ""
    return "\n".join([RENDER_HEADER, *(_render_line(m) for m in memories)])


def retrieval_detail(memories: Sequence[RetrievedMemory]) -> MemoryDetail:
    """What a `memory` step's detail should hold, so a reader sees what was recalled and why."""
    return MemoryDetail(
        memories=[
            RecalledMemory(
                id=m.id,
                kind=m.kind,
                outcome=m.outcome,
                score=round(m.score, 4),
                similarity=round(m.similarity, 4),
            )
            for m in memories
        ],
        memory_signal=round(memory_signal(memories), 4),
    )


def memory_signal(memories: Sequence[RetrievedMemory]) -> float:
    """In [-1, 1]: positive when similar past successes dominate what was recalled, negative when
    failures do; facts without an outcome dilute it. Feeds the emotion model's Observation."""
    total = signed = 0.0
    for m in memories:
        weight = max(0.0, m.similarity)
        total += weight
        signed += weight * {"success": 1.0, "failure": -1.0}.get(m.outcome or "", 0.0)
    return 0.0 if total == 0.0 else max(-1.0, min(1.0, signed / total))


def _candidates(
    s: Session,
    query_vector: np.ndarray,
    limit: int,
    *,
    repo: str | None = None,
    kind: MemoryKind | None = None,
    other_repos_procedural: bool = False,
) -> list[tuple[Memory, float]]:
    """Nearest memories by cosine through the HNSW index. Iterative index scans (pgvector 0.8) keep a
    filtered query from coming back short when the filter removes most of the first candidates."""
    s.execute(text("SET LOCAL hnsw.iterative_scan = relaxed_order"))
    s.execute(text(f"SET LOCAL hnsw.ef_search = {max(40, min(1000, limit))}"))
    distance = Memory.embedding.cosine_distance(query_vector.tolist())
    query = select(Memory, distance.label("distance"))
    if repo is not None:
        same = Memory.repo == repo
        query = query.where(
            or_(same, Memory.kind == MemoryKind.procedural) if other_repos_procedural else same
        )
    if kind is not None:
        query = query.where(Memory.kind == kind)
    rows = s.execute(query.order_by(distance).limit(limit)).all()
    return [(row.Memory, 1.0 - float(row.distance)) for row in rows]


def rank(
    s: Session,
    query_vector: np.ndarray,
    cfg: MemorySettings,
    *,
    limit: int,
    repo: str | None = None,
    kind: MemoryKind | None = None,
    min_similarity: float | None = None,
    other_repos_procedural: bool = False,
    now: datetime | None = None,
) -> list[tuple[Memory, float, float]]:
    """(memory, combined score, similarity), best first."""
    now = now or datetime.now(UTC)
    pool = _candidates(
        s,
        query_vector,
        max(MIN_CANDIDATES, limit * CANDIDATE_FACTOR),
        repo=repo,
        kind=kind,
        other_repos_procedural=other_repos_procedural,
    )
    scored = [
        (memory, combined_score(memory, sim, now, cfg), sim)
        for memory, sim in pool
        if min_similarity is None or sim >= min_similarity
    ]
    scored.sort(key=lambda item: (-item[1], item[0].id))
    return scored


def retrieve_for_task(
    database_url: str,
    *,
    repo: str,
    query: str,
    token_budget: int,
    count_tokens: Callable[[str], int],
    limit: int | None = None,
    embedder: Embedder | None = None,
    settings: MemorySettings | None = None,
) -> list[RetrievedMemory]:
    """The memories for a task: those of its repository (and ways of fixing things learned on any
    repository), ranked by the combined score, as many as fit `token_budget` (counted on the rendered
    block) up to `limit` (default memory.top_k). Each one returned counts as an access."""
    cfg = settings or _settings()
    limit = cfg.top_k if limit is None else limit
    if limit <= 0 or token_budget <= 0 or not query.strip():
        return []
    model = _embedder(embedder, cfg)
    check_embedding_model(database_url, model)
    vector = model.embed([query])[0]
    chosen: list[RetrievedMemory] = []
    with session_scope(database_url) as s:
        ranked = rank(
            s,
            vector,
            cfg,
            limit=limit,
            repo=repo,
            min_similarity=cfg.min_similarity,
            other_repos_procedural=True,
        )
        for memory, score, sim in ranked:
            candidate = RetrievedMemory(
                id=memory.id,
                kind=memory.kind.value,
                content=memory.content,
                score=score,
                similarity=sim,
                valence=memory.valence,
                arousal=memory.arousal,
                outcome=memory.outcome,
            )
            # Counted on the whole block, so the rendered prompt text never exceeds the budget.
            if count_tokens(render_memories([*chosen, candidate])) <= token_budget:
                chosen.append(candidate)
            if len(chosen) >= limit:
                break
        if chosen:
            s.execute(
                update(Memory)
                .where(Memory.id.in_([m.id for m in chosen]))
                .values(access_count=Memory.access_count + 1, last_accessed_at=func.now())
            )
    return chosen


# --- short-term memory ----------------------------------------------------------------------------


@dataclass(frozen=True)
class ShortTermEntry:
    seq: int
    turn: int
    kind: str  # "observation" (a tool result) or "reflection"
    content: str


def short_term_memory(database_url: str, task_id: int, capacity: int | None = None) -> list[ShortTermEntry]:
    """The task's latest observations and reflections (memory.stm_capacity turns), read from its
    steps: the steps are the short-term record, so nothing else has to be written while it runs."""
    capacity = capacity or _settings().stm_capacity
    with session_scope(database_url) as s:
        steps = list(
            s.scalars(
                select(Step)
                .where(Step.task_id == task_id, Step.kind.in_([StepKind.tool_result, StepKind.reflect]))
                .order_by(Step.seq)
            )
        )
    turns = sorted({step.turn for step in steps})[-capacity:]
    keep = set(turns)
    return [
        ShortTermEntry(
            seq=step.seq,
            turn=step.turn,
            kind="observation" if step.kind == StepKind.tool_result else "reflection",
            content=(step.tool_result or step.content) if step.kind == StepKind.tool_result else step.content,
        )
        for step in steps
        if step.turn in keep
    ]


# --- forming memories from a finished task --------------------------------------------------------


@dataclass
class Draft:
    """A memory about to be stored (or merged into a near-duplicate)."""

    kind: MemoryKind
    content: str
    repo: str
    task_id: int
    outcome: str | None
    importance: float
    valence: float
    arousal: float
    seqs: list[int] = field(default_factory=list)


def repo_label(repo: str) -> str:
    name = PurePosixPath(repo.rstrip("/")).name or repo
    return name.removesuffix(".git")


def files_in_diff(diff: str | None) -> list[str]:
    files = re.findall(r"^diff --git a/(\S+) b/", diff or "", flags=re.MULTILINE)
    return list(dict.fromkeys(files))


def _step_label(call: Step, result: Step | None) -> str:
    args = call.tool_args or {}
    name = call.tool_name or "?"
    arg = args.get("path") or args.get("pattern") or args.get("command") or ""
    label = f"{name} {str(arg)[:48]}".strip()
    detail = ToolResultDetail.read(result.detail) if result is not None else None
    if detail is not None and detail.tests_run:
        label += " (passed)" if detail.tests_passed else " (failed)"
    elif detail is not None and not detail.ok:
        label += f" ({detail.error_kind or 'error'})"
    return label


def _succeeded(result: Step) -> bool:
    """A tool result that did not fail (one without a detail counts as done)."""
    detail = ToolResultDetail.read(result.detail)
    return detail is None or detail.ok


def _ran_tests(result: Step) -> bool:
    detail = ToolResultDetail.read(result.detail)
    return detail is not None and detail.tests_run


def _sequence(labels: list[str]) -> str:
    """Tool steps in order, repeats collapsed (`run_tests (failed) x3`), long runs cut in the middle."""
    collapsed: list[str] = []
    for label in labels:
        if collapsed and collapsed[-1].split(" x")[0] == label:
            head, _, count = collapsed[-1].partition(" x")
            collapsed[-1] = f"{head} x{int(count or 1) + 1}"
        else:
            collapsed.append(label)
    if len(collapsed) > MAX_EPISODE_STEPS:
        half = MAX_EPISODE_STEPS // 2
        cut = len(collapsed) - 2 * half
        collapsed = [*collapsed[:half], f"... {cut} more ...", *collapsed[-half:]]
    return " -> ".join(collapsed)


def form_memories(task: Task, steps: Sequence[Step]) -> list[Draft]:
    """What a finished task teaches, extracted from its steps (deterministic: no model call)."""
    calls = [
        (call, t.get(StepKind.tool_result))
        for t in group_turns(list(steps))
        if (call := t.get(StepKind.tool_call)) is not None
    ]
    if not calls and task.status == TaskStatus.cancelled:
        return []  # cancelled before it did anything: nothing was learned
    label = repo_label(task.repo)
    affect = Affect.model_validate(task.emotion) if task.emotion else None
    valence, arousal = (affect.valence, affect.arousal) if affect else (0.0, 0.0)
    felt = salience(valence, arousal)
    outcome = {TaskStatus.succeeded: "success", TaskStatus.failed: "failure"}.get(task.status)
    files = files_in_diff(task.workspace_diff)
    instruction = " ".join(task.instruction.split())[:300]

    verdict = {"success": "Succeeded", "failure": "Failed"}.get(outcome or "", "Cancelled")
    parts = [f'{verdict}: "{instruction}" in {label}.']
    if calls:
        parts.append(f"Tried: {_sequence([_step_label(c, r) for c, r in calls])}.")
    if files:
        parts.append(f"Changed {', '.join(files[:8])}.")
    if task.test_command and task.test_passed is not None:
        parts.append(
            f"Tests (`{task.test_command}`) {'passed' if task.test_passed else 'failed'} at the end."
        )
    if task.summary:
        parts.append(f"Summary: {' '.join(task.summary.split())[:200]}")
    if outcome != "success" and task.failure_reason:
        # Not the failed run's last reflection: that is the belief that did not lead to a fix, and a small
        # model shown it copies it word for word (seen in the eval with Qwen 1.5B).
        parts.append(f"Why: {task.failure_reason[:160]}.")
    if affect is not None:
        parts.append(
            f"Felt {affect.mood or 'neutral'} at the end (valence {valence:+.2f}, arousal {arousal:+.2f})."
        )
    episode_seqs = sorted(
        s.seq for s in steps if s.kind in (StepKind.tool_call, StepKind.tool_result, StepKind.reflect)
    )
    drafts = [
        Draft(
            MemoryKind.episodic,
            " ".join(parts),
            task.repo,
            task.id,
            outcome,
            importance=round(min(1.0, 0.3 + 0.5 * felt + (0.1 if outcome == "failure" else 0.0)), 4),
            valence=valence,
            arousal=arousal,
            seqs=episode_seqs,
        )
    ]

    if outcome == "success" and calls:
        # The steps that did the work: changing files and running the checks that passed.
        useful = [
            (c, r)
            for c, r in calls
            if r is not None
            and _succeeded(r)
            and c.tool_name
            in ("write_file", "edit_file", "run", "python", "run_tests", "read_file", "search")
        ]
        if useful:
            how = _sequence([_step_label(c, r) for c, r in useful])
            text_ = f'To "{instruction[:200]}" in {label}: {how}.'
            if files:
                text_ += f" The fix changed {', '.join(files[:8])}."
            if task.test_command:
                text_ += f" Verify with `{task.test_command}`."
            drafts.append(
                Draft(
                    MemoryKind.procedural,
                    text_,
                    task.repo,
                    task.id,
                    "success",
                    importance=round(min(1.0, 0.5 + 0.3 * felt), 4),
                    valence=valence,
                    arousal=arousal,
                    seqs=sorted({s.seq for c, r in useful for s in (c, r) if s is not None}),
                )
            )

    if task.test_command:
        test_seqs = sorted(r.seq for c, r in calls if r is not None and _ran_tests(r))
        drafts.append(
            Draft(
                MemoryKind.semantic,
                f"In {label}, the tests run with `{task.test_command}`.",
                task.repo,
                task.id,
                None,
                importance=0.4,
                valence=0.0,
                arousal=0.0,
                seqs=test_seqs,
            )
        )
    for call, result in calls:
        path = str((call.tool_args or {}).get("path", ".")).strip().removeprefix("./").rstrip("/")
        listed = result is not None and _succeeded(result) and result.tool_result
        if call.tool_name == "list_dir" and path in ("", ".") and listed:
            entries = [e.strip() for e in result.tool_result.splitlines() if e.strip()][:20]
            drafts.append(
                Draft(
                    MemoryKind.semantic,
                    f"{label} has at its top level: {', '.join(entries)}.",
                    task.repo,
                    task.id,
                    None,
                    importance=0.3,
                    valence=0.0,
                    arousal=0.0,
                    seqs=[call.seq, result.seq],
                )
            )
            break
    return drafts


# --- consolidation --------------------------------------------------------------------------------


@dataclass
class ConsolidationReport:
    ran: bool = True  # False: another consolidation held the lock, nothing was done here
    tasks_consolidated: int = 0
    memories_created: int = 0
    memories_merged: int = 0
    memories_reinforced: int = 0
    memories_forgotten: int = 0
    tasks_pending: int = 0  # finished tasks left for the next run (batch size, or lock lost)
    task_ids: list[int] = field(default_factory=list)
    seconds: float = 0.0
    note: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _LockBusy(Exception):
    pass


def _take_lock(s: Session) -> None:
    if not s.scalar(select(func.pg_try_advisory_xact_lock(CONSOLIDATION_LOCK))):
        raise _LockBusy


def _pending_task_ids(s: Session, limit: int | None) -> list[int]:
    query = (
        select(Task.id)
        .outerjoin(ConsolidatedTask, ConsolidatedTask.task_id == Task.id)
        .where(Task.status.in_(FINISHED), ConsolidatedTask.task_id.is_(None))
        .order_by(Task.id)
    )
    return list(s.scalars(query.limit(limit) if limit else query))


def _nearest_same(s: Session, draft: Draft, vector: np.ndarray) -> tuple[Memory, float] | None:
    """The closest memory of the same kind, repository and outcome (exact order, strict iterative
    scan: a near-duplicate must not be missed because the index's first candidates were filtered)."""
    s.execute(text("SET LOCAL hnsw.iterative_scan = strict_order"))
    distance = Memory.embedding.cosine_distance(vector.tolist())
    same_outcome = Memory.outcome.is_(None) if draft.outcome is None else Memory.outcome == draft.outcome
    row = s.execute(
        select(Memory, distance.label("distance"))
        .where(Memory.kind == draft.kind, Memory.repo == draft.repo, same_outcome)
        .order_by(distance)
        .limit(1)
        .with_for_update(of=Memory)
    ).first()
    return None if row is None else (row.Memory, 1.0 - float(row.distance))


def _extend_lineage(lineage: dict[str, Any] | None, task_id: int, seqs: Iterable[int]) -> dict[str, Any]:
    out = {"tasks": [], "memories": [], "steps": {}} | dict(lineage or {})
    out["tasks"] = sorted(set(out["tasks"]) | {task_id})
    steps = dict(out["steps"])
    steps[str(task_id)] = sorted(set(steps.get(str(task_id), [])) | set(seqs))
    out["steps"] = steps
    return out


def store_draft(s: Session, draft: Draft, vector: np.ndarray, threshold: float) -> tuple[int, bool]:
    """Insert the draft, or merge it into a near-duplicate. Returns (memory id, merged?)."""
    near = _nearest_same(s, draft, vector)
    if near is not None and near[1] >= threshold:
        memory = near[0]
        memory.importance = round(min(1.0, max(memory.importance, draft.importance) + MERGE_BOOST), 4)
        memory.lineage = _extend_lineage(memory.lineage, draft.task_id, draft.seqs)
        # Emotionally intense episodes are kept preferentially: the stronger affect wins.
        if salience(draft.valence, draft.arousal) > salience(memory.valence, memory.arousal):
            memory.valence, memory.arousal = draft.valence, draft.arousal
        memory.updated_at = func.now()
        s.flush()
        return memory.id, True
    memory = Memory(
        kind=draft.kind,
        content=draft.content,
        embedding=vector.tolist(),
        repo=draft.repo,
        task_id=draft.task_id,
        outcome=draft.outcome,
        importance=draft.importance,
        valence=draft.valence,
        arousal=draft.arousal,
        lineage=_extend_lineage(None, draft.task_id, draft.seqs),
    )
    s.add(memory)
    s.flush()
    return memory.id, False


def _load_finished(database_url: str, task_id: int) -> tuple[Task, list[Step]] | None:
    with session_scope(database_url) as s:
        task = s.get(Task, task_id)
        if task is None or task.status not in FINISHED:
            return None
        steps = list(s.scalars(select(Step).where(Step.task_id == task_id).order_by(Step.seq)))
        s.expunge_all()
        return task, steps


def _consolidate_task(
    database_url: str, task_id: int, model: Embedder, cfg: MemorySettings, report: ConsolidationReport
) -> None:
    loaded = _load_finished(database_url, task_id)
    if loaded is None:
        return
    drafts = form_memories(*loaded)
    # Embedded before the transaction opens, so no row lock waits on the model.
    vectors = model.embed([d.content for d in drafts]) if drafts else np.zeros((0, 0))
    with session_scope(database_url) as s:
        _take_lock(s)
        if s.get(ConsolidatedTask, task_id) is not None:
            return  # another run did it between our listing and our lock
        ids: list[int] = []
        created: dict[str, int] = {}
        merged = 0
        for draft, vector in zip(drafts, vectors, strict=True):
            memory_id, was_merged = store_draft(s, draft, vector, cfg.dedup_threshold)
            ids.append(memory_id)
            merged += was_merged
            if not was_merged:
                kind = MemoryKind(draft.kind).value
                created[kind] = created.get(kind, 0) + 1
        s.add(ConsolidatedTask(task_id=task_id, memory_ids=ids))
    for kind, count in created.items():  # committed: now they count
        observe_memories_written(kind, count)
    report.tasks_consolidated += 1
    report.memories_created += sum(created.values())
    report.memories_merged += merged
    report.task_ids.append(task_id)


def _reinforce_and_forget(database_url: str, cfg: MemorySettings, report: ConsolidationReport) -> None:
    """Fold new retrievals into importance, then forget what decayed, unless it was used often or
    felt strongly. Both are pure functions of the rows and the clock, so a rerun changes nothing."""
    with session_scope(database_url) as s:
        _take_lock(s)
        reinforced = s.execute(
            update(Memory)
            .where(Memory.access_count > Memory.reinforced_count)
            .values(
                importance=func.least(
                    1.0, Memory.importance + REINFORCE_STEP * (Memory.access_count - Memory.reinforced_count)
                ),
                reinforced_count=Memory.access_count,
            )
        )
        report.memories_reinforced = reinforced.rowcount or 0
        age_days = func.extract(
            "epoch",
            func.now()
            - func.greatest(Memory.updated_at, func.coalesce(Memory.last_accessed_at, Memory.updated_at)),
        ) / literal(SECONDS_PER_DAY)
        decayed = Memory.importance * func.power(0.5, age_days / literal(cfg.half_life_days))
        felt = func.greatest(func.abs(Memory.valence), func.abs(Memory.arousal))
        forgotten = s.execute(
            delete(Memory).where(
                and_(
                    decayed < cfg.forget_below,
                    Memory.access_count < cfg.forget_min_access,
                    felt < cfg.keep_salience,
                )
            )
        )
        report.memories_forgotten = forgotten.rowcount or 0


def consolidate_memories(
    database_url: str,
    *,
    embedder: Embedder | None = None,
    settings: MemorySettings | None = None,
    max_tasks: int | None = None,
) -> ConsolidationReport:
    """Turn finished tasks into long-term memories, strengthen what is used, forget what faded.

    One transaction per task (its memories and its consolidated marker commit together), each
    behind the advisory lock: a concurrent run makes this one stop, and a crash loses at most the
    task in progress, which the next run does again from scratch."""
    started = time.perf_counter()
    cfg = settings or _settings()
    report = ConsolidationReport()
    with session_scope(database_url) as s:
        pending = _pending_task_ids(s, max_tasks or cfg.consolidation_batch)
    model = _embedder(embedder, cfg) if pending else None
    if model is not None:
        check_embedding_model(database_url, model)
    try:
        for task_id in pending:
            _consolidate_task(database_url, task_id, model, cfg, report)
        _reinforce_and_forget(database_url, cfg, report)
    except _LockBusy:
        report.note = "another consolidation holds the lock; it carries on with the pending tasks"
        report.ran = bool(report.task_ids)
    with session_scope(database_url) as s:
        report.tasks_pending = len(_pending_task_ids(s, None))
    report.seconds = round(time.perf_counter() - started, 3)
    log.info("memory consolidation: %s", json.dumps(report.as_dict()))
    return report


def memory_strength(memory: Memory, cfg: MemorySettings | None = None, now: datetime | None = None) -> float:
    """Decayed importance (what forgetting compares with memory.forget_below)."""
    return strength(memory, now or datetime.now(UTC), cfg or _settings())


__all__ = [
    "ConsolidationReport",
    "RetrievedMemory",
    "ShortTermEntry",
    "check_embedding_model",
    "consolidate_memories",
    "form_memories",
    "memory_signal",
    "render_memories",
    "retrieval_detail",
    "retrieve_for_task",
    "short_term_memory",
]
