"""The `elpis` command."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from configs import ConfigError, get_settings

app = typer.Typer(
    help="Elpis: a self-hosted coding agent with an emotional state.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

SAMPLE_BATCH = Path(__file__).resolve().parents[1] / "samples" / "batch.yaml"


def _fail(message: str) -> None:
    """CLI errors are one line on stderr and a non-zero exit, never a traceback."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(1)


def _settings():
    try:
        return get_settings()
    except ConfigError as exc:
        _fail(f"config: {exc}")


@app.callback()
def main(ctx: typer.Context) -> None:
    if ctx.invoked_subcommand != "doctor":  # doctor reports a bad config as one of its checks
        _settings()


@app.command()
def up(
    sample: Annotated[
        bool, typer.Option("--sample/--no-sample", help="submit the bundled sample batch")
    ] = True,
    batch_file: Annotated[Path | None, typer.Option("--batch", help="submit this batch file instead")] = None,
    exit_after: Annotated[
        bool, typer.Option("--exit-after-batch", help="stop once the batch is done")
    ] = False,
) -> None:
    """Start the stack (embedded Postgres+pgvector and valkey unless URLs are set), migrate, start worker,
    beat, API and Flower, work the sample batch with live progress, and serve until Ctrl-C."""
    from elpis_api.client import ClientError, ElpisClient, load_batch_file
    from elpis_api.console import console, summary_table, task_summary, watch_tasks
    from elpis_api.migrate import upgrade
    from elpis_api.stack import StackError
    from elpis_api.supervisor import Supervisor, install_signal_handlers

    settings = _settings()
    install_signal_handlers()
    sup = Supervisor(settings)
    t0 = time.monotonic()
    try:
        with console.status("starting database and broker…"):
            sup.start_services()
        where = "embedded" if sup.embedded_postgres else "configured"
        console.print(
            f"[green]✓[/] database ({where}) and broker "
            f"({'embedded valkey' if sup.broker else 'configured'}) in {time.monotonic() - t0:.1f} s"
        )
        with console.status("applying migrations…"):
            upgrade(sup.database_url)
        console.print("[green]✓[/] migrations applied")
        since = sup.database_now()
        sup.start_processes()
        with console.status("starting API…"):
            sup.wait_for_api()
        console.print(f"[green]✓[/] API      http://{settings.api_host}:{settings.api_port}  (docs at /docs)")
        console.print(f"[green]✓[/] Flower   http://127.0.0.1:{settings.flower_port}")
        with console.status(f"worker: loading the model in {settings.worker.concurrency} process(es)…"):
            sup.wait_for_worker(since)
        console.print(
            f"[green]✓[/] worker   {settings.worker.concurrency} process(es), model resident; "
            f"stack up in {time.monotonic() - t0:.1f} s. Logs: {sup.logs}"
        )
        path = batch_file or (SAMPLE_BATCH if sample else None)
        if path is not None:
            client = ElpisClient()
            created = client.submit(load_batch_file(path))
            ids = [t["id"] for t in created["tasks"]]
            console.print(f"submitted batch {created['id']} ({len(ids)} tasks) from {path}")
            console.print(f"  live page: {client.http.base_url.join('/batches/' + str(created['id']))}")
            started = time.monotonic()
            results = watch_tasks(client, ids)
            for task in results:
                console.print(task_summary(task, client.emotions(task["id"])))
            console.print(summary_table(results))
            ok = sum(t["status"] == "succeeded" for t in results)
            console.print(
                f"batch {created['id']}: {ok}/{len(results)} succeeded in {time.monotonic() - started:.1f} s"
            )
        if exit_after:
            return
        console.print("[bold]serving[/] — Ctrl-C stops every process started here")
        while True:
            sup.check_children()
            time.sleep(1)
    except KeyboardInterrupt:
        console.print("stopping…")
    except (StackError, ClientError, ConfigError) as exc:
        sup.stop()
        _fail(str(exc))
    finally:
        sup.stop()
    console.print("stopped")


@app.command()
def migrate(revision: str = "head") -> None:
    """Apply the Alembic migrations (starts the embedded database if no ELPIS_DATABASE_URL)."""
    from elpis_api.migrate import upgrade
    from elpis_api.stack import StackError, resolve_database_url

    try:
        upgrade(resolve_database_url(), revision)
    except StackError as exc:
        _fail(str(exc))
    typer.echo(f"database at {revision}")


