"""Load test: the product under a mixed workload across 20 organisations, at, above and after its sustainable rate.

Real processes on their own port and database: one daphne web process, the ingest worker (prefork) and the agents
worker (threads), with the deployed settings (rate limits on, at their defaults; bench/chat_settings.py) and a
loopback fake OpenAI-compatible model. Each organisation has two API keys (two principals), a knowledge base with
documents and an agent answering from it. The client is open-loop (arrivals at a fixed rate, never waiting for
answers), so an overloaded server shows up as latency and refusals, not as a slower client:

  1. ladder: rates doubling from --start-rate, --step seconds each; the sustainable rate is the highest one where
     fewer than 1% of requests fail or are shed, >= 95% are answered within the phase, and p99 stays under the
     bounds (2 s for search, lists and uploads; 5 s for a whole chat answer);
  2. overload: twice the sustainable rate (--overload s): requests must be shed with 429/503 + Retry-After, and
     nothing else may fail;
  3. recovery: the sustainable rate again: back to < 1% refused;
  4. soak: 0.75x the sustainable rate for --soak seconds (default 300), RSS of every process sampled every
     --rss-every seconds and printed before, after and over time (does the agents worker level off?).

    python scripts/devstack.py run bench/load.py [--soak 60] [--step 15] [--port 56000]

Per phase and operation: throughput, p50/p95/p99 and outcome counts (ok / shed / error). Every loop is bounded in
count and time; everything listens on 127.0.0.1. On a shared 2-core machine the figures are noisy: the load
average is printed with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import json
import os
import random
import socket
import subprocess
import sys
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # noqa: A001 - progress shows up while the test runs
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
# `devstack.py run` sets REDIS_URL: the stack's Redis, in a database of this test's own.
os.environ.setdefault("TEST_REDIS_URL", os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/13")
os.environ["SSRF_ALLOWED_NETWORKS"] = "127.0.0.0/8"  # the fake model listens on loopback (here and in the product)

from common import bench_django_setup, percentile  # noqa: E402

ORGS = 20
DOCS_PER_KB = 3
OPERATIONS = {"search": 30, "listing": 25, "chat_sse": 20, "chat_ws": 17, "upload": 8}  # relative weights
LATENCY_BOUND = {"search": 2.0, "listing": 2.0, "upload": 2.0, "chat_sse": 5.0, "chat_ws": 5.0}  # p99, seconds
MAX_IN_FLIGHT = 400  # arrivals beyond this are counted as client overflow, never queued in the client
REQUEST_TIMEOUT = 60.0
SHED_CODES = {"rate_limited", "concurrency_limited", "overloaded"}
TOPICS = [
    "Python lists are ordered, mutable sequences; tuples are immutable.",
    "A dictionary maps hashable keys to values and keeps insertion order.",
    "Generators produce values lazily with yield, one at a time.",
    "The GIL lets one thread run Python bytecode at a time in CPython.",
    "asyncio runs coroutines on an event loop; await yields control.",
    "Virtual environments isolate a project's installed packages.",
]
QUERIES = ["how do generators work", "what is the GIL", "mutable sequences", "event loop await", "dictionary order"]


def load_note() -> str:
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


def free_port(preferred: int | None) -> int:
    if preferred:
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- setup --------------------------------------------------------------------------------------------------------


@dataclass
class Org:
    slug: str
    host: str
    keys: list[str]
    kb_id: int
    agent_id: int


def setup_orgs(fake_url: str, port: int) -> list[Org]:
    """20 organisations, each with two API keys, a knowledge base with documents and an agent (reused across runs;
    the keys are new each run since only their hash is stored)."""
    bench_django_setup("agentry_bench_load")
    from django.conf import settings
    from django.db import connection
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from agents.models import Agent, ProviderCredential
    from agents.services import agent_create, provider_create, provider_update
    from iam.models import ApiKey
    from iam.policy import Principal
    from iam.services import api_key_create
    from knowledge.models import KnowledgeBase
    from knowledge.services import documents_ingest, knowledge_base_create, upload_from_text
    from tenants.models import Tenant
    from tenants.services import tenant_create

    orgs = []
    started = time.monotonic()
    for n in range(1, ORGS + 1):
        slug = f"load{n:02d}"
        owner, _ = User.objects.get_or_create(email=f"owner@{slug}.bench.test")
        tenant = Tenant.objects.filter(slug=slug).first() or tenant_create(name=f"Load {n}", slug=slug, owner=owner)
        principal = Principal(tenant=tenant, user=owner, role="admin")
        with tenant_context(tenant):
            ApiKey.objects.all().delete()  # the previous run's keys: their secrets are gone
            keys = [
                api_key_create(principal=principal, name=f"load-{i}", scopes=["read", "write", "chat"])[1]
                for i in range(2)
            ]
            provider = ProviderCredential.objects.filter(name="fake").first()
            if provider is None:
                provider = provider_create(
                    principal=principal,
                    name="fake",
                    kind="openai",
                    base_url=f"{fake_url}/v1",
                    api_key="sk-bench",
                    default_model="fake",
                )
            else:
                provider_update(provider=provider, data={"base_url": f"{fake_url}/v1"})
            kb = KnowledgeBase.objects.filter(name="docs").first()
            if kb is None:
                kb = knowledge_base_create(principal=principal, name="docs")
                uploads = [
                    upload_from_text(title=f"note {i}", text=" ".join(TOPICS[i:] + TOPICS[:i]) * 3)
                    for i in range(DOCS_PER_KB)
                ]
                documents_ingest(kb=kb, user=owner, uploads=uploads)
            agent = Agent.objects.filter(name="helper").first() or agent_create(
                principal=principal,
                data={"name": "helper", "provider_id": provider.pk, "knowledge_base_ids": [kb.pk]},
            )
        connection.set_schema_to_public()
        orgs.append(Org(slug, f"{slug}.{settings.BASE_DOMAIN}:{port}", keys, kb.pk, agent.pk))
    print(f"setup: {ORGS} organisations ready in {time.monotonic() - started:.1f} s")
    return orgs


def wait_documents_ready(orgs: list[Org], timeout: float) -> None:
    from django_tenants.utils import tenant_context

    from knowledge.models import Document
    from tenants.models import Tenant

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pending = 0
        for org in orgs:
            with tenant_context(Tenant.objects.get(slug=org.slug)):
                pending += Document.objects.filter(knowledge_base_id=org.kb_id).exclude(status="ready").count()
        if not pending:
            print("setup: every document is ingested")
            return
        time.sleep(2)
    raise SystemExit(f"{pending} documents still not ingested after {timeout:.0f} s")


# --- the product's processes --------------------------------------------------------------------------------------


def process_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="bench.chat_settings",  # deployed settings: limits cache, host cache
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="WARNING",  # what an operator would see: every line counted below
        DB_CONN_MAX_AGE="60",
    )
    return env


def start_processes(port: int, logs: Path) -> dict[str, subprocess.Popen]:
    from config.processes import AGENTS_WORKER, INGEST_WORKER, WEB, command

    node = f"load-{os.getpid()}"
    lines = {
        "web": command(WEB, port=str(port)),
        "ingest": [*INGEST_WORKER, "-n", f"{node}-ingest@%h", "--without-gossip", "--without-mingle"],
        "agents": [*AGENTS_WORKER, "-n", f"{node}-agents@%h", "--without-gossip", "--without-mingle"],
    }
    procs = {}
    for name, args in lines.items():
        procs[name] = subprocess.Popen(  # noqa: S603 - our interpreter, our command lines
            [sys.executable, "-m", *args],
            cwd=ROOT,
            env=process_env(),
            stdout=open(logs / f"load-{name}.log", "w"),  # noqa: SIM115 - closed when the process ends
            stderr=subprocess.STDOUT,
        )
    return procs


def wait_ready(procs: dict[str, subprocess.Popen], port: int, timeout: float = 180) -> None:
    from config.celery import app

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                raise SystemExit(f"{name} exited early (status {proc.returncode}); see var/load-{name}.log")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            replies = app.control.ping(timeout=1.0) or []
            if sum(1 for reply in replies for name in reply if name.startswith(f"load-{os.getpid()}")) >= 2:
                return
        time.sleep(1)
    raise SystemExit("the product did not start in time")


def stop_processes(procs: dict[str, subprocess.Popen]) -> None:
    for proc in procs.values():
        if proc.poll() is None:
            proc.terminate()
    for proc in procs.values():
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def rss_mb(procs: dict[str, subprocess.Popen]) -> dict[str, float]:
    """Resident memory of each process and of each worker's children (prefork pool processes)."""
    import psutil

    out = {}
    for name, proc in procs.items():
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(proc.pid)
            out[name] = parent.memory_info().rss / 2**20
            for i, child in enumerate(parent.children(recursive=True), start=1):
                with contextlib.suppress(psutil.Error):
                    out[f"{name}/child{i}"] = child.memory_info().rss / 2**20
    return out


