"""The `gateway` command and migrations, against real Postgres."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from typing import Any

import asyncpg
import httpx
import pytest

from gateway.config import Settings
from gateway.db.migrate import load_migrations, migrate
from tests.conftest import make_project
from tests.support.services import new_db_name, with_database


def gw_env(settings: Settings, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "GATEWAY_DATABASE_URL": settings.database_url,
        "GATEWAY_REDIS_URL": settings.redis_url,
        "GATEWAY_S3_ENDPOINT_URL": settings.s3_endpoint_url or "",
        "GATEWAY_LOG_LEVEL": "error",
        **extra,
    }


def gw(settings: Settings, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        [sys.executable, "-m", "gateway", *args],
        env=gw_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert r.returncode == 0, r.stderr
    return r


async def test_all_migrations_apply_to_an_empty_database_concurrently(
    urls: tuple[str, str],
) -> None:
    name = new_db_name()
    url = with_database(urls[0], name)
    try:
        # several replicas starting together: the advisory lock serialises them
        results = await asyncio.gather(*(migrate(url) for _ in range(4)))
        assert sorted(len(r) for r in results) == [0, 0, 0, len(load_migrations())]
        conn = await asyncpg.connect(url)
        try:
            versions = [
                r["version"]
                for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
            ]
            assert versions == [m.version for m in load_migrations()]
            tables = {
                r["tablename"]
                for r in await conn.fetch(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                )
            }
            assert {"projects", "api_keys", "tenants", "uploads", "objects"} <= tables
        finally:
            await conn.close()
        assert await migrate(url) == []
    finally:
        conn = await asyncpg.connect(with_database(urls[0], "postgres"))
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await conn.close()


def test_projects_and_keys_cli(settings: Settings, client: httpx.AsyncClient) -> None:
    out = json.loads(
        gw(
            settings,
            "projects",
            "create",
            f"cli-{new_db_name()}",
            "--storage-limit",
            "1000",
            "--default-tenant-limit",
            "100",
            "--max-file-size",
            "50",
            "--json",
        ).stdout
    )
    assert set(out) >= {"project_id", "api_key"} and out["api_key"].startswith("gwk_")
    assert out["api_key"] not in gw(settings, "keys", "create", out["project_id"]).stderr
    second = json.loads(gw(settings, "keys", "create", out["project_id"], "--json").stdout)
    upd = json.loads(
        gw(
            settings, "projects", "update", out["project_id"], "--storage-limit", "none", "--json"
        ).stdout
    )
    assert upd["storage_limit_bytes"] is None and upd["default_tenant_limit_bytes"] == 100
    gw(settings, "keys", "revoke", second["key_id"])
    bad = gw(settings, "keys", "revoke", second["key_id"], check=False)
    assert bad.returncode == 1 and "No active key" in bad.stderr
    name = f"dup-{new_db_name()}"
    gw(settings, "projects", "create", name)
    dup = gw(settings, "projects", "create", name, check=False)
    assert dup.returncode == 1 and "already exists" in dup.stderr
    assert (
        gw(settings, "projects", "create", "x", "--storage-limit", "-5", check=False).returncode
        == 2
    )


def test_bad_configuration_fails_with_one_line(settings: Settings) -> None:
    env = {**os.environ, "GATEWAY_UPLOAD_URL_TTL": "soon"}
    r = subprocess.run(
        [sys.executable, "-m", "gateway", "migrate"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "GATEWAY_UPLOAD_URL_TTL" in r.stderr


def test_sweep_and_recalculate_cli(settings: Settings, state: Any) -> None:
    r = gw(settings, "reservations", "sweep")
    assert "reservations freed" in r.stdout
    pid = json.loads(gw(settings, "projects", "create", f"rc-{new_db_name()}", "--json").stdout)
    r = gw(settings, "tenants", "recalculate", "--all", "--project", pid["project_id"])
    assert r.returncode == 0
    r = gw(settings, "tenants", "recalculate", "--project", pid["project_id"], check=False)
    assert r.returncode == 2


@pytest.mark.parametrize("args", [["serve", "--port", "notaport"], ["projects"], ["nope"]])
def test_cli_usage_errors(settings: Settings, args: list[str]) -> None:
    assert gw(settings, *args, check=False).returncode == 2


def test_poll_sqs_runs_its_receivers_and_stops_on_sigterm(settings: Settings, s3: Any) -> None:
    import boto3

    sqs = boto3.client("sqs", endpoint_url=s3.endpoint_url, region_name="us-east-1")
    url = sqs.create_queue(QueueName="cli-poll")["QueueUrl"]
    assert (
        gw(
            settings, "events", "poll-sqs", "--queue-url", url, "--receivers", "0", check=False
        ).returncode
        == 2
    )
    no_sweeps = subprocess.run(
        [sys.executable, "-m", "gateway", "events", "poll-sqs", "--queue-url", url, "--sweep"],
        env=gw_env(settings, GATEWAY_SWEEP_INTERVAL="0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert no_sweeps.returncode == 2 and "GATEWAY_SWEEP_INTERVAL" in no_sweeps.stderr
    env = gw_env(settings, GATEWAY_LOG_FORMAT="json", GATEWAY_LOG_LEVEL="info")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gateway",
            "events",
            "poll-sqs",
            "--queue-url",
            url,
            "--receivers",
            "3",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        started = ""
        while "sqs poller started" not in started:
            line = proc.stdout.readline()
            assert line, "the poller exited before it started"
            started = line
        assert '"receivers": 3' in started or '"receivers":3' in started
        assert '"loop":"uvloop"' in started.replace(" ", "")  # as uvicorn runs `serve`
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0  # does not wait out the 20 s long polls
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


async def _planted_expired_upload(state: Any, client: httpx.AsyncClient) -> tuple[str, str]:
    """An admitted upload whose reservation is past its deadline: the first sweep of
    any sweeper on this database marks it ``expired``."""
    p = await make_project(state)
    r = await client.post(
        "/api/storage/upload/",
        headers=p.headers,
        json={"tenant_id": "sweepme", "filename": "f.bin", "size_bytes": 1},
    )
    assert r.status_code == 200, r.text
    upload_id: str = r.json()["upload_id"]
    await state.db.execute(
        "UPDATE uploads SET reserved_until = now() - interval '1 second' WHERE id = $1",
        upload_id,
    )
    return p.project_id, upload_id


@pytest.mark.parametrize("sweep", [False, True], ids=["default", "with-sweep"])
async def test_poll_sqs_runs_one_poller_and_sweeps_only_when_asked(
    settings: Settings, state: Any, client: httpx.AsyncClient, s3: Any, sweep: bool
) -> None:
    """GATEWAY_SQS_QUEUE_URL set, as the k8s sqs-poller pod sets it: the command runs
    the one poller it was asked for (its receivers, no second poller of a server's),
    and no sweeper unless ``--sweep``."""
    import boto3

    sqs = boto3.client("sqs", endpoint_url=s3.endpoint_url, region_name="us-east-1")
    url = sqs.create_queue(QueueName="cli-poll-one")["QueueUrl"]
    _, upload_id = await _planted_expired_upload(state, client)
    env = gw_env(
        settings,
        GATEWAY_SQS_QUEUE_URL=url,
        GATEWAY_SWEEP_INTERVAL="0.2",
        GATEWAY_LOG_FORMAT="json",
        GATEWAY_LOG_LEVEL="info",
    )
    args = ["events", "poll-sqs", "--queue-url", url, "--receivers", "3"]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        *args,
        *(["--sweep"] if sweep else []),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    try:

        async def started() -> None:
            while not any(e.get("event") == "sqs poller started" for e in lines):
                raw = await proc.stdout.readline()  # type: ignore[union-attr]
                assert raw, "the poller exited before it started"
                if raw.startswith(b"{"):
                    lines.append(json.loads(raw))

        await asyncio.wait_for(started(), timeout=30)
        await asyncio.sleep(1.5)  # seven sweep intervals: any sweeper has swept by now
        proc.send_signal(signal.SIGTERM)
        rest, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
        assert proc.returncode == 0, rest.decode()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    lines += [json.loads(raw) for raw in rest.splitlines() if raw.startswith(b"{")]
    pollers = [e for e in lines if e.get("event") == "sqs poller started"]
    assert [(e["queue_url"], e["receivers"]) for e in pollers] == [(url, 3)]
    receivers = [e["receiver"] for e in lines if e.get("event") == "sqs receiver started"]
    assert sorted(receivers) == [0, 1, 2]
    tasks = {e["task"] for e in lines if e.get("event") == "background task started"}
    assert tasks == ({"sqs-poller", "sweeper"} if sweep else {"sqs-poller"})
    status = await state.db.fetchval("SELECT status FROM uploads WHERE id = $1", upload_id)
    assert status == ("expired" if sweep else "pending")
    if not sweep:
        assert await state.sweeper.sweep() >= 1  # what a server's sweeper would do