def _celery(args: list[str]) -> None:
    from elpis_api.stack import StackError

    try:
        from elpis_worker.celery_app import app as celery
    except StackError as exc:
        _fail(str(exc))
    celery.start(argv=args)


@app.command()
def worker(
    concurrency: Annotated[int | None, typer.Option("-c", "--concurrency")] = None,
    loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "INFO",
) -> None:
    """Run a Celery worker (one resident model per process) against the configured database and broker."""
    s = _settings()
    _celery(
        [
            "worker",
            "-n",
            "elpis@%h",
            "-Q",
            f"{s.worker.queue},maintenance",
            "--pool",
            "prefork",
            "-c",
            str(concurrency or s.worker.concurrency),
            "-l",
            loglevel,
            "-E",
        ]
    )


@app.command()
def beat(loglevel: Annotated[str, typer.Option("-l", "--loglevel")] = "INFO") -> None:
    """Run Celery beat: memory consolidation and recovery of tasks whose worker died."""
    s = _settings()
    (s.home_dir / "run").mkdir(parents=True, exist_ok=True)
    _celery(["beat", "-l", loglevel, "-s", str(s.home_dir / "run" / "celerybeat-schedule")])


@app.command()
def api(host: str | None = None, port: int | None = None) -> None:
    """Serve the REST API with uvicorn."""
    import uvicorn

    s = _settings()
    uvicorn.run("elpis_api.app:app", host=host or s.api_host, port=port or s.api_port)


@app.command()
def flower(port: int | None = None, address: str = "127.0.0.1") -> None:
    """Run Flower, the Celery monitor."""
    s = _settings()
    (s.home_dir / "run").mkdir(parents=True, exist_ok=True)
    _celery(
        [
            "flower",
            f"--port={port or s.flower_port}",
            f"--address={address}",
            "--persistent=True",
            f"--db={s.home_dir / 'run' / 'flower.db'}",
        ]
    )


@app.command()
def submit(
    batch_file: Annotated[Path | None, typer.Argument(help="JSON or YAML batch file")] = None,
    repo: Annotated[str | None, typer.Option(help="git URL or local path")] = None,
    instruction: Annotated[str | None, typer.Option()] = None,
    ref: Annotated[str | None, typer.Option()] = None,
    test_command: Annotated[str | None, typer.Option()] = None,
    max_steps: Annotated[int | None, typer.Option()] = None,
    watch: Annotated[bool, typer.Option("--watch", help="follow progress until done")] = False,
) -> None:
    """Submit a batch file, or one task given by --repo and --instruction."""
    from elpis_api.client import ClientError, ElpisClient, absolutize_repo, load_batch_file
    from elpis_api.console import console, task_summary, watch_tasks

    try:
        if batch_file is not None:
            batch = load_batch_file(batch_file)
        elif repo and instruction:
            task = {
                "repo": absolutize_repo(repo, Path.cwd()),
                "ref": ref,
                "instruction": instruction,
                "test_command": test_command,
            }
            if max_steps:
                task["budget"] = {"max_steps": max_steps}
            batch = {"tasks": [task]}
        else:
            _fail("give a batch file, or both --repo and --instruction")
        client = ElpisClient()
        created = client.submit(batch)
        typer.echo(json.dumps(created))
        if watch:
            for task in watch_tasks(client, [t["id"] for t in created["tasks"]]):
                console.print(task_summary(task, client.emotions(task["id"])))
    except ClientError as exc:
        _fail(str(exc))


@app.command()
def status(task_id: Annotated[int | None, typer.Argument()] = None, limit: int = 20) -> None:
    """Recent tasks, or one task's summary (status, steps by kind, emotion, diff)."""
    from rich.table import Table

    from elpis_api.client import ClientError, ElpisClient
    from elpis_api.console import STATUS_STYLE, console, mood_of, task_summary

    try:
        client = ElpisClient()
        if task_id is not None:
            console.print(task_summary(client.task(task_id), client.emotions(task_id)))
            return
        table = Table("id", "batch", "status", "mood", "instruction")
        for t in client.tasks(limit=limit)["items"]:
            table.add_row(
                str(t["id"]),
                str(t["batch_id"]),
                f"[{STATUS_STYLE.get(t['status'], '')}]{t['status']}[/]",
                mood_of(t),
                t["instruction"][:70],
            )
        console.print(table)
    except ClientError as exc:
        _fail(str(exc))


