"""The ``gateway`` command: serve, migrate, dev, projects, keys, events, reservations,
tenants, webhooks, audit."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
from litestar import Litestar

from gateway.config import ConfigError, Settings
from gateway.errors import GatewayError

if TYPE_CHECKING:
    from gateway.runtime import Runtime

T = TypeVar("T")


def app_from_env() -> Litestar:
    """Factory for uvicorn (``--workers`` needs an import string)."""
    from gateway.app import create_app

    return create_app(Settings.from_env())


def _byte_count(raw: str) -> int | None:
    if raw.lower() in ("none", "null", "unlimited"):
        return None
    try:
        value = int(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number of bytes or 'none', got {raw!r}"
        ) from None
    if not 0 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2^63-1, got {value}")
    return value


def _percentages(raw: str) -> list[int]:
    try:
        values = [int(v) for v in raw.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected percentages like 70,90,100, got {raw!r}"
        ) from None
    if not all(1 <= v <= 1000 for v in values):
        raise argparse.ArgumentTypeError("each percentage must be between 1 and 1000")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("serve", help="run the HTTP server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--workers", type=int, default=1)

    sub.add_parser("migrate", help="create the database if missing and apply migrations")

    d = sub.add_parser(
        "dev",
        help="from a source checkout: local Postgres/Redis, in-process S3, the demo page",
    )
    d.add_argument("--host", default="127.0.0.1")
    d.add_argument("--port", type=int, default=8080)
    d.add_argument("--s3-port", type=int, default=0, help="in-process S3 port (0 = any free)")
    d.add_argument(
        "--verbose", action="store_true", help="also the in-process S3's access log lines"
    )

    projects = sub.add_parser("projects", help="manage projects").add_subparsers(
        dest="action", required=True
    )
    pc = projects.add_parser("create", help="create a project and its first API key")
    pc.add_argument("name")
    pu = projects.add_parser("update", help="change a project's limits")
    pu.add_argument("project_id")
    pu.add_argument("--name")
    pu.add_argument(
        "--webhook-thresholds",
        type=_percentages,
        default=None,
        help="percentages of a tenant's limit told by tenant.quota.threshold (default 70,90,100)",
    )
    for sp in (pc, pu):
        sp.add_argument("--max-file-size", type=_byte_count, default=argparse.SUPPRESS)
        sp.add_argument(
            "--storage-limit",
            type=_byte_count,
            default=argparse.SUPPRESS,
            help="cap for all the project's tenants together ('none' = unlimited)",
        )
        sp.add_argument(
            "--default-tenant-limit",
            type=_byte_count,
            default=argparse.SUPPRESS,
            help="limit of tenants with no PATCHed limit ('none' = unlimited)",
        )
        sp.add_argument("--json", action="store_true")

    keys = sub.add_parser("keys", help="manage API keys").add_subparsers(
        dest="action", required=True
    )
    kc = keys.add_parser("create", help="create another key for a project")
    kc.add_argument("project_id")
    kc.add_argument("--json", action="store_true")
    kr = keys.add_parser("revoke", help="revoke a key (401 on the next request)")
    kr.add_argument("key_id")

    events = sub.add_parser("events", help="S3 event ingestion").add_subparsers(
        dest="action", required=True
    )
    ep = events.add_parser("poll-sqs", help="consume S3 events from an SQS queue")
    ep.add_argument("--queue-url", required=True)
    ep.add_argument(
        "--receivers",
        type=int,
        default=None,
        help="concurrent receive loops (default GATEWAY_SQS_RECEIVERS, 8)",
    )
    ep.add_argument(
        "--sweep",
        action="store_true",
        help="also run the sweeper every GATEWAY_SWEEP_INTERVAL seconds (servers run it)",
    )

    res = sub.add_parser("reservations", help="reservations").add_subparsers(
        dest="action", required=True
    )
    res.add_parser(
        "sweep", help="mark uploads past their deadline expired; audit Redis against Postgres"
    )

    tenants = sub.add_parser("tenants", help="tenants").add_subparsers(dest="action", required=True)
    tr = tenants.add_parser("recalculate", help="rescan tenants' objects in S3, rebuild usage")
    tr.add_argument("tenant_id", nargs="?")
    tr.add_argument("--all", action="store_true")
    tr.add_argument("--project", required=True)

    webhooks = sub.add_parser("webhooks", help="outbound webhooks").add_subparsers(
        dest="action", required=True
    )
    wd = webhooks.add_parser(
        "deliver", help="deliver the webhook outbox until SIGTERM (servers also deliver)"
    )
    wd.add_argument("--once", action="store_true", help="deliver what is due now, then exit")

    audit = sub.add_parser("audit", help="the audit log").add_subparsers(
        dest="action", required=True
    )
    al = audit.add_parser("list", help="a project's audit entries, newest first")
    al.add_argument("--project", required=True)
    al.add_argument("--tenant")
    al.add_argument("--action", dest="audit_action", metavar="ACTION")
    al.add_argument("--offset", type=int, default=0)
    al.add_argument("--limit", type=int, default=50)
    al.add_argument("--json", action="store_true", help="one JSON object per line")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    from gateway.observability import configure_logging

    configure_logging(settings)
    try:
        return _dispatch(args, settings)
    except GatewayError as exc:
        print(f"gateway: {exc.detail}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def _dispatch(args: argparse.Namespace, settings: Settings) -> int:
    cmd = args.command
    if cmd == "serve":
        return _serve(settings, args.host, args.port, args.workers)
    if cmd == "migrate":
        from gateway.db.migrate import migrate

        applied = asyncio.run(migrate(settings.database_url))
        print(f"migrations applied: {applied or 'none (up to date)'}")
        return 0
    if cmd == "dev":
        return _dev(settings, args)
    if cmd == "projects":
        return asyncio.run(_projects(settings, args))
    if cmd == "keys":
        return asyncio.run(_keys(settings, args))
    if cmd == "reservations":
        return asyncio.run(_with_runtime(settings, _sweep))
    if cmd == "webhooks":
        return run_on_fast_loop(_deliver_webhooks(settings, once=args.once))
    if cmd == "audit":
        return asyncio.run(_with_db(settings, lambda db: _audit_list(db, args)))
    if cmd == "tenants":
        return asyncio.run(_with_runtime(settings, lambda rt: _recalculate(rt, args)))
    if cmd == "events":
        if args.receivers is not None:
            if not 1 <= args.receivers <= 100:
                print("gateway: --receivers must be between 1 and 100", file=sys.stderr)
                return 2
            settings = msgspec.structs.replace(settings, sqs_receivers=args.receivers)
        if args.sweep and settings.sweep_interval <= 0:
            print("gateway: --sweep needs GATEWAY_SWEEP_INTERVAL > 0", file=sys.stderr)
            return 2
        return run_on_fast_loop(_poll_sqs(settings, args.queue_url, sweep=args.sweep))
    raise AssertionError(cmd)


def _dev(settings: Settings, args: argparse.Namespace) -> int:
    """``gateway dev`` lives in the source checkout's devtools/ (with its in-process S3
    and demo page), which the installed package does not ship."""
    try:
        from devtools.dev import run_dev
    except ModuleNotFoundError as exc:
        if exc.name not in ("devtools", "devtools.dev"):
            raise
        print(
            "gateway dev: needs a source checkout of the gateway (its dev tools are not "
            "part of the installed package): clone the repository and run `make dev` "
            "there. Installed like this, run `gateway serve` against your own Postgres, "
            "Redis and S3.",
            file=sys.stderr,
        )
        return 2
    return run_dev(
        settings, host=args.host, port=args.port, s3_port=args.s3_port, verbose=args.verbose
    )


def run_on_fast_loop(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop where it is installed, the loop uvicorn gives
    ``serve``: the SQS worker spent 5 to 8% less CPU per event on it
    (bench_events, in-process SQS rows, 2026-12-01)."""
    try:
        import uvloop
    except ImportError:  # not on every platform: the standard loop
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def _serve(settings: Settings, host: str, port: int, workers: int) -> int:
    import uvicorn

    if workers > 1:
        # The workers are processes of their own: /metrics sums them through
        # prometheus_client's multiprocess mode, in a directory they inherit from
        # the environment (spawned, they import prometheus_client after this).
        with metrics_directory(settings.prometheus_multiproc_dir) as directory:
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
            uvicorn.run(
                "gateway.cli:app_from_env",
                factory=True,
                host=host,
                port=port,
                workers=workers,
                log_config=None,
                access_log=False,
            )
    else:
        from gateway.app import create_app

        if settings.prometheus_multiproc_dir is not None:
            clear_metrics_directory(settings.prometheus_multiproc_dir)
        uvicorn.run(create_app(settings), host=host, port=port, log_config=None, access_log=False)
    return 0


