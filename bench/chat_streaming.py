"""Chat streaming benchmark.

Real processes: one daphne web process and one agents worker (Celery, threads pool, queue "agents"), Redis in
between, and a loopback fake OpenAI-compatible server (agents/tests/fakes.py) as the model.

1. Time to first token and per-token overhead, through WebSocket and SSE, vs reading the fake provider directly
   with the official SDK (ratios and absolute overheads).
2. How many concurrent WebSocket streams one daphne process holds with p99 inter-token delay under 100 ms, from 10
   to 1,000 streams (STREAM_LEVELS; the model fake runs in a process of its own there, and arrivals ramp so that
   the streams of a level overlap: the table says how many were open at once). Per level: gaps, time to first
   token, CPU ms per 1,000 tokens delivered (web and worker processes) and web memory per open stream. A level
   with more than half of its streams failed ends the part (bounded).

    python scripts/devstack.py run bench/chat_streaming.py [--quick] [--limits-cache] [--ttft-only] [--streams-only]
        [--compare DIR] [--port N] [--levels 10,100,1000] [--reps N] [--uvicorn] [--db NAME]

--compare DIR runs a second stack (web + worker) from another checkout of the product (e.g. the code before a
change, extracted with `git archive`) beside this one, against the same database, Redis and model fakes; every
measurement takes turns between the two, so the before/after ratios come from the same run and the same load.
--uvicorn adds a uvicorn process serving this checkout's application beside daphne (benchmark only: the product
serves with daphne) when uvicorn is installed. --port N: the web processes listen on N, N+1, ... (else free ports).
--db NAME: the benchmark's database (default agentry_bench_chat), so that benchmarks run side by side stay apart.

--limits-cache runs the web and worker processes with the quota-limits cache at its production default (10 s);
without it they use the test settings (cache off: every request reads plan, override and sub-limits).
--ttft-only skips part 2. The paths of part 1 take turns (direct, WebSocket, SSE, bare request, again), so a drift
in the machine's speed (shared CPUs) reaches each of them alike.
The machine's load average is printed before and after: on a busy 2-core machine it shows up as latency.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
print = functools.partial(print, flush=True)  # noqa: A001 - progress shows up while the benchmark runs
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
# `devstack.py run` sets REDIS_URL: the running stack's Redis, in a database of the benchmark's own.
os.environ.setdefault("TEST_REDIS_URL", os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/12")
os.environ["SSRF_ALLOWED_NETWORKS"] = "127.0.0.0/8"  # the fake model listens on loopback (saving it is checked too)

from common import bench_django_setup, percentile  # noqa: E402

TOKENS = 30
PACE = 0.02  # seconds between tokens from the fake model (50 tokens/s, a typical hosted-model speed)
STREAM_TOKENS = 60  # part 2: long enough that a level's streams are open at the same time
STREAM_LEVELS = [10, 50, 100, 200, 500, 1000]
SPANS: list[tuple[float, float]] = []  # part 2: (first byte sent, message.end received) per stream, monotonic
QUESTION = "Say something"
PHASES: list[dict[str, float]] = []  # per WebSocket run: where the time to first token goes
SSE_PHASES: list[dict[str, float]] = []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_note() -> str:
    """Load average and CPUs: the figures depend on it (other work on a 2-core machine shows up as latency)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} (1/5/15 min) on {os.cpu_count()} CPUs"


def wait_port(port: int, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + 180  # a loaded 2-core machine starts Django slowly
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"{what} did not start")


def setup():
    bench_django_setup(option("--db") or "agentry_bench_chat")
    from django.db import connection
    from django_tenants.utils import tenant_context

    from accounts.models import User
    from agents.models import Agent, ProviderCredential
    from agents.services import agent_create, provider_create
    from iam.policy import Principal
    from iam.services import api_key_create
    from tenants.models import Tenant
    from tenants.services import tenant_create

    owner, _ = User.objects.get_or_create(email="bench-chat@bench.test")
    tenant = Tenant.objects.filter(slug="benchchat").first() or tenant_create(
        name="Bench", slug="benchchat", owner=owner
    )
    principal = Principal(tenant=tenant, user=owner, role="admin")
    with tenant_context(tenant):
        Agent.objects.all().delete()
        ProviderCredential.objects.all().delete()
        provider = provider_create(
            principal=principal,
            name="fake",
            kind="openai",
            base_url="http://127.0.0.1:1/v1",
            api_key="sk-bench",
            default_model="fake",
        )
        agent = agent_create(
            principal=principal,
            data={"name": "bench", "provider_id": provider.pk, "limits": {"max_concurrent_runs": 1000}},
        )
        _, raw_key = api_key_create(principal=principal, name=f"bench-{time.time()}", scopes=["chat", "read"])
    connection.set_schema_to_public()
    return tenant, principal, provider, agent, raw_key