# --- the client ---------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    op: str
    outcome: str  # ok, shed (429/503 with Retry-After), shed_without_retry_after, error
    latency: float
    detail: str = ""


@dataclass
class Phase:
    name: str
    rate: float
    seconds: float
    samples: list[Sample] = field(default_factory=list)
    overflow: int = 0
    offered: int = 0
    wall: float = 0.0


def _shed_or_error(status: int, headers, body: bytes) -> tuple[str, str]:
    if status in (429, 503):
        code = ""
        with contextlib.suppress(ValueError, AttributeError):
            code = json.loads(body).get("code", "")
        if headers.get("retry-after"):
            return "shed", f"{status} {code}"
        return "shed_without_retry_after", f"{status} {code}"
    return "error", f"{status} {body[:120]!r}"


def _event_outcome(data: dict) -> tuple[str, str]:
    """An error event in a chat stream: shed when it is a refusal carrying retry_after, an error otherwise."""
    code = data.get("code", "")
    if code in SHED_CODES:
        return ("shed" if data.get("retry_after") else "shed_without_retry_after"), f"event {code}"
    return "error", f"event {code or data}"


class Client:
    def __init__(self, port: int, orgs: list[Org]):
        import httpx

        self.port = port
        self.orgs = orgs
        self.http = httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            timeout=REQUEST_TIMEOUT,
            limits=httpx.Limits(max_connections=MAX_IN_FLIGHT, max_keepalive_connections=64),
        )
        self.rng = random.Random(14)  # noqa: S311 - workload mix, not security

    def _headers(self, org: Org) -> dict[str, str]:
        return {"Host": org.host, "Authorization": f"Api-Key {self.rng.choice(org.keys)}"}

    async def one(self, op: str) -> Sample:
        org = self.rng.choice(self.orgs)
        started = time.perf_counter()
        try:
            outcome, detail = await asyncio.wait_for(getattr(self, op)(org), REQUEST_TIMEOUT)
        except Exception as exc:  # noqa: BLE001 - any failure is a measured error, with its type
            outcome, detail = "error", f"{type(exc).__name__}: {str(exc)[:100]}"
        return Sample(op, outcome, time.perf_counter() - started, detail)

    async def search(self, org: Org) -> tuple[str, str]:
        response = await self.http.post(
            f"/api/v1/knowledge-bases/{org.kb_id}/search/",
            json={"query": self.rng.choice(QUERIES)},
            headers=self._headers(org),
        )
        return ("ok", "") if response.status_code == 200 else _shed_or_error(*_parts(response))

    async def listing(self, org: Org) -> tuple[str, str]:
        path = self.rng.choice(
            ["/api/v1/knowledge-bases/", "/api/v1/agents/", f"/api/v1/knowledge-bases/{org.kb_id}/documents/"]
        )
        response = await self.http.get(path, headers=self._headers(org))
        return ("ok", "") if response.status_code == 200 else _shed_or_error(*_parts(response))

    async def upload(self, org: Org) -> tuple[str, str]:
        text = " ".join(self.rng.sample(TOPICS, 3)) + f" ({self.rng.random()})"  # new content: a new version
        response = await self.http.post(
            f"/api/v1/knowledge-bases/{org.kb_id}/documents/",
            json={"title": f"upload {self.rng.randrange(10**9)}", "text": text},
            headers=self._headers(org),
        )
        return ("ok", "") if response.status_code in (200, 201, 202) else _shed_or_error(*_parts(response))

    async def chat_sse(self, org: Org) -> tuple[str, str]:
        headers = {**self._headers(org), "Accept": "text/event-stream"}
        async with self.http.stream(
            "POST", f"/api/v1/agents/{org.agent_id}/chat/", json={"message": self.rng.choice(QUERIES)}, headers=headers
        ) as response:
            if response.status_code != 200:
                return _shed_or_error(response.status_code, response.headers, await response.aread())
            event = ""
            async for line in response.aiter_lines():
                if line.startswith("event: "):
                    event = line[7:].strip()
                elif line.startswith("data: ") and event in ("message.end", "error"):
                    data = json.loads(line[6:])
                    data = data.get("data", data)
                    if event == "error":
                        return _event_outcome(data)
                    status = data.get("status")
                    return ("ok", "") if status == "complete" else ("error", f"message.end {status}")
        return "error", "stream ended without message.end"

    async def chat_ws(self, org: Org) -> tuple[str, str]:
        import websockets

        headers = self._headers(org)
        async with websockets.connect(
            f"ws://{org.host}/ws/agents/{org.agent_id}/chat/",
            host="127.0.0.1",
            port=self.port,
            open_timeout=30,
            additional_headers={"Authorization": headers["Authorization"]},
        ) as ws:
            with contextlib.suppress(websockets.ConnectionClosed):
                # A shed handshake is accepted, told why (an `overloaded` error event) and closed with 4503 at
                # once: the send may find it closed, the event is still read below.
                await ws.send(json.dumps({"type": "chat", "message": self.rng.choice(QUERIES)}))
            for _ in range(10_000):  # bounded: an answer is a few dozen events
                event = json.loads(await ws.recv())
                if event["type"] == "error":
                    return _event_outcome(event.get("data") or {})
                if event["type"] == "message.end":
                    status = event["data"].get("status")
                    return ("ok", "") if status == "complete" else ("error", f"message.end {status}")
        return "error", "too many events"

    async def close(self) -> None:
        await self.http.aclose()


