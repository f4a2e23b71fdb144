"""Twilio SMS webhook path under a fixed arrival rate: acknowledgement latency, lost and duplicated
replies.

    .venv/bin/python bench/channels.py [--rate 50] [--seconds 30] [--replays 0.05] [--reply handoff|procedure]
        [--database-url postgresql://...|sqlite] [--worker-after] [--keep] [--dump FILE]

Starts the stack as separate processes: the Temporal dev server (SQLite WAL), the API on uvicorn
(`api.app:create_app`), one worker (`worker.py`) and the loopback Twilio server
(`demo.twilio_server`), each in its own session like the services of a deployment and configured
through FLYWHEEL_* variables, the worker at its default CPU priority (settings.worker_nice: lower
with PostgreSQL, see runtime.priority). The application database is PostgreSQL, the
production database (default: this machine's server, in a schema of its own that is dropped at
the end), or with `--database-url sqlite` a SQLite file (WAL), the laptop default. It configures one tenant's `sms` channel and then sends
signed SMS webhooks from this process (an async HTTP client) on an open model: request i is sent
at t0 + i/rate whatever the earlier ones are doing, and its latency is measured from that
scheduled moment to the HTTP 200 (so a late sender or a queue shows up in the figures). Every
message comes from its own number, so it is the first message of its own conversation and must
produce exactly one reply; `--replays` of them (5%) are sent a second time (same MessageSid,
0.5 s later) and must add no reply. Then it waits until the loopback server has every reply (or
nothing arrived for 60 s) and counts lost (no reply) and duplicated (more than one) numbers.

The reply path is deterministic and cheap so the bench measures the channel: `handoff` (default;
the text asks for a person, the conversation hands off without a model or a procedure and its
one reply goes out through the sms adapter) or `procedure` (a published procedure with a keyword
trigger that sends one message and ends: a child workflow per message, heavier).

The API adds `Server-Timing: app;dur=...` to each acknowledgement (from the form read to the
response: signature check with the cached credentials, the de-duplication + outbox insert); the
bench prints its percentiles beside the client's. The percentiles count every request: one that
failed (an HTTP error answer, a timeout, a refused connection) counts with the time until it
failed, and the errors are also counted on their own line. Last line:
`p50_ms=X p95_ms=Y p99_ms=Z lost=N duplicated=M` (target: p99 < 100 ms, nothing lost or doubled,
no errors).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from twilio.request_validator import RequestValidator  # noqa: E402

from runtime.devserver import DevServer, free_port  # noqa: E402
from runtime.priority import autogroup_nice, nice_of  # noqa: E402
from settings import Settings  # noqa: E402

SID, TOKEN, NUMBER = "AC" + "b" * 32, "bench-auth-token", "+15550001000"
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/test"
PROCEDURE = """
procedure: bench-reply
title: Bench reply
description: One message, then done.
trigger:
  keywords: [benchmark]
steps:
  - id: tell
    type: message
    text: Thanks for your benchmark message.
"""
TEXTS = {"handoff": "I want to talk to a person please", "procedure": "this is a benchmark message"}


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def env_of(settings: Settings) -> dict[str, str]:
    values = settings.model_dump(mode="json")
    return {**os.environ, **{f"FLYWHEEL_{k.upper()}": str(v) for k, v in values.items()}}


def spawn(cmd: list[str], settings: Settings, log: Path) -> subprocess.Popen:
    return subprocess.Popen(cmd, cwd=ROOT, env=env_of(settings), stdout=open(log, "ab"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_http(url: str, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        assert proc.poll() is None, f"{url}: process exited"
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} did not come up"
        time.sleep(0.2)


def wait_log(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text(errors="replace"):
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        assert time.monotonic() < deadline, f"{text!r} not in {log}"
        time.sleep(0.2)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def postgres_cpu() -> float:
    """CPU seconds of this machine's PostgreSQL processes (server and backends) so far."""
    total = 0.0
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == "postgres":
                    total += cpu_seconds(int(entry.name))
            except OSError:
                pass  # gone meanwhile
    return total


