"""The REST API over the real database: validation, all-or-nothing batches, 404s, paging, cancel, health."""

from __future__ import annotations

from helpers import SAMPLES
from sqlalchemy import func, select

from models import Batch, Task, TaskStatus, session_scope

GOOD = {"repo": str(SAMPLES / "calc"), "instruction": "Fix it", "test_command": "python -m pytest -q"}


def counts(db_url: str) -> tuple[int, int]:
    with session_scope(db_url) as s:
        return s.scalar(select(func.count()).select_from(Batch)), s.scalar(
            select(func.count()).select_from(Task)
        )


def test_batch_is_created_with_ids_and_enqueued(api, db_url):
    sent: list[int] = []
    api.app.state.enqueue = sent.append
    response = api.post(
        "/v1/batches", json={"tasks": [GOOD, GOOD | {"ref": "main", "budget": {"max_steps": 3}}]}
    )
    assert response.status_code == 201
    body = response.json()
    ids = [t["id"] for t in body["tasks"]]
    assert sent == ids
    assert all(t["status"] == "queued" and t["batch_id"] == body["id"] for t in body["tasks"])
    batch = api.get(f"/v1/batches/{body['id']}").json()
    assert [t["id"] for t in batch["tasks"]] == ids
    assert batch["counts"] == {"queued": 2}
    second = api.get(f"/v1/tasks/{ids[1]}").json()
    assert second["budget"]["max_steps"] == 3 and second["budget"]["max_tokens"] > 0  # defaults merged
    assert second["ref"] == "main"


def test_one_bad_task_rejects_the_whole_batch(api, db_url):
    sent: list[int] = []
    api.app.state.enqueue = sent.append
    before = counts(db_url)
    bad = GOOD | {"repo": "relative/path"}
    response = api.post("/v1/batches", json={"tasks": [GOOD, bad, GOOD]})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("tasks[1].repo:")
    assert counts(db_url) == before and sent == []


def test_validation_names_the_field(api):
    api.app.state.enqueue = lambda task_id: None
    cases = [
        ({"tasks": []}, "tasks"),
        ({"tasks": [GOOD | {"instruction": ""}]}, "tasks[0].instruction"),
        ({"tasks": [GOOD | {"budget": {"max_steps": 0}}]}, "tasks[0].budget.max_steps"),
        ({"tasks": [GOOD | {"budget": {"max_stepz": 3}}]}, "tasks[0].budget.max_stepz"),
        ({"tasks": [GOOD | {"ref": "--upload-pack=evil"}]}, "tasks[0].ref"),
        ({"tasks": [{"instruction": "x"}]}, "tasks[0].repo"),
        ({"task": [GOOD]}, "tasks"),
    ]
    for body, field in cases:
        response = api.post("/v1/batches", json=body)
        assert response.status_code == 422, body
        fields = [e["field"] for e in response.json()["errors"]]
        assert field in fields, (body, fields)
    assert (
        api.post("/v1/batches", content=b"not json", headers={"content-type": "application/json"}).status_code
        == 422
    )


def test_local_repos_are_refused_where_the_config_does_not_allow_them(api, db_url, monkeypatch):
    """tools.allow_local_repos false (docker-compose, Kubernetes): a path or file:// repo is a 422 that
    names the setting, and nothing of the batch is written; a git URL is still accepted."""
    from configs import get_settings

    sent: list[int] = []
    api.app.state.enqueue = sent.append
    remote = GOOD | {"repo": "https://github.com/acme/calc.git"}
    monkeypatch.setenv("ELPIS_TOOLS__ALLOW_LOCAL_REPOS", "false")
    get_settings.cache_clear()
    try:
        before = counts(db_url)
        for local in (str(SAMPLES / "calc"), (SAMPLES / "calc").as_uri()):
            response = api.post("/v1/batches", json={"tasks": [remote, GOOD | {"repo": local}]})
            assert response.status_code == 422, response.text
            detail = response.json()["detail"]
            assert detail.startswith("tasks[1].repo:") and "tools.allow_local_repos" in detail
            assert counts(db_url) == before and sent == []
        assert api.post("/v1/batches", json={"tasks": [remote]}).status_code == 201
    finally:
        monkeypatch.undo()
        get_settings.cache_clear()
    # The embedded stack's default: local repositories are allowed.
    assert api.post("/v1/batches", json={"tasks": [GOOD]}).status_code == 201