def _parts(response) -> tuple[int, object, bytes]:
    return response.status_code, response.headers, response.content


async def run_phase(client: Client, name: str, rate: float, seconds: float) -> Phase:
    """Open loop: arrivals every 1/rate s for `seconds`, each an operation drawn by weight; then wait (bounded by the
    request timeout) for those in flight."""
    phase = Phase(name, rate, seconds)
    ops, weights = zip(*OPERATIONS.items(), strict=True)
    arrivals = max(1, int(rate * seconds))
    in_flight: set[asyncio.Task] = set()
    loop = asyncio.get_running_loop()
    start = loop.time()
    for i in range(arrivals):
        delay = start + i / rate - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        phase.offered += 1
        if len(in_flight) >= MAX_IN_FLIGHT:
            phase.overflow += 1
            continue
        task = asyncio.create_task(client.one(client.rng.choices(ops, weights)[0]))
        task.add_done_callback(lambda t: (in_flight.discard(t), phase.samples.append(t.result())))
        in_flight.add(task)
    if in_flight:
        await asyncio.wait(set(in_flight), timeout=REQUEST_TIMEOUT + 5)
    phase.wall = loop.time() - start
    return phase


# --- figures ------------------------------------------------------------------------------------------------------


def report(phase: Phase) -> dict[str, float]:
    """Print one phase's table; return its verdict figures."""
    by_op: dict[str, list[Sample]] = defaultdict(list)
    for sample in phase.samples:
        by_op[sample.op].append(sample)
    total = len(phase.samples)
    outcomes = Counter(s.outcome for s in phase.samples)
    print(
        f"\n== {phase.name}: offered {phase.rate:.1f}/s for {phase.seconds:.0f} s ({phase.offered} requests), "
        f"answered {total} in {phase.wall:.1f} s, client overflow {phase.overflow}; {load_note()}"
    )
    print(
        f"  {'operation':<10} {'n':>6} {'req/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'ok':>6} "
        f"{'shed':>6} {'err':>5} {'err %':>6}"
    )
    worst_p99_ratio = 0.0
    for op in OPERATIONS:
        samples = by_op.get(op, [])
        if not samples:
            continue
        ok = [s.latency for s in samples if s.outcome == "ok"] or [0.0]
        counts = Counter(s.outcome for s in samples)
        errors = len(samples) - counts["ok"] - counts["shed"]
        p99 = percentile(ok, 99)
        worst_p99_ratio = max(worst_p99_ratio, p99 / LATENCY_BOUND[op])
        print(
            f"  {op:<10} {len(samples):>6} {len(samples) / phase.wall:>7.1f} {percentile(ok, 50) * 1e3:>8.0f} "
            f"{percentile(ok, 95) * 1e3:>8.0f} {p99 * 1e3:>8.0f} {counts['ok']:>6} {counts['shed']:>6} "
            f"{errors:>5} {100 * errors / len(samples):>6.1f}"
        )
    details = Counter(s.detail for s in phase.samples if s.outcome != "ok")
    if details:
        print("  not ok: " + "; ".join(f"{d} x{n}" for d, n in details.most_common(8)))
    shed = outcomes["shed"] + outcomes["shed_without_retry_after"]
    errors = total - outcomes["ok"] - shed
    return {
        "total": total,
        "ok": outcomes["ok"],
        "shed": shed,
        "shed_without_retry_after": outcomes["shed_without_retry_after"],
        "errors": errors,
        "not_ok_fraction": (total - outcomes["ok"] + phase.overflow) / max(1, phase.offered),
        "answered_fraction": total / max(1, phase.offered),
        "worst_p99_ratio": worst_p99_ratio,
        "throughput": outcomes["ok"] / max(phase.wall, 1e-9),
    }