def priority_of(pid: int) -> str:
    """The process's nice value and its session's autogroup nice (see runtime.priority)."""
    group = autogroup_nice(pid)
    return f"nice {nice_of(pid)}, autogroup nice {'-' if group is None else group}"


def wait_idle(pid: int, timeout: float = 180) -> None:
    """Until the process uses under 10% of a core for 2 s (the worker loads the embedding model
    after it starts polling; that must not land in the measurement)."""
    deadline, quiet, last = time.monotonic() + timeout, 0, cpu_seconds(pid)
    while quiet < 4 and time.monotonic() < deadline:
        time.sleep(0.5)
        now = cpu_seconds(pid)
        quiet = quiet + 1 if now - last < 0.05 else 0
        last = now


def server_timing(header: str) -> dict[str, float]:
    return {m.group(1): float(m.group(2)) for m in re.finditer(r"(\w+);dur=([0-9.]+)", header or "")}


async def load(url: str, requests: list[tuple[float, dict]], timeout: float) -> list[dict]:
    """Send request k at t0 + offset_k (open model); latency from the scheduled moment."""
    validator = RequestValidator(TOKEN)
    signed = [(offset, params, validator.compute_signature(url, params)) for offset, params in requests]
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        loop = asyncio.get_running_loop()
        t0 = loop.time() + 0.5

        async def one(offset: float, params: dict, signature: str) -> dict:
            # "at" is the scheduled moment (seconds from the start of the load)
            at = t0 + offset
            await asyncio.sleep(max(0.0, at - loop.time()))
            lag = loop.time() - at
            try:
                r = await client.post(url, data=params, headers={"X-Twilio-Signature": signature})
                done = loop.time()
                return {"sid": params["MessageSid"], "status": r.status_code, "ms": (done - at) * 1000, "at": offset,
                        "lag_ms": lag * 1000, "timing": server_timing(r.headers.get("server-timing", ""))}
            except httpx.HTTPError as err:
                # a failed request counts in the percentiles with the time it took to fail
                return {"sid": params["MessageSid"], "status": type(err).__name__,
                        "ms": (loop.time() - at) * 1000, "at": offset, "lag_ms": lag * 1000, "timing": {}}

        return await asyncio.gather(*(one(*s) for s in signed))


def received(twilio_url: str) -> list[dict]:
    return httpx.get(f"{twilio_url}/_loopback/messages", timeout=30).json()["messages"]


def wait_replies(twilio_url: str, expected: set[str], quiet_s: float = 60) -> tuple[list[dict], float]:
    """Until every expected number got a reply, or nothing new arrived for quiet_s."""
    start = last_change = time.monotonic()
    count = -1
    while True:
        msgs = [m for m in received(twilio_url) if m["to"] in expected]
        if len(msgs) != count:
            count, last_change = len(msgs), time.monotonic()
        if {m["to"] for m in msgs} >= expected or time.monotonic() - last_change > quiet_s:
            return msgs, time.monotonic() - start
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description="Twilio SMS webhook path under a fixed arrival rate")
    parser.add_argument("--rate", type=float, default=50.0, help="webhooks per second")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--replays", type=float, default=0.05, help="share of messages sent twice")
    parser.add_argument("--reply", choices=sorted(TEXTS), default="handoff")
    parser.add_argument("--worker-after", action="store_true",
                        help="stop the worker during the load and start it afterwards: the webhook path alone")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (logs, databases)")
    parser.add_argument("--dump", default="", help="write every request's timings to this JSON file")
    parser.add_argument("--database-url", default=DEFAULT_DATABASE,
                        help="the app database: a PostgreSQL server (the production database; default "
                             f"{DEFAULT_DATABASE}; the bench works in a schema of its own, dropped at the "
                             "end) or `sqlite` (a SQLite file in the temp dir, the laptop default)")
    args = parser.parse_args()
    postgres = args.database_url != "sqlite"
    schema = PgSchema(args.database_url) if postgres else None
    try:
        run(args, schema)
    finally:
        if schema is not None:
            schema.drop()


