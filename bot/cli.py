"""The `dreambot` command: serve, status, cancel, init."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

from bot.config import EXAMPLE, Config, ConfigError, load_config
from bot.jobqueue import JobQueue, JobState, QueueError

log = logging.getLogger("dreambot")


def configure_logging(level: str) -> None:
    """The one place logging is set up. Secrets are never passed to a logger, so none can appear."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


def command_serve(args: argparse.Namespace, config: Config) -> int:
    from bot.app import run_service
    from bot.engine import DreamcoreEngine, NullEngine

    if args.host is not None or args.port is not None:
        web = replace(
            config.web,
            host=args.host if args.host is not None else config.web.host,
            port=args.port if args.port is not None else config.web.port,
        )
        config = replace(config, web=web)
        config.check()
    engine = NullEngine(steps=args.null_steps) if args.engine == "null" else DreamcoreEngine(config.worker.device)

    def ready(url: str | None) -> None:
        where = f"open {url} in a browser" if url else "the web page is off (web.enabled = false)"
        print(f"DreamBot is running: {where}. Ctrl+C stops it.", flush=True)

    try:
        asyncio.run(run_service(config, engine, on_ready=ready))
    except KeyboardInterrupt:
        pass
    except OSError as error:
        if error.errno in (98, 48):  # address in use (Linux, macOS)
            raise ConfigError(
                f"Port {config.web.port} on {config.web.host} is already in use; stop the other program or "
                "choose another with --port or web.port."
            ) from None
        raise
    return 0


async def _open_queue(config: Config) -> JobQueue:
    if not config.database_path.exists():
        raise ConfigError(f"No DreamBot database at {config.database_path}; start `dreambot serve` first.")
    return await JobQueue.open(config.database_path)


def command_status(args: argparse.Namespace, config: Config) -> int:
    async def status() -> dict:
        queue = await _open_queue(config)
        try:
            counts = await queue.counts()
            active = await queue.all_jobs([JobState.RUNNING, JobState.QUEUED], limit=50)
            rows = []
            for job in sorted(active, key=lambda j: (j.state != JobState.RUNNING, j.created_at)):
                rows.append(
                    {
                        "id": job.id,
                        "state": job.state.value,
                        "user": job.user,
                        "position": await queue.position(job.id),
                        "progress": round(job.progress, 3),
                        "progress_text": job.progress_text,
                        "age_seconds": round(time.time() - job.created_at),
                    }
                )
            return {
                "jobs": {state.value: n for state, n in counts.items()},
                "average_seconds": round(await queue.average_seconds(), 1),
                "active": rows,
                "x": _x_spend(config),
                "schedule_problems": _schedule_problems(config),
                "adapters": _adapter_states(config),
                "networks": _networks_status(config),
                **_workers(config, [row["id"] for row in rows if row["state"] == "running"]),
            }
        finally:
            await queue.close()

    data = asyncio.run(status())
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print("jobs: " + ", ".join(f"{n} {state}" for state, n in data["jobs"].items()))
    print(f"average dream: {data['average_seconds']} s")
    for row in data["active"]:
        where = (
            f"{row['progress'] * 100:.0f}% {row['progress_text']}"
            if row["state"] == "running"
            else (f"position {row['position']}")
        )
        print(f"  {row['id']}  {row['state']:<8} {row['user']:<24} {where}")
    if not data["active"]:
        print("  nothing queued or running")
    for problem in data["schedule_problems"]:
        print(f"⚠️  {problem}")
    print(f"workers ({data['backend']}):")
    for worker in data["workers"]:
        doing = f"dreaming {worker['current_job']}" if worker["current_job"] else "idle"
        done = "" if worker["jobs_done"] is None else f", {worker['jobs_done']} done"
        print(
            f"  {worker['name']:<24} {worker['host'] or '':<16} {worker['device'] or '':<8} {worker['state']:<7} "
            f"{doing}{done}"
        )
    if data.get("workers_error"):
        print(f"  {data['workers_error']}")
    x = data["x"]
    if x is not None:
        paused = " (budget spent: reading and answering wait for the next day or month)" if x["exhausted"] else ""
        print(
            f"X spend: ${x['spent_today']:.3f} today, ${x['spent_this_month']:.3f} this month; "
            f"${x['remaining_today']:.3f} left today, ${x['remaining_this_month']:.3f} this month{paused}"
        )
    for platform, state in data["adapters"].items():
        line = f"{platform}: {state['state']}"
        if state.get("until") and state["until"] > time.time():
            line += f" (until {time.strftime('%H:%M:%S', time.localtime(state['until']))})"
        if state.get("last_error"):
            line += f"; last error: {state['last_error']}"
        print(line)
    networks = data["networks"]
    print(f"networks offered: {', '.join(networks['offered']) or 'none'}")
    for hint in networks["not_offered"].values():
        print(f"  {hint}")
    return 0