def point_provider_at(tenant, provider, url: str) -> None:
    from django_tenants.utils import tenant_context

    from agents.services import provider_update

    with tenant_context(tenant):
        provider_update(provider=provider, data={"base_url": url})


def process_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        # --limits-cache: plan/sub-limits cached per process for 10 s, as deployed (the test settings turn it off)
        DJANGO_SETTINGS_MODULE="bench.chat_settings" if "--limits-cache" in sys.argv else "config.settings.test",
        PYTHONUNBUFFERED="1",
        SSRF_ALLOWED_NETWORKS="127.0.0.0/8",
        AGENTS_MAX_CONCURRENT_RUNS_PER_TENANT="1000",
        LOG_LEVEL="WARNING",
        DB_CONN_MAX_AGE="60",  # persistent DB connections, as deployed
        # The shared chat pool (quotas) is an admission policy; this measures streaming capacity.
        CHAT_POOL_SLOTS="1000",
        CHAT_QUEUE_MAX="1000",
        # ... and so are the per-key chat rate and the web process's admission bound: both would refuse streams here.
        RATE_LIMITS='{"chat": "100000/m", "ws_message": "100000/m"}',
        RATE_LIMITS_TENANT='{"chat": "100000/m", "ws_message": "100000/m"}',
        RATE_LIMIT_PRINCIPAL_SHARE="1",
        WEB_MAX_CONCURRENT="64",
        WEB_ADMISSION_WAIT_SECONDS="60",
        WEB_PRELOAD_EMBEDDER="false",  # no search here: the model's ~480 MB would hide the memory per stream
        WORKER_PRELOAD_EMBEDDER="false",  # ... and loading it (torch) would take the worker's CPU while levels run
    )
    return env


def option(name: str, default: str | None = None) -> str | None:
    return sys.argv[sys.argv.index(name) + 1] if name in sys.argv else default


class Stack:
    """One product checkout's web process and agents worker (threads pool), as `make up` runs them."""

    def __init__(self, label: str, root: Path, port: int, server: str = "daphne"):
        self.label, self.root, self.port = label, root, port
        logs = ROOT / "var"
        logs.mkdir(exist_ok=True)
        env = process_env()
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")]))
        self.broker_prefix = f"bench-{label if server == 'daphne' else 'after'}:"  # see bench/chat_settings.py
        env["BENCH_BROKER_PREFIX"] = self.broker_prefix
        if server == "uvicorn":
            cmd = ["uvicorn", "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", "--no-access-log"]
            web_cmd = [sys.executable, "-m", *cmd, "config.asgi:application"]
        else:
            web_cmd = [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"]
        self.web = subprocess.Popen(  # noqa: S603
            web_cmd, cwd=root, env=env, stdout=open(logs / f"bench-chat-{label}-web.log", "w"), stderr=subprocess.STDOUT
        )  # noqa: SIM115
        self.worker: subprocess.Popen | None = None
        if server == "uvicorn":
            return  # shares the daphne stack's worker (same checkout)
        self.worker = subprocess.Popen(  # noqa: S603
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "config",
                "worker",
                "--pool=threads",
                "--concurrency=1000",  # bounded by the largest level: no run waits for a thread
                "-Q",
                "agents",
                "-n",
                f"bench-chat-{label}-{os.getpid()}@%h",
                "--without-gossip",
                "--without-mingle",
                "-l",
                "warning",
            ],
            cwd=root,
            env=env,
            stdout=open(logs / f"bench-chat-{label}-worker.log", "w"),  # noqa: SIM115
            stderr=subprocess.STDOUT,
        )

    def procs(self) -> list[subprocess.Popen]:
        return [p for p in (self.web, self.worker) if p is not None]

    def stop(self) -> None:
        for proc in self.procs():
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class PeakRss:
    """The largest resident size of a process while a level runs (sampled every 50 ms on a thread)."""

    def __init__(self, pid: int):
        self.pid, self.peak, self._stop = pid, rss_kib(pid), threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.peak = max(self.peak, rss_kib(self.pid))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


