"""Chat streaming benchmark.

Real processes: one daphne web process and one agents worker (Celery, threads pool, queue "agents"), Redis in
between, and a loopback fake OpenAI-compatible server (agents/tests/fakes.py) as the model.

1. Time to first token and per-token overhead, through WebSocket and SSE, vs reading the fake provider directly
   with the official SDK (ratios and absolute overheads).
2. How many concurrent WebSocket streams one daphne process holds with p99 inter-token delay under 100 ms.

    python scripts/devstack.py run bench/chat_streaming.py [--quick] [--limits-cache] [--ttft-only]

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
import os
import socket
import statistics
import subprocess
import sys
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
    deadline = time.monotonic() + 60
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
    bench_django_setup("agentry_bench_chat")
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
    )
    return env


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


def main() -> None:
    quick = "--quick" in sys.argv
    tenant, _, provider, agent, key = setup()
    from agents.tests.fakes import FakeOpenAI

    paced = FakeOpenAI([{"text": [f" t{i}" for i in range(TOKENS)], "delay": PACE}]).start()
    burst = FakeOpenAI([{"text": [f" t{i}" for i in range(TOKENS)]}]).start()
    port = free_port()
    logs = ROOT / "var"
    logs.mkdir(exist_ok=True)
    web = subprocess.Popen(
        [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "config.asgi:application"],
        cwd=ROOT,
        env=process_env(),
        stdout=open(logs / "bench-chat-daphne.log", "w"),
        stderr=subprocess.STDOUT,
    )  # noqa: SIM115
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool=threads",
            "--concurrency=200",
            "-Q",
            "agents",
            "-n",
            f"bench-chat-{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "warning",
        ],
        cwd=ROOT,
        env=process_env(),
        stdout=open(logs / "bench-chat-worker.log", "w"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    try:
        wait_port(port, web, "daphne")
        from config.celery import app

        for _ in range(120):
            if app.control.ping(timeout=0.5):
                break
        reps = 5 if quick else 15
        print(f"machine load before: {load_note()}")
        print(f"chat streaming: fake model {TOKENS} tokens; 1 daphne process, 1 agents worker (threads pool)")
        print(f"settings: {process_env()['DJANGO_SETTINGS_MODULE']}")
        for label, fake in (("paced (20 ms/token)", paced), ("burst (no delay)", burst)):
            point_provider_at(tenant, provider, fake.url + "/v1")
            for _ in range(2):  # warm up: imports, compiled config, connections
                asyncio.run(ws_stream(port, agent.pk, key))
                asyncio.run(sse_stream(port, agent.pk, key))
            # Round robin: the machine's speed drifts (shared CPUs), and each path should see the same drift.
            samples: dict[str, list] = {"direct": [], "websocket": [], "sse": [], "bare": []}
            # A pause before each measurement lets the previous run's tail (the worker saving the message and
            # metering it) finish first, so no path is timed while another one's background work still runs.
            for _ in range(reps):
                for name, measure in (
                    ("direct", lambda url=fake.url + "/v1": direct_stream(url)),
                    ("websocket", lambda: ws_stream(port, agent.pk, key)),
                    ("sse", lambda: sse_stream(port, agent.pk, key)),
                    ("bare", lambda: bare_request(port)),
                ):
                    samples[name].append(measured(name, measure))
            bare = statistics.median(samples.pop("bare"))
            results = {name: stats_of(runs) for name, runs in samples.items()}
            base = results["direct"]
            ws_phases = PHASES[-reps:]
            print(f"\n{label}, median of {reps} runs each:")
            print(
                f"  {'path':10} {'TTFT ms':>9} {'ratio':>7} {'+TTFT ms':>9} {'mean gap ms':>12} "
                f"{'+per token ms':>14} {'total ms':>9}"
            )
            for name, r in results.items():
                print(
                    f"  {name:10} {r['ttft'] * 1e3:9.2f} {r['ttft'] / base['ttft']:7.2f} "
                    f"{(r['ttft'] - base['ttft']) * 1e3:9.2f} {r['gap'] * 1e3:12.3f} "
                    f"{(r['gap'] - base['gap']) * 1e3:14.3f} {r['total'] * 1e3:9.1f}"
                )

            med = {k: statistics.median(p[k] for p in ws_phases) * 1e3 for k in ws_phases[0]}
            print(
                f"  websocket breakdown (medians, ms after the client sent): chat_start done (run.accepted) "
                f"{med['accepted']:.1f}, worker message.start {med['worker_start']:.1f}, first token written "
                f"{med['token_emitted']:.1f}, first token received {med['token_received']:.1f}"
            )
            print(
                f"  bare request (GET /healthz, same daphne) p50 {bare * 1e3:.2f} ms; SSE TTFT / (bare request + "
                f"direct TTFT) = {results['sse']['ttft'] / (bare + base['ttft']):.2f}"
            )
            sse_med = {k: statistics.median(p[k] for p in SSE_PHASES[-reps:]) * 1e3 for k in SSE_PHASES[-1]}
            print(
                f"  sse breakdown (medians, ms after the request started): response headers "
                f"{sse_med['headers']:.1f}, worker message.start {sse_med['worker_start']:.1f} (received "
                f"{sse_med['start_received']:.1f}), first token received {sse_med['token_received']:.1f}"
            )

        if "--ttft-only" in sys.argv:
            print(f"machine load after: {load_note()}")
            return
        point_provider_at(tenant, provider, paced.url + "/v1")
        print(f"\nconcurrent WebSocket streams on one daphne process ({TOKENS} tokens at {PACE * 1e3:.0f} ms each):")
        print(f"  {'streams':>7} {'p50 gap ms':>11} {'p99 gap ms':>11} {'max gap ms':>11} {'p50 TTFT ms':>12}")
        best, still_ok = 0, True
        for n in [10, 50, 100] if quick else [10, 25, 50, 100, 150, 200]:

            async def many(count=n):
                # Arrivals ramp over ~1 s; the gaps measured are between tokens, after each stream started.
                return await asyncio.gather(
                    *(ws_stream(port, agent.pk, key, i / count) for i in range(count)), return_exceptions=True
                )

            outcomes = asyncio.run(many())
            samples = [s for s in outcomes if isinstance(s, list) and s]
            failed = len(outcomes) - len(samples)
            if failed:
                kinds = sorted({f"{type(s).__name__}: {str(s)[:160]}" for s in outcomes if not isinstance(s, list)})
                print(f"  {n:7d} streams: {failed} failed ({', '.join(kinds)})")
                break
            gaps = [b - a for s in samples for a, b in zip(s, s[1:], strict=False)]
            p99 = percentile(gaps, 99)
            print(
                f"  {n:7d} {statistics.median(gaps) * 1e3:11.2f} {p99 * 1e3:11.2f} {max(gaps) * 1e3:11.2f} "
                f"{statistics.median([s[0] for s in samples]) * 1e3:12.1f}"
            )
            if p99 < 0.1 and still_ok:
                best = n
            else:
                still_ok = False  # the figure is the largest N below which every level passed
        print(f"  => one daphne process holds {best} concurrent streams with p99 inter-token delay < 100 ms")
        print(f"machine load after: {load_note()}")
    finally:
        for proc in (web, worker):
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        paced.stop()
        burst.stop()


if __name__ == "__main__":
    main()