def _adapter_states(config: Config) -> dict[str, dict]:
    """Each social adapter's state as it last recorded it (connected, polling, backing off, ...), when it is on."""
    from bot.adapters.social import SocialStore

    states = {}
    for platform, on in (("mastodon", config.secrets.mastodon.enabled), ("bluesky", config.secrets.bluesky.enabled)):
        if on:
            store = SocialStore(config.database_path, platform)
            try:
                states[platform] = store.state() or {"state": "not started yet"}
            finally:
                store.close()
    return states


def _networks_status(config: Config) -> dict:
    """Which networks people are offered, and for the operator how to install the others (never shown to people)."""
    from bot.networks import network_offers

    offers = network_offers(config.worker.download_weights)
    return {
        "offered": [offer.name for offer in offers if offer.usable],
        "not_offered": {offer.name: offer.hint for offer in offers if not offer.usable},
    }


def _x_spend(config: Config) -> dict | None:
    """X's spend and budget from the database, when X is on."""
    if not config.secrets.x.enabled:
        return None
    from bot.adapters.social import Budget, SocialStore
    from bot.adapters.x import prices_of

    store = SocialStore(config.database_path, "x")
    try:
        return Budget(
            store, prices_of(config.x), config.x.daily_budget_dollars, config.x.monthly_budget_dollars
        ).status()
    finally:
        store.close()


def _schedule_problems(config: Config) -> list[str]:
    from bot.schedule import ScheduleStore, problems, report

    store = ScheduleStore(config.database_path)
    try:
        return problems(report(store, config.schedules))
    finally:
        store.close()


def command_schedule(args: argparse.Namespace, config: Config) -> int:
    """list: schedules, next run, last result per destination; run NAME: post now; preview NAME: picture only."""
    from bot.schedule import FINAL_RUN_STATES, ScheduleStore, report

    if args.action != "list" and args.name not in {s.name for s in config.schedules}:
        known = ", ".join(s.name for s in config.schedules) or "none (add a [[schedule]] table)"
        raise ConfigError(f"There is no schedule {args.name!r}; the schedules are: {known}.")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = ScheduleStore(config.database_path)
    try:
        if args.action == "list":
            rows = report(store, config.schedules)
            if args.json:
                print(json.dumps(rows, indent=2))
                return 0
            if not rows:
                print("No schedules; add a [[schedule]] table to the configuration.")
            for row in rows:
                last = row["last_run"]
                print(f"{row['name']}: {row['source']} at {row['cron']} ({row['timezone']}), next {row['next_run']}")
                print(f"  last run: {last['slot'] + ' ' + last['state'] if last else 'never'}")
                for name, post in row["destinations"].items():
                    error = f" ({post['error']})" if post.get("error") else ""
                    print(f"  {name:<9} {post['state']}{error}")
            return 0
        if store.service_running():  # never a second worker on the running service's queue
            kind = "manual" if args.action == "run" else "preview"
            slot = f"{kind}-{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime())}"
            store.request(args.name, slot)
            what = "post" if args.action == "run" else "make the next picture of"
            print(f"Asked the running service to {what} {args.name} now; waiting for it...", flush=True)
            deadline = time.time() + args.timeout
            while time.time() < deadline:
                if args.action == "preview":
                    made = store.preview(slot)
                    if made is not None:
                        picture, error = made
                        if picture is None:
                            raise ConfigError(f"The preview of {args.name} could not be made: {error}")
                        _write_preview(picture, args.out)
                        return 0
                    time.sleep(1.0)
                    continue
                run = store.run(args.name, slot)
                if run is not None and run.state in FINAL_RUN_STATES:
                    _print_run(run, store.posts(args.name, slot))
                    return 0 if run.state == "done" else 1
                time.sleep(1.0)
            print("The service has not finished the run yet; `dreambot schedule list` shows how it went.")
            return 1
    finally:
        store.close()
    from bot.app import run_schedule_once
    from bot.engine import DreamcoreEngine

    engine = DreamcoreEngine(config.worker.device)
    result, posts = asyncio.run(run_schedule_once(config, args.name, engine, preview=args.action == "preview"))
    if args.action == "preview":
        _write_preview(result, args.out)
        return 0
    _print_run(result, posts)
    return 0 if result.state == "done" else 1


def _write_preview(picture: object, out: Path | None) -> None:
    out = out or Path(f"preview-{picture.schedule}.{picture.extension}")  # type: ignore[attr-defined]
    out.write_bytes(picture.data)  # type: ignore[attr-defined]
    print(f"Wrote {out} ({picture.slot}); nothing was posted.\n{picture.caption}")  # type: ignore[attr-defined]


def _print_run(run: object, posts: list) -> None:
    print(f"{run.schedule} {run.slot}: {run.state}{' (' + run.error + ')' if run.error else ''}")  # type: ignore[attr-defined]
    for post in posts:
        print(f"  {post.destination:<9} {post.state}{' (' + post.error + ')' if post.error else ''}")