def clear_metrics_directory(directory: str) -> None:
    """Creates ``directory`` if missing and removes the value files (``*.db``) a
    previous run left there, which /metrics would otherwise add to this run's."""
    path = Path(directory)
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)


@contextmanager
def metrics_directory(configured: str | None) -> Iterator[str]:
    """The multiprocess directory of one ``serve``: ``configured`` (emptied of a
    previous run's files), or a fresh temporary one, removed when the server stops."""
    if configured is not None:
        clear_metrics_directory(configured)
        yield configured
        return
    created = tempfile.mkdtemp(prefix="gateway-metrics-")
    try:
        yield created
    finally:
        shutil.rmtree(created, ignore_errors=True)


async def _with_db(settings: Settings, fn: Callable[[Any], Awaitable[T]]) -> T:
    from gateway.db import create_database

    db = create_database(settings)
    try:
        return await fn(db)
    finally:
        await db.close()


async def _projects(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.projects import ProjectService

    limits = {
        k: getattr(args, k)
        for k in ("max_file_size", "storage_limit", "default_tenant_limit")
        if hasattr(args, k)
    }
    if getattr(args, "webhook_thresholds", None) is not None:
        limits["webhook_thresholds"] = args.webhook_thresholds

    async def run(db: Any) -> int:
        from gateway.webhooks.outbox import Outbox

        service = ProjectService(db)
        service.outbox = Outbox()  # a new default limit is judged against thresholds
        if args.action == "create":
            created = await service.create(args.name, **limits)
            out = {
                "project_id": created.project_id,
                "key_id": created.key_id,
                "api_key": created.api_key,
            }
            if args.json:
                print(json.dumps(out))
            else:
                print(f"project {created.project_id} ({created.name})")
                print(f"api key (shown only now): {created.api_key}")
            return 0
        row = await service.update(args.project_id, name=args.name, **limits)
        if args.json:
            print(json.dumps({k: v for k, v in row.items() if not hasattr(v, "isoformat")}))
        else:
            print(f"project {row['id']} updated")
        return 0

    return await _with_db(settings, run)


async def _keys(settings: Settings, args: argparse.Namespace) -> int:
    from gateway.projects import ProjectService

    async def run(db: Any) -> int:
        service = ProjectService(db)
        if args.action == "create":
            key_id, api_key = await service.create_key(args.project_id)
            if args.json:
                print(json.dumps({"key_id": key_id, "api_key": api_key}))
            else:
                print(f"key {key_id}\napi key (shown only now): {api_key}")
            return 0
        await service.revoke_key(args.key_id)
        print(f"key {args.key_id} revoked")
        return 0

    return await _with_db(settings, run)


async def _audit_list(db: Any, args: argparse.Namespace) -> int:
    from gateway.audit import AuditLog

    if args.offset < 0 or not 1 <= args.limit <= 1000:
        print("gateway: --limit must be between 1 and 1000, --offset >= 0", file=sys.stderr)
        return 2
    entries, total = await AuditLog(db).list(
        args.project,
        tenant_id=args.tenant,
        action=args.audit_action,
        offset=args.offset,
        limit=args.limit,
    )
    for e in entries:
        if args.json:
            print(msgspec.json.encode(e).decode())
        else:
            who = f"{e.actor.type}:{e.actor.id}" if e.actor.id else e.actor.type
            print(
                f"{e.at}  {e.action:<22} {who:<28} {e.tenant_id or '-':<20} "
                f"{json.dumps(e.before)} -> {json.dumps(e.after)}"
            )
    if not args.json:
        print(f"({len(entries)} of {total})")
    return 0


async def _with_runtime(
    settings: Settings, fn: Callable[[Runtime], Coroutine[Any, Any, int]]
) -> int:
    """Runs one job on the services of a Runtime, with no background jobs beside it."""
    from gateway.runtime import Runtime

    async with Runtime(settings) as runtime:
        return await fn(runtime)


async def _poll_sqs(settings: Settings, queue_url: str, *, sweep: bool) -> int:
    """``gateway events poll-sqs``: one SQS poller (and the sweeper if asked) until
    SIGTERM/SIGINT; the poller then finishes the batch in hand."""
    from gateway.runtime import Runtime

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Runtime(settings, sweeper=sweep, sqs_queue_url=queue_url):
        await stop.wait()
    return 0


async def _deliver_webhooks(settings: Settings, *, once: bool) -> int:
    """``gateway webhooks deliver``: a delivery worker on the outbox until
    SIGTERM/SIGINT (the attempts in flight then end), or one pass with ``--once``."""
    from gateway.runtime import Runtime

    if once:
        async with Runtime(settings) as runtime:
            attempted = await runtime.webhooks.deliverer.deliver_due()
        print(f"webhook deliveries attempted: {attempted}")
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Runtime(settings, webhook_delivery=True):
        await stop.wait()
    return 0


async def _sweep(runtime: Runtime) -> int:
    freed = await runtime.sweeper.sweep()
    ended, removed = await runtime.sweeper.audit()
    print(f"reservations freed: {freed}")
    print(f"audit: reservations without an upload ended: {ended}")
    print(f"audit: never-admitted uploads removed: {removed}")
    return 0


async def _recalculate(runtime: Runtime, args: argparse.Namespace) -> int:
    from gateway.db import Q

    if args.all == bool(args.tenant_id):
        print("gateway: give a TENANT_ID or --all", file=sys.stderr)
        return 2
    tenant_ids = (
        [r["tenant_id"] for r in await runtime.db.fetch(Q.tenant_ids, args.project)]
        if args.all
        else [args.tenant_id]
    )
    for tenant_id in tenant_ids:
        result = await runtime.tenants.recalculate(args.project, tenant_id)
        print(
            json.dumps(
                {
                    "tenant_id": tenant_id,
                    "storage_used_bytes": result.storage_used_bytes,
                    "drift_bytes": result.drift_bytes,
                    "drift_files": result.drift_files,
                }
            )
        )
    return 0