def sustainable(verdict: dict[str, float]) -> bool:
    return (
        verdict["not_ok_fraction"] < 0.01 and verdict["answered_fraction"] >= 0.95 and verdict["worst_p99_ratio"] <= 1
    )


def refusal_metrics() -> dict[str, float]:
    from core.redis_clients import redis_client

    out: dict[str, float] = {}
    r = redis_client()
    for name in ("rate_limited_total", "quota_refusals_total", "in_flight_refusals_total"):
        for labels, value in r.hgetall(f"metrics:c:{name}").items():
            out[f"{name}{json.loads(labels)}"] = float(value)
    return out


def log_lines(logs: Path) -> dict[str, tuple[int, int]]:
    """Per process log: (lines at WARNING or above, of which refusal summaries)."""
    out = {}
    for path in sorted(logs.glob("load-*.log")):
        warn = summaries = 0
        with path.open(errors="replace") as fh:
            for line in fh:
                if '"level": "WARNING"' in line or '"level": "ERROR"' in line or '"level": "CRITICAL"' in line:
                    warn += 1
                    summaries += "refused " in line and " requests in the last " in line
        out[path.stem] = (warn, summaries)
    return out


def print_rss(label: str, rss: dict[str, float]) -> None:
    print(f"  RSS {label}: " + ", ".join(f"{name} {mb:.0f} MB" for name, mb in rss.items()))