def _workers(config: Config, running: list[str]) -> dict:
    """The `workers` of `dreambot status`: the bot's own worker, or the Celery workers' heartbeats in Redis."""
    if config.worker.backend != "celery":
        import socket

        # The local worker lives in the `serve` process; what it dreams is what the database says runs.
        local = {"name": "local", "host": socket.gethostname(), "pid": None, "device": config.worker.device}
        local |= {"state": "ready", "current_job": running[0] if running else None, "jobs_done": None}
        local |= {"last_heartbeat": None}
        return {"backend": "local", "workers": [local]}
    from bot.celery_protocol import read_workers, redact

    try:
        return {"backend": "celery", "workers": read_workers(config.secrets.broker_url)}
    except Exception as error:
        where = redact(config.secrets.broker_url)
        return {
            "backend": "celery",
            "workers": [],
            "workers_error": f"Could not reach Redis at {where} ({type(error).__name__}); is it running?",
        }


def command_worker(args: argparse.Namespace, config: Config) -> int:
    from bot.celery_worker import default_name, run_worker
    from bot.engine import DreamcoreEngine, NullEngine

    if not config.secrets.broker_url:
        raise ConfigError(
            "`dreambot worker` needs DREAMBOT_BROKER_URL in the environment, the bot's Redis, for example "
            "redis://:password@redis-host:6379/0."
        )
    device = args.device or config.worker.device
    if args.engine == "null":
        engine = NullEngine(steps=args.null_steps, step_seconds=args.null_step_seconds)
    else:
        engine = DreamcoreEngine(device)
    run_worker(
        config.secrets.broker_url,
        engine,
        name=args.name or default_name(device),
        device=device,
        heartbeat_seconds=args.heartbeat_seconds,
        log_level=config.log_level,
    )
    return 0


def command_cancel(args: argparse.Namespace, config: Config) -> int:
    async def cancel() -> str:
        queue = await _open_queue(config)
        try:
            job = await queue.cancel(args.job)  # the operator: allowed for any job
            return "cancelled" if job.state == JobState.CANCELLED else "stopping at its next step"
        finally:
            await queue.close()

    print(f"Job {args.job}: {asyncio.run(cancel())}.")
    return 0


def command_init(args: argparse.Namespace, _config: Config | None) -> int:
    path: Path = args.path
    if path.exists() and not args.force:
        raise ConfigError(f"{path} already exists; use --force to overwrite it.")
    path.write_text(EXAMPLE, encoding="utf-8")
    print(f"Wrote {path}. Edit it, then run `dreambot serve --config {path}`.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreambot", description="DreamBot: DeepDream as a service.")
    parser.add_argument("--config", type=Path, help="TOML file (default: $DREAMBOT_CONFIG or ./dreambot.toml)")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the bot and its web page")
    serve.add_argument("--host", help="address for the web page (overrides web.host)")
    serve.add_argument("--port", type=int, help="port for the web page (overrides web.port; 0 = any free one)")
    serve.add_argument("--engine", choices=["dreamcore", "null"], default="dreamcore", help=argparse.SUPPRESS)
    serve.add_argument("--null-steps", type=int, default=0, help=argparse.SUPPRESS)
    serve.set_defaults(run=command_serve)
    status = commands.add_parser("status", help="the queue and the job being dreamed")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=command_status)
    cancel = commands.add_parser("cancel", help="cancel a job (queued, or running: it stops at its next step)")
    cancel.add_argument("job")
    cancel.set_defaults(run=command_cancel)
    schedule = commands.add_parser("schedule", help="scheduled posts: list, run NAME now, preview NAME")
    schedule.add_argument("action", choices=["list", "run", "preview"])
    schedule.add_argument("name", nargs="?", default="dream-of-the-day")
    schedule.add_argument("--json", action="store_true", help="list as JSON")
    schedule.add_argument("--out", type=Path, help="preview: where to write the picture")
    schedule.add_argument("--timeout", type=float, default=1800.0, help=argparse.SUPPRESS)
    schedule.set_defaults(run=command_schedule)
    worker = commands.add_parser("worker", help="dream for a bot elsewhere: a Celery worker on one device")
    worker.add_argument("--device", help="cpu, cuda, cuda:1, mps (overrides worker.device)")
    worker.add_argument("--name", help="this worker's name (default: host-device); one name per device")
    worker.add_argument("--heartbeat-seconds", type=float, default=5.0, help="how often it tells the bot it lives")
    worker.add_argument("--engine", choices=["dreamcore", "null"], default="dreamcore", help=argparse.SUPPRESS)
    worker.add_argument("--null-steps", type=int, default=0, help=argparse.SUPPRESS)
    worker.add_argument("--null-step-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    worker.set_defaults(run=command_worker)
    init = commands.add_parser("init", help="write a commented example configuration")
    init.add_argument("path", nargs="?", type=Path, default=Path("dreambot.toml"))
    init.add_argument("--force", action="store_true")
    init.set_defaults(run=command_init)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.run is command_init:
            return command_init(args, None)
        config = load_config(args.config)
        configure_logging(config.log_level)
        return args.run(args, config)
    except ConfigError as error:
        print(f"dreambot: {error}", file=sys.stderr)
        return 2
    except QueueError as error:
        print(f"dreambot: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
