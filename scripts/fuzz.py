"""`make fuzz`: schemathesis over every operation of the live API contract (tests/fuzz/api_fuzz.py).

Starts the product's processes on a database of their own (the test settings, which are production's): two web
processes, rate limiting on and off (RATELIMIT_ENABLE), and the Celery workers. Then, for each rate-limit mode, an
organisation admin with a JWT and an API key, each in a new organisation of its own, run every operation. Prints,
per principal and mode: operations, cases, 5xx and contract violations (with the first few of each); exits 1 if
any 5xx or violation was found.

    python scripts/devstack.py run scripts/fuzz.py [--max-examples 25] [--no-coverage] [--seed N]
    make fuzz FUZZ_ARGS="--max-examples 50"
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
print = functools.partial(print, flush=True)  # noqa: A001 - progress shows up as it happens
# `devstack.py run` sets REDIS_URL: the stack's Redis, in a database of this run's own.
os.environ.setdefault("TEST_REDIS_URL", os.environ["REDIS_URL"].rsplit("/", 1)[0] + "/12")
os.environ.setdefault("LOG_LEVEL", "WARNING")  # here and in the product's processes: errors, not every request

from bench.common import bench_django_setup  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def workers_start(logs: Path, env: dict[str, str]) -> list[subprocess.Popen]:
    from config.celery import app
    from config.processes import WORKERS

    node = f"fuzz-{os.getpid()}"
    procs = [
        subprocess.Popen(  # noqa: S603 - our interpreter, our command lines
            [sys.executable, "-m", *args, "-n", f"{node}-{kind}@%h", "--without-gossip", "--without-mingle"],
            cwd=ROOT,
            env=env,
            stdout=open(logs / f"fuzz-{kind}.log", "w"),  # noqa: SIM115 - closed when the process ends
            stderr=subprocess.STDOUT,
        )
        for kind, args in WORKERS.items()
    ]
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if any(proc.poll() is not None for proc in procs):
            raise SystemExit("a Celery worker exited early; see var/fuzz-*.log")
        replies = app.control.ping(timeout=1.0) or []
        if sum(1 for reply in replies for name in reply if name.startswith(node)) >= len(procs):
            return procs
    raise SystemExit("the Celery workers did not start in time; see var/fuzz-*.log")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-examples", type=int, default=25, help="generated cases per operation (budget)")
    parser.add_argument("--no-coverage", action="store_true", help="skip the coverage phase (boundary cases)")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--modes", default="on,off", help="rate limiting: on, off or both (default)")
    parser.add_argument("--principals", default="jwt,api_key")
    parser.add_argument("--database", default="agentry_fuzz")
    parser.add_argument("--port", type=int, default=0, help="first of two ports (default: free ones)")
    args = parser.parse_args()

    bench_django_setup(args.database)
    from django.conf import settings
    from django.core.management import call_command

    call_command("collectstatic", "--noinput", verbosity=0)  # as a deployment does: error pages name static files

    from tests.fuzz.api_fuzz import fuzz_organisation_delete, fuzz_principal_create, fuzz_run, processes_stop, web_start

    logs = ROOT / "var"
    logs.mkdir(exist_ok=True)
    env = {
        **os.environ,
        "PYTHONUNBUFFERED": "1",
        "TEST_REDIS_URL": settings.REDIS_URL,
        "SSRF_ALLOWED_NETWORKS": "",  # the operator allows no private network: what the fuzzer sends is refused
    }
    modes = [mode for mode in args.modes.split(",") if mode]
    ports = {mode: (args.port + i if args.port else free_port()) for i, mode in enumerate(modes)}
    phases = ("examples", "fuzzing") if args.no_coverage else ("examples", "coverage", "fuzzing")
    procs: list[subprocess.Popen] = []
    principals = []
    reports = []
    started = time.monotonic()
    try:
        procs += workers_start(logs, env)
        for mode in modes:
            procs.append(
                web_start(port=ports[mode], env=env, log_path=logs / f"fuzz-web-{mode}.log", rate_limits=mode == "on")
            )
        print(f"processes up: web (rate limits on/off) on ports {ports}, workers; {time.monotonic() - started:.0f} s")
        for mode in modes:
            for kind in args.principals.split(","):
                principal = fuzz_principal_create(kind, port=ports[mode])  # type: ignore[arg-type]
                principals.append(principal)
                run_started = time.monotonic()
                report = fuzz_run(
                    principal,
                    base_url=f"http://127.0.0.1:{ports[mode]}",
                    rate_limits=mode,
                    max_examples=args.max_examples,
                    phases=phases,
                    seed=args.seed,
                )
                reports.append(report)
                print(f"{report.line()}  ({time.monotonic() - run_started:.0f} s)")
                for line in report.details():
                    print(line)
    finally:
        processes_stop(procs)
        for principal in principals:
            with contextlib.suppress(Exception):
                fuzz_organisation_delete(principal)
    print(f"\nmake fuzz: {args.max_examples} examples per operation, phases {', '.join(phases)}")
    for report in reports:
        print(report.line())
    failed = sum(report.server_errors + report.violation_count + len(report.errors) for report in reports)
    print(
        f"total: {sum(r.cases for r in reports)} cases, {sum(r.server_errors for r in reports)} 5xx, "
        f"{sum(r.violation_count for r in reports)} violations ({time.monotonic() - started:.0f} s)"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