def most_open(spans: list[tuple[float, float]]) -> int:
    """The most streams open at the same moment."""
    edges = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    most = now = 0
    for _, step in edges:
        now += step
        most = max(most, now)
    return most


def wait_worker(stack: Stack) -> None:
    """Until the stack's worker answers a ping on its own broker prefix (a ping without it reaches no worker). The
    probe is an app of its own: a kombu Connection with the prefix passed to control.ping got no reply."""
    from celery import Celery

    from config.celery import app

    probe = Celery(broker=app.conf.broker_url, set_as_current=False)
    probe.conf.broker_transport_options = {**app.conf.broker_transport_options, "global_keyprefix": stack.broker_prefix}
    try:
        for _ in range(360):  # as long as wait_port: a loaded 2-core machine starts Celery slowly
            if probe.control.ping(timeout=0.5):
                return
            if stack.worker is not None and stack.worker.poll() is not None:
                raise SystemExit(f"{stack.label} worker exited early")
    finally:
        probe.close()
    raise SystemExit(f"{stack.label} worker did not answer a ping")


def fake_model_process(tokens: int, pace: float) -> tuple[subprocess.Popen, str]:
    """The model fake in a process of its own: at hundreds of streams it must not share the clients' interpreter."""
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from agents.tests import fakes; "
        "fakes._Server.request_queue_size = 4096; "  # listen backlog: a thousand clients connect within a second
        "f = fakes.FakeOpenAI([{'text': [f' t{i}' for i in range(int(sys.argv[2]))], 'delay': float(sys.argv[3])}]); "
        "f.start(); print(f.url, flush=True); time.sleep(86400)"
    )
    proc = subprocess.Popen(  # noqa: S603
        [sys.executable, "-c", code, str(ROOT), str(tokens), str(pace)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, proc.stdout.readline().strip()


# --- clients --------------------------------------------------------------------------------------------


async def direct_stream(url: str) -> list[float]:
    """Token arrival times (relative to the request) reading the fake provider with the SDK."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="sk", max_retries=0)
    start = time.perf_counter()
    stream = await client.chat.completions.create(
        model="fake", messages=[{"role": "user", "content": QUESTION}], stream=True
    )
    times = []
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            times.append(time.perf_counter() - start)
    await client.close()
    return times


async def ws_stream(port: int, agent_id: int, key: str, delay: float = 0.0) -> list[float]:
    import websockets

    await asyncio.sleep(delay)  # clients arrive spread out, not all in the same millisecond
    uri = f"ws://benchchat.localhost:{port}/ws/agents/{agent_id}/chat/"
    async with websockets.connect(
        uri,
        host="127.0.0.1",
        port=port,
        open_timeout=30,
        max_queue=None,
        additional_headers={"Authorization": f"Api-Key {key}"},
        origin=f"http://benchchat.localhost:{port}",
    ) as ws:
        start = time.perf_counter()
        wall = time.time()
        opened = time.monotonic()
        await ws.send(json.dumps({"type": "chat", "message": QUESTION}))
        times = []
        phases: dict[str, float] = {}
        while True:
            event = json.loads(await asyncio.wait_for(ws.recv(), timeout=120))
            if event["type"] == "run.accepted":
                phases["accepted"] = time.perf_counter() - start  # chat_start done (web side)
            elif event["type"] == "message.start":
                phases["worker_start"] = event["ts"] - wall  # the worker emitted message.start (same clock)
            if event["type"] == "token":
                if not times:
                    phases["token_emitted"] = event["ts"] - wall  # the worker wrote the first token
                    phases["token_received"] = time.perf_counter() - start
                    PHASES.append(phases)
                times.append(time.perf_counter() - start)
            elif event["type"] == "message.end":
                if event["data"]["status"] != "complete":
                    raise RuntimeError(f"run incomplete: {event}")
                SPANS.append((opened, time.monotonic()))
                return times
            elif event["type"] == "error":
                raise RuntimeError(f"error event: {event}")


async def sse_stream(port: int, agent_id: int, key: str) -> list[float]:
    import httpx

    async with httpx.AsyncClient(timeout=120) as http:
        start = time.perf_counter()
        wall = time.time()
        times = []
        async with http.stream(
            "POST",
            f"http://127.0.0.1:{port}/api/v1/agents/{agent_id}/chat/",
            json={"message": QUESTION},
            headers={
                "Host": f"benchchat.localhost:{port}",
                "Accept": "text/event-stream",
                "Authorization": f"Api-Key {key}",
            },
        ) as response:
            headers_at = time.perf_counter() - start  # auth, limits and chat_start done (the view returned)
            if response.status_code != 200:
                raise RuntimeError(f"SSE chat refused: {response.status_code} {(await response.aread())[:300]!r}")
            phases: dict[str, float] = {"headers": headers_at}
            async for line in response.aiter_lines():
                if line.startswith("data: ") and "worker_start" not in phases and '"message.start"' in line:
                    phases["worker_start"] = json.loads(line[6:])["ts"] - wall
                    phases["start_received"] = time.perf_counter() - start
                if line.startswith("event: token"):
                    if not times:
                        phases["token_received"] = time.perf_counter() - start
                        SSE_PHASES.append(phases)
                    times.append(time.perf_counter() - start)
                elif line.startswith("event: message.end"):
                    return times
    return times


async def bare_request(port: int) -> float:
    """A bare request through the same daphne and tenant host (GET /healthz, new connection like the SSE client):
    the HTTP cost any SSE chat pays before its own work."""
    import httpx

    async with httpx.AsyncClient(timeout=30) as http:
        start = time.perf_counter()
        response = await http.get(f"http://127.0.0.1:{port}/healthz", headers={"Host": f"benchchat.localhost:{port}"})
        response.raise_for_status()
        return time.perf_counter() - start


def measured(name: str, measure):
    """One measurement after a 100 ms pause (the previous run's tail, the worker saving and metering it, finishes
    first). A refused or empty run is reported and measured again, never counted as a sample."""
    for attempt in range(3):
        time.sleep(0.1 * (attempt * 10 + 1))
        try:
            result = asyncio.run(measure())
        except RuntimeError as exc:
            print(f"  {name}: {exc}; measuring again")
            continue
        if result != []:
            return result
        print(f"  {name}: the stream carried no token; measuring again")
    raise SystemExit(f"{name}: three failed runs in a row")


def stats_of(samples: list[list[float]]) -> dict[str, float]:
    ttft = [s[0] for s in samples]
    gaps = [b - a for s in samples for a, b in zip(s, s[1:], strict=False)]
    return {
        "ttft": statistics.median(ttft),
        "gap": statistics.mean(gaps),
        "gap_p99": percentile(gaps, 99),
        "total": statistics.median([s[-1] for s in samples]),
    }


def part1(stacks: list[Stack], tenant, provider, agent, key, paced, burst, reps: int) -> None:
    for label, fake in (("paced (20 ms/token)", paced), ("burst (no delay)", burst)):
        point_provider_at(tenant, provider, fake.url + "/v1")
        for stack in stacks:
            for _ in range(2):  # warm up: imports, compiled config, connections
                asyncio.run(ws_stream(stack.port, agent.pk, key))
                asyncio.run(sse_stream(stack.port, agent.pk, key))
        # Round robin: the machine's speed drifts (shared CPUs), and each path and stack should see the same drift.
        # A pause before each measurement lets the previous run's tail (the worker saving the message and metering
        # it) finish first, so no path is timed while another one's background work still runs.
        samples: dict[str, list] = {"direct": []}
        phases: dict[str, list] = {}
        for _ in range(reps):
            samples["direct"].append(measured("direct", lambda url=fake.url + "/v1": direct_stream(url)))
            for stack in stacks:
                for name, measure in (
                    ("websocket", lambda port=stack.port: ws_stream(port, agent.pk, key)),
                    ("sse", lambda port=stack.port: sse_stream(port, agent.pk, key)),
                    ("bare", lambda port=stack.port: bare_request(port)),
                ):
                    samples.setdefault(f"{name}/{stack.label}", []).append(measured(name, measure))
                    if name == "websocket":
                        phases.setdefault(f"websocket/{stack.label}", []).append(PHASES[-1])
                    elif name == "sse":
                        phases.setdefault(f"sse/{stack.label}", []).append(SSE_PHASES[-1])
        base = stats_of(samples["direct"])
        print(f"\n{label}, median of {reps} runs each:")
        print(
            f"  {'path':16} {'TTFT ms':>9} {'ratio':>7} {'+TTFT ms':>9} {'mean gap ms':>12} "
            f"{'+per token ms':>14} {'total ms':>9}"
        )
        rows = {"direct": base} | {
            f"{name}/{stack.label}": stats_of(samples[f"{name}/{stack.label}"])
            for stack in stacks
            for name in ("websocket", "sse")
        }
        for name, r in rows.items():
            print(
                f"  {name:16} {r['ttft'] * 1e3:9.2f} {r['ttft'] / base['ttft']:7.2f} "
                f"{(r['ttft'] - base['ttft']) * 1e3:9.2f} {r['gap'] * 1e3:12.3f} "
                f"{(r['gap'] - base['gap']) * 1e3:14.3f} {r['total'] * 1e3:9.1f}"
            )
        for stack in stacks:
            ws_phases, sse_phases = phases[f"websocket/{stack.label}"], phases[f"sse/{stack.label}"]
            bare = statistics.median(samples[f"bare/{stack.label}"])
            med = {k: statistics.median(p[k] for p in ws_phases) * 1e3 for k in ws_phases[0]}
            print(
                f"  [{stack.label}] websocket breakdown (medians, ms after the client sent): chat_start done "
                f"(run.accepted) {med['accepted']:.1f}, worker message.start {med['worker_start']:.1f}, first token "
                f"written {med['token_emitted']:.1f}, first token received {med['token_received']:.1f}"
            )
            sse_ttft = rows[f"sse/{stack.label}"]["ttft"]
            print(
                f"  [{stack.label}] bare request (GET /healthz) p50 {bare * 1e3:.2f} ms; SSE TTFT / (bare request + "
                f"direct TTFT) = {sse_ttft / (bare + base['ttft']):.2f}"
            )
            sse_med = {k: statistics.median(p[k] for p in sse_phases) * 1e3 for k in sse_phases[0]}
            print(
                f"  [{stack.label}] sse breakdown (medians, ms after the request started): response headers "
                f"{sse_med['headers']:.1f}, worker message.start {sse_med['worker_start']:.1f} (received "
                f"{sse_med['start_received']:.1f}), first token received {sse_med['token_received']:.1f}"
            )


def stream_level(stack: Stack, worker_pid: int, agent_id: int, key: str, n: int) -> dict | None:
    """n WebSocket streams arriving over max(0.5 s, n / 1000 s): the figures of one level on one stack."""
    ramp = max(0.5, n / 1000)

    async def many():
        return await asyncio.gather(
            *(ws_stream(stack.port, agent_id, key, ramp * i / n) for i in range(n)), return_exceptions=True
        )

    SPANS.clear()
    cpu_before = {pid: cpu_seconds(pid) for pid in (stack.web.pid, worker_pid)}
    rss_before = rss_kib(stack.web.pid)
    peak = PeakRss(stack.web.pid)
    outcomes = asyncio.run(many())
    rss_peak = peak.stop()
    cpu = {pid: cpu_seconds(pid) - before for pid, before in cpu_before.items()}
    samples = [s for s in outcomes if isinstance(s, list) and s]
    failed = len(outcomes) - len(samples)
    if failed:
        kinds = sorted({f"{type(s).__name__}: {str(s)[:120]}" for s in outcomes if not isinstance(s, list)})
        print(f"  [{stack.label}] {n} streams: {failed} failed ({'; '.join(kinds)[:400]})")
    if not samples:
        return None
    gaps = [b - a for s in samples for a, b in zip(s, s[1:], strict=False)]
    kilotokens = len(samples) * STREAM_TOKENS / 1000
    return {
        "failed": failed,
        "open": most_open(SPANS),
        "p50": statistics.median(gaps),
        "p99": percentile(gaps, 99),
        "max": max(gaps),
        "ttft": statistics.median([s[0] for s in samples]),
        "events": statistics.median([len(s) for s in samples]),
        "web_cpu": cpu[stack.web.pid] * 1e3 / kilotokens,
        "worker_cpu": cpu[worker_pid] * 1e3 / kilotokens,
        "kib_per_stream": max(0, rss_peak - rss_before) / max(1, most_open(SPANS)),
        "web_rss": rss_peak,
    }


def part2(stacks: list[Stack], tenant, provider, agent, key, levels: list[int]) -> None:
    model, url = fake_model_process(STREAM_TOKENS, PACE)
    try:
        point_provider_at(tenant, provider, url + "/v1")
        for stack in stacks:
            asyncio.run(ws_stream(stack.port, agent.pk, key))  # warm up against this fake
        print(
            f"\nconcurrent WebSocket streams per web process ({STREAM_TOKENS} tokens at {PACE * 1e3:.0f} ms each; "
            f"model fake in its own process):"
        )
        print(
            f"  {'stack':10} {'streams':>7} {'open':>5} {'failed':>6} {'p50 gap':>8} {'p99 gap':>8} {'max gap':>8} "
            f"{'p50 TTFT':>9} {'events':>6} {'web CPU':>8} {'wkr CPU':>8} {'web KiB':>8} {'web RSS':>8}"
        )
        print(
            f"  {'':10} {'':>7} {'':>5} {'':>6} {'ms':>8} {'ms':>8} {'ms':>8} {'ms':>9} {'/strm':>6} "
            f"{'ms/1kt':>8} {'ms/1kt':>8} {'/stream':>8} {'MiB':>8}"
        )
        best = {stack.label: 0 for stack in stacks}
        alive = {stack.label: True for stack in stacks}
        workers = {stack.label: stack.worker.pid for stack in stacks if stack.worker is not None}
        for n in levels:
            for stack in stacks:
                if not alive[stack.label]:
                    continue
                time.sleep(1.0)  # the previous level's tails (saving, metering) finish first
                worker_pid = workers.get(stack.label) or workers[stacks[0].label]
                r = stream_level(stack, worker_pid, agent.pk, key, n)
                if r is None or r["failed"] > n / 2:
                    alive[stack.label] = False
                    continue
                print(
                    f"  {stack.label:10} {n:7d} {r['open']:5d} {r['failed']:6d} {r['p50'] * 1e3:8.2f} "
                    f"{r['p99'] * 1e3:8.2f} {r['max'] * 1e3:8.1f} {r['ttft'] * 1e3:9.1f} {r['events']:6.0f} "
                    f"{r['web_cpu']:8.1f} {r['worker_cpu']:8.1f} {r['kib_per_stream']:8.1f} {r['web_rss'] / 1024:8.1f}"
                )
                if r["p99"] < 0.1 and not r["failed"] and best[stack.label] == n_prev(levels, n):
                    best[stack.label] = n
        for stack in stacks:
            print(
                f"  => [{stack.label}] holds {best[stack.label]} streams with p99 inter-token gap < 100 ms "
                f"(every level up to it passed)"
            )
    finally:
        model.terminate()


def n_prev(levels: list[int], n: int) -> int:
    index = levels.index(n)
    return levels[index - 1] if index else 0


def main() -> None:
    quick = "--quick" in sys.argv
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request would drown the tables
    tenant, _, provider, agent, key = setup()
    logging.getLogger("httpx").setLevel(logging.WARNING)
    from agents.tests.fakes import FakeOpenAI

    paced = FakeOpenAI([{"text": [f" t{i}" for i in range(TOKENS)], "delay": PACE}]).start()
    burst = FakeOpenAI([{"text": [f" t{i}" for i in range(TOKENS)]}]).start()
    base_port = int(option("--port", "0") or 0)
    ports = iter(range(base_port, base_port + 10)) if base_port else None

    def next_port() -> int:
        return next(ports) if ports is not None else free_port()

    stacks = [Stack("after" if "--compare" in sys.argv else "this", ROOT, next_port())]
    if "--compare" in sys.argv:
        stacks.append(Stack("before", Path(option("--compare") or "").resolve(), next_port()))
    if "--uvicorn" in sys.argv:
        stacks.append(Stack("uvicorn", ROOT, next_port(), server="uvicorn"))
    try:
        for stack in stacks:
            wait_port(stack.port, stack.web, f"{stack.label} web")
        for stack in stacks:
            if stack.worker is not None:
                wait_worker(stack)
        print(f"machine load before: {load_note()}")
        print(
            f"chat streaming: fake model {TOKENS} tokens; stacks: "
            + ", ".join(f"{s.label} ({s.root}, {'uvicorn' if s.worker is None else 'daphne'})" for s in stacks)
            + "; per stack 1 web process and 1 agents worker process (threads pool)"
        )
        print(f"settings: {process_env()['DJANGO_SETTINGS_MODULE']}")
        if "--streams-only" not in sys.argv:
            part1(stacks, tenant, provider, agent, key, paced, burst, int(option("--reps") or (5 if quick else 15)))
            print(f"machine load: {load_note()}")
        if "--ttft-only" not in sys.argv:
            levels = [int(n) for n in (option("--levels") or "").split(",") if n] or (
                [10, 50, 100] if quick else STREAM_LEVELS
            )
            part2(stacks, tenant, provider, agent, key, levels)
        print(f"machine load after: {load_note()}")
    finally:
        for stack in stacks:
            stack.stop()
        paced.stop()
        burst.stop()


if __name__ == "__main__":
    main()