class PgSchema:
    """A schema of its own on the PostgreSQL server, and the URL that works in it."""

    def __init__(self, url: str) -> None:
        from sqlalchemy import create_engine, text
        from db.engine import normalize_url
        self.name = f"bench_{uuid.uuid4().hex[:10]}"
        self.admin = create_engine(normalize_url(url), isolation_level="AUTOCOMMIT")
        try:
            with self.admin.connect() as conn:
                conn.execute(text(f'CREATE SCHEMA "{self.name}"'))
        except Exception as err:
            sys.exit(f"cannot use PostgreSQL at {url} ({type(err).__name__}); "
                     "pass --database-url sqlite for a SQLite file")
        self.url = f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{self.name}"

    def drop(self) -> None:
        from sqlalchemy import text
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{self.name}" CASCADE'))
        self.admin.dispose()


def run(args: argparse.Namespace, schema: "PgSchema | None") -> None:

    tmp = Path(tempfile.mkdtemp(prefix="flywheel-bench-channels-"))
    procs: list[subprocess.Popen] = []
    with DevServer(db_file=tmp / "dev.db", log_file=tmp / "dev.log") as server:
        try:
            twilio_port, api_port = free_port(), free_port()
            twilio_url = f"http://127.0.0.1:{twilio_port}"
            settings = Settings(
                data_dir=tmp, database_url=schema.url if schema else f"sqlite:///{(tmp / 'flywheel.db').as_posix()}",
                temporal_address=server.address, task_queue=f"bench-ch-{uuid.uuid4().hex[:6]}",
                api_port=api_port, public_url=f"http://127.0.0.1:{api_port}",
                secret_keys=Fernet.generate_key().decode(), link_secret=uuid.uuid4().hex,
                twilio_api_base=twilio_url)
            api = settings.public_url

            from db.engine import make_engine, session_scope
            from db.tenants import create_tenant
            engine = make_engine(settings.resolved_database_url())
            with session_scope(engine) as session:
                tenant, key = create_tenant(session, f"bench-{uuid.uuid4().hex[:6]}")
            engine.dispose()
            headers = {"Authorization": f"Bearer {key}"}

            procs.append(spawn([sys.executable, "-m", "demo.twilio_server", "--port", str(twilio_port),
                                "--account", f"{SID}:{TOKEN}"], settings, tmp / "twilio.log"))
            procs.append(spawn([sys.executable, "-m", "uvicorn", "api.app:create_app", "--factory", "--host",
                                "127.0.0.1", "--port", str(api_port), "--log-level", "warning"],
                               settings, tmp / "api.log"))
            procs.append(spawn([sys.executable, "worker.py"], settings, tmp / "worker.log"))
            wait_http(f"{twilio_url}/_loopback/messages", procs[0])
            wait_http(f"{api}/healthz", procs[1])
            wait_log(tmp / "worker.log", "worker polling", procs[2])
            priority = priority_of(procs[2].pid)
            r = httpx.put(f"{api}/v1/channels/sms", headers=headers, timeout=30, json={
                "settings": {"phone_number": NUMBER}, "secrets": {"account_sid": SID, "auth_token": TOKEN}})
            assert r.status_code == 200, r.text
            if args.reply == "procedure":
                r = httpx.post(f"{api}/v1/procedures", headers={**headers, "Content-Type": "application/yaml"},
                               content=PROCEDURE, timeout=30)
                assert r.status_code in (200, 201), r.text
            url = f"{api}/webhooks/{tenant.id}/twilio/sms"
            text = TEXTS[args.reply]

            def message(number: str) -> dict:
                return {"MessageSid": "SM" + uuid.uuid4().hex, "AccountSid": SID, "From": number, "To": NUMBER,
                        "Body": text, "NumMedia": "0", "SmsStatus": "received", "ApiVersion": "2010-04-01"}

            # warm-up (not measured): connections, the API's Temporal client, the worker's caches
            warm = [message(f"+1444{i:07d}") for i in range(20)]
            asyncio.run(load(url, [(i / 10, m) for i, m in enumerate(warm)], timeout=60))
            wait_replies(twilio_url, {m["From"] for m in warm}, quiet_s=30)
            wait_idle(procs[2].pid)
            if args.worker_after:
                procs[2].terminate()
                procs[2].wait(timeout=30)

            n = int(args.rate * args.seconds)
            msgs = [message(f"+1555{i:07d}") for i in range(n)]
            step = max(1, round(1 / args.replays)) if args.replays > 0 else 0
            replayed = [i for i in range(n) if step and i % step == step // 2]
            schedule = [(i / args.rate, m) for i, m in enumerate(msgs)]
            schedule += [(i / args.rate + 0.5, msgs[i]) for i in replayed]
            schedule.sort(key=lambda s: s[0])
            watched = {"dev server": server.proc.pid, "api": procs[1].pid, "worker": procs[2].pid,
                       "loopback twilio": procs[0].pid, "load client": os.getpid()}
            if args.worker_after:
                del watched["worker"]
            cpu_before = {name: cpu_seconds(pid) for name, pid in watched.items()}
            pg_before = postgres_cpu() if schema else None
            started = time.monotonic()
            results = asyncio.run(load(url, schedule, timeout=60))
            send_s = time.monotonic() - started
            cpu = {name: (cpu_seconds(pid) - cpu_before[name]) / send_s for name, pid in watched.items()}
            if pg_before is not None:
                cpu["postgresql"] = (postgres_cpu() - pg_before) / send_s

            if args.worker_after:
                procs.append(spawn([sys.executable, "worker.py"], settings, tmp / "worker2.log"))
            expected = {m["From"] for m in msgs}
            replies, waited = wait_replies(twilio_url, expected)
            per_number = Counter(m["to"] for m in replies)
            lost = sum(1 for number in expected if per_number[number] == 0)
            duplicated = sum(1 for number in expected if per_number[number] > 1)
            wrong = sum(1 for m in replies if m["from"] != NUMBER)
        finally:
            for p in procs:
                if p.poll() is None:
                    p.terminate()
            for p in procs:
                try:
                    p.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    p.kill()

    if args.dump:
        import json
        Path(args.dump).write_text(json.dumps(results))
    ok = [r for r in results if r["status"] == 200]
    errors = Counter(str(r["status"]) for r in results if r["status"] != 200)
    # every request counts: a failed one with the time until its error answer (or its failure),
    # so errors cannot make the percentiles look better than what the senders saw
    ms = [r["ms"] for r in results]
    app = [r["timing"].get("app", 0.0) for r in ok if r["timing"]]
    lag = [r["lag_ms"] for r in results]
    app_db = "PostgreSQL" if schema else "SQLite WAL"
    print(f"stack: dev server (sqlite WAL), API (uvicorn, 1 process), 1 worker ({priority})"
          f"{' (started after the load)' if args.worker_after else ''}, loopback Twilio; app db {app_db}; "
          f"reply path: {args.reply}; temp dir {tmp}")
    print(f"sent {len(results)} webhooks ({n} messages + {len(replayed)} replays) at {args.rate:g}/s over "
          f"{send_s:.1f} s; errors (not HTTP 200): {sum(errors.values())} {dict(errors) or ''}")
    print(f"ack latency ms (scheduled send -> answer, all {len(ms)} requests, errors included): "
          f"p50 {pct(ms, 50):.1f}  p95 {pct(ms, 95):.1f}  p99 {pct(ms, 99):.1f}  max {max(ms, default=float('nan')):.1f}")
    print(f"  server side (Server-Timing app): p50 {pct(app, 50):.1f} p99 {pct(app, 99):.1f} | client send lag p99 "
          f"{pct(lag, 99):.1f} ms")
    print("CPU during the load (cores): " + ", ".join(f"{k} {v:.2f}" for k, v in cpu.items())
          + f"; machine load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"replies: {len(replies)} for {n} messages after {waited:.1f} s more (the last reply "
          f"{'arrived' if not lost else 'is missing'}); wrong sender: {wrong}")
    met = pct(ms, 99) < 100 and lost == 0 and duplicated == 0 and not errors
    print(f"target (p99 < 100 ms, nothing lost or duplicated, no errors): {'met' if met else 'NOT met'}")
    if not args.keep:
        import shutil
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"p50_ms={pct(ms, 50):.1f} p95_ms={pct(ms, 95):.1f} p99_ms={pct(ms, 99):.1f} lost={lost} duplicated={duplicated}")


if __name__ == "__main__":
    main()