# --- main ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--soak", type=float, default=300, help="soak seconds (default 300)")
    parser.add_argument("--step", type=float, default=20, help="seconds per ladder step (default 20)")
    parser.add_argument("--overload", type=float, default=30, help="seconds at twice the sustainable rate")
    parser.add_argument("--recovery", type=float, default=30, help="seconds at the sustainable rate afterwards")
    parser.add_argument("--start-rate", type=float, default=4, help="first ladder rate, requests/s (default 4)")
    parser.add_argument("--max-rate", type=float, default=256, help="the ladder stops here")
    parser.add_argument("--rss-every", type=float, default=10, help="RSS sample interval in the soak")
    parser.add_argument("--port", type=int, default=0, help="the web process's port (default: a free one)")
    args = parser.parse_args(sys.argv[1:])

    from agents.tests.fakes import FakeOpenAI

    fake = FakeOpenAI([{"text": [f" part{i}" for i in range(20)], "delay": 0.01}]).start()
    port = free_port(args.port)
    orgs = setup_orgs(fake.url, port)
    logs = ROOT / "var"
    logs.mkdir(exist_ok=True)
    procs = start_processes(port, logs)
    try:
        wait_ready(procs, port)
        wait_documents_ready(orgs, timeout=600)
        asyncio.run(run(args, procs, orgs, port, logs))
    finally:
        stop_processes(procs)
        fake.stop()