def test_unknown_ids_are_404_with_a_message(api):
    for path in (
        "/v1/tasks/999999",
        "/v1/tasks/999999/steps",
        "/v1/tasks/999999/emotions",
        "/v1/batches/999999",
    ):
        response = api.get(path)
        assert response.status_code == 404
        assert "999999 not found" in response.json()["detail"]
    assert api.post("/v1/tasks/999999/cancel").status_code == 404


def test_list_tasks_filters_and_pages(api):
    api.app.state.enqueue = lambda task_id: None
    batch = api.post("/v1/batches", json={"tasks": [GOOD] * 5}).json()
    page = api.get("/v1/tasks", params={"batch_id": batch["id"], "limit": 2, "offset": 1}).json()
    assert page["total"] == 5 and len(page["items"]) == 2
    all_ids = [t["id"] for t in batch["tasks"]]
    assert [t["id"] for t in page["items"]] == sorted(all_ids, reverse=True)[1:3]
    api.post(f"/v1/tasks/{all_ids[0]}/cancel")
    cancelled = api.get("/v1/tasks", params={"batch_id": batch["id"], "status": "cancelled"}).json()
    assert [t["id"] for t in cancelled["items"]] == [all_ids[0]]
    assert api.get("/v1/tasks", params={"status": "sleeping"}).status_code == 422
    assert api.get("/v1/tasks", params={"limit": 0}).status_code == 422


def test_cancel_queued_then_finished(api, db_url):
    api.app.state.enqueue = lambda task_id: None
    task_id = api.post("/v1/batches", json={"tasks": [GOOD]}).json()["tasks"][0]["id"]
    response = api.post(f"/v1/tasks/{task_id}/cancel")
    assert response.status_code == 202 and response.json()["status"] == "cancelled"
    again = api.post(f"/v1/tasks/{task_id}/cancel")
    assert again.status_code == 409 and "already cancelled" in again.json()["detail"]
    with session_scope(db_url) as s:
        assert s.get(Task, task_id).status == TaskStatus.cancelled


def test_steps_paging_after_seq(api, db_url):
    from models import Step, StepKind

    api.app.state.enqueue = lambda task_id: None
    task_id = api.post("/v1/batches", json={"tasks": [GOOD]}).json()["tasks"][0]["id"]
    with session_scope(db_url) as s:
        for seq in range(7):
            s.add(
                Step(
                    task_id=task_id,
                    seq=seq,
                    turn=1 + seq // 5,
                    kind=list(StepKind)[seq % 5],
                    content=str(seq),
                )
            )
    first = api.get(f"/v1/tasks/{task_id}/steps", params={"limit": 3}).json()
    assert [s["seq"] for s in first["items"]] == [0, 1, 2] and first["next_after"] == 2
    rest = api.get(f"/v1/tasks/{task_id}/steps", params={"after": 2}).json()
    assert [s["seq"] for s in rest["items"]] == [3, 4, 5, 6]
    assert api.get(f"/v1/tasks/{task_id}").json()["steps_by_kind"]["think"] == 2


def test_broker_down_keeps_the_task_queued_for_the_reconciler(api, db_url):
    """No silent loss and no error: the rows are committed, and the reconciler sends what the broker
    refused once it is back (tests/system/test_reconcile.py)."""

    def broken(task_id: int) -> None:
        raise ConnectionError("broker gone")

    api.app.state.enqueue = broken
    response = api.post("/v1/batches", json={"tasks": [GOOD]})
    assert response.status_code == 201, response.text
    [task] = response.json()["tasks"]
    assert task["status"] == "queued"
    batch = api.get(f"/v1/batches/{response.json()['id']}").json()
    assert batch["tasks"][0]["status"] == "queued" and batch["tasks"][0]["failure_reason"] is None


def test_healthz_checks_database_and_broker(api):
    api.app.state.ping_workers = lambda: ["elpis@host"]  # the real ping: tests/system/test_observability.py
    response = api.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "database": "ok",
        "broker": "ok",
        "workers": "ok",
        "worker_names": ["elpis@host"],
    }

    def down() -> None:
        raise ConnectionRefusedError("no broker")

    api.app.state.ping_broker = down
    response = api.get("/healthz")
    assert response.status_code == 503
    assert response.json()["database"] == "ok" and response.json()["broker"].startswith("unreachable")