@app.command()
def steps(task_id: int, follow: Annotated[bool, typer.Option("--follow", "-f")] = False) -> None:
    """A task's steps in order; --follow keeps printing new ones until the task ends."""
    from elpis_api.client import ClientError, ElpisClient
    from elpis_api.console import FINISHED, console, steps_table

    try:
        client = ElpisClient()
        after = -1
        while True:
            new = client.steps(task_id, after=after)
            if new:
                console.print(steps_table(new))
                after = new[-1]["seq"]
            if not follow or client.task(task_id)["status"] in FINISHED:
                if follow:
                    rest = client.steps(task_id, after=after)
                    if rest:
                        console.print(steps_table(rest))
                return
            time.sleep(1)
    except ClientError as exc:
        _fail(str(exc))


@app.command()
def plot(
    task_id: int,
    output: Annotated[Path, typer.Option("-o", "--output", help="a .png or .svg file")] = Path(
        "emotions.png"
    ),
) -> None:
    """Draw a task's emotion trajectory (valence, arousal, dominance, mood, temperature) to a chart."""
    from elpis_api.client import ClientError, ElpisClient
    from elpis_api.plot import plot_trajectory

    if output.suffix.lower() not in {".png", ".svg", ".pdf"}:
        _fail(f"--output must end in .png, .svg or .pdf, not '{output.suffix or output.name}'")
    try:
        client = ElpisClient()
        items = client.emotions(task_id)
        plot_trajectory(client.task(task_id), items, output)
    except (ClientError, ValueError) as exc:
        _fail(str(exc))
    typer.echo(f"wrote {output}")


@app.command()
def cancel(task_id: int) -> None:
    """Cancel a task (a running one stops before its next step)."""
    from elpis_api.client import ClientError, ElpisClient

    try:
        typer.echo(json.dumps(ElpisClient().cancel(task_id)["status"]))
    except ClientError as exc:
        _fail(str(exc))


@app.command()
def watch(
    batch_id: int,
    poll: Annotated[float, typer.Option(help="seconds between updates")] = 1.0,
) -> None:
    """Follow a batch: a progress bar per task (turns, status, mood) until all are done, then a summary."""
    from elpis_api.client import ClientError, ElpisClient
    from elpis_api.console import console, summary_table, watch_tasks

    try:
        client = ElpisClient()
        ids = [t["id"] for t in client.batch(batch_id)["tasks"]]
        page = client.http.base_url.join(f"/batches/{batch_id}")
        console.print(f"batch {batch_id}: {len(ids)} tasks; live page {page}")
        console.print(summary_table(watch_tasks(client, ids, poll=poll)))
    except ClientError as exc:
        _fail(str(exc))


@app.command()
def doctor() -> None:
    """Check this setup: config, model file, database, pgvector, migrations, broker, a worker; say how to
    fix what is wrong (exit 1 if anything is)."""
    from elpis_api.doctor import run_checks

    checks = run_checks()
    for check in checks:
        color = {True: typer.colors.GREEN, False: typer.colors.RED, None: None}[check.ok]
        typer.secho(check.line(), fg=color)
    failed = [c.name for c in checks if c.ok is False]
    if failed:
        typer.secho(f"{len(failed)} problem(s): {', '.join(failed)}", fg=typer.colors.RED, err=True)
        raise typer.Exit(1)
    typer.secho("everything looks right", fg=typer.colors.GREEN)


@app.command()
def consolidate() -> None:
    """Consolidate memories now (what beat runs every memory.consolidation_interval): finished tasks
    become long-term memories, near-duplicates merge, faded memories are forgotten. Prints the report."""
    from elpis_api.stack import StackError, resolve_database_url
    from elpis_worker.embedding import EmbeddingLoadError, EmbeddingMismatchError
    from elpis_worker.memory import consolidate_memories

    try:
        report = consolidate_memories(resolve_database_url())
    except (StackError, EmbeddingLoadError, EmbeddingMismatchError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(report.as_dict()))
    if not report.ran:
        typer.echo("skipped: another consolidation is running and will do the pending tasks", err=True)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