async def run(args: argparse.Namespace, procs: dict[str, subprocess.Popen], orgs: list[Org], port: int, logs: Path):
    client = Client(port, orgs)
    print(f"machine: {load_note()}; web on 127.0.0.1:{port}; mix {OPERATIONS}")
    print_rss("at start", rss_mb(procs))
    try:
        await run_phase(client, "warm-up", 2, 10)

        best, rate, verdicts = 0.0, args.start_rate, {}
        while rate <= args.max_rate:
            verdict = report(await run_phase(client, f"ladder {rate:g}/s", rate, args.step))
            verdicts[rate] = verdict
            if not sustainable(verdict):
                break
            best, rate = rate, rate * 2
        if best and rate <= args.max_rate:  # one step between the last good rate and the first bad one
            middle = (best + rate) / 2
            verdict = report(await run_phase(client, f"ladder {middle:g}/s", middle, args.step))
            verdicts[middle] = verdict
            if sustainable(verdict):
                best = middle
        rate = args.start_rate / 2
        while not best and rate >= args.start_rate / 8:  # the first step failed: halve, three times at most
            verdict = report(await run_phase(client, f"ladder {rate:g}/s", rate, args.step))
            verdicts[rate] = verdict
            best = rate if sustainable(verdict) else 0.0
            rate /= 2
        if not best:
            best = args.start_rate / 16
            print(f"\nno rate down to {args.start_rate / 8:g}/s was sustainable; going on with {best:g}/s")
        print(f"\n=> sustainable rate: {best:g} requests/s (mixed operations)")

        metrics_before = refusal_metrics()
        overload = report(await run_phase(client, f"overload 2x = {2 * best:g}/s", 2 * best, args.overload))
        metrics_after = refusal_metrics()
        recovery = report(await run_phase(client, f"recovery {best:g}/s", best, args.recovery))
        alive = {name: proc.poll() is None for name, proc in procs.items()}

        soak_rate = 0.75 * best
        rss_series: list[tuple[float, dict[str, float]]] = [(0.0, rss_mb(procs))]
        soak_task = asyncio.create_task(run_phase(client, f"soak {soak_rate:g}/s", soak_rate, args.soak))
        started = time.monotonic()
        while not soak_task.done() and time.monotonic() - started < args.soak + REQUEST_TIMEOUT + 30:
            await asyncio.wait({soak_task}, timeout=args.rss_every)
            rss_series.append((time.monotonic() - started, rss_mb(procs)))
        soak = report(await soak_task)
    finally:
        await client.close()

    print("\n== summary")
    print(
        f"  sustainable rate {best:g}/s; ladder: "
        + ", ".join(
            f"{r:g}/s {'ok' if sustainable(v) else 'NOT sustainable'} (ok {v['throughput']:.1f}/s)"
            for r, v in verdicts.items()
        )
    )
    shed_pct = 100 * overload["shed"] / max(1, overload["total"])
    print(
        f"  overload at {2 * best:g}/s: {overload['ok']} ok, {overload['shed']} shed ({shed_pct:.1f}%), "
        f"{overload['shed_without_retry_after']} shed WITHOUT Retry-After, {overload['errors']} other errors"
    )
    grew = {k: v - metrics_before.get(k, 0) for k, v in metrics_after.items() if v != metrics_before.get(k, 0)}
    print(
        "  refusals counted in metrics during the overload: "
        + (", ".join(f"{k} +{v:.0f}" for k, v in grew.items()) or "none")
    )
    print(
        f"  recovery at {best:g}/s: {100 * recovery['not_ok_fraction']:.2f}% not ok "
        f"({'recovered' if recovery['not_ok_fraction'] < 0.01 else 'NOT recovered'})"
    )
    print("  processes alive after the overload: " + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in alive.items()))
    print(
        f"  soak at {soak_rate:g}/s for {args.soak:g} s: {soak['ok']} ok, {soak['shed']} shed, {soak['errors']} errors"
    )
    print_rss("before soak", rss_series[0][1])
    print_rss("after soak ", rss_series[-1][1])
    print("  RSS over the soak (MB):")
    names = list(rss_series[0][1])
    print("    " + f"{'t s':>6} " + " ".join(f"{n:>14}" for n in names))
    for at, sample in rss_series:
        print("    " + f"{at:>6.0f} " + " ".join(f"{sample.get(n, float('nan')):>14.1f}" for n in names))
    for name in names:
        values = [sample.get(name) for _, sample in rss_series if sample.get(name) is not None]
        if len(values) >= 4:
            third = max(1, len(values) // 3)
            first, last = values[third] - values[0], values[-1] - values[-third - 1]
            print(
                f"  {name}: +{values[-1] - values[0]:.1f} MB over the soak; first third +{first:.1f} MB, "
                f"last third +{last:.1f} MB"
            )
    for name, (warn, summaries) in log_lines(logs).items():
        print(f"  log {name}: {warn} lines at WARNING or above, {summaries} of them refusal summaries")


if __name__ == "__main__":
    main()
