"""The gateway against its anchors, measured the way the performance targets are stated.

Every process runs on loopback, on free ports, and is stopped at the end (also on Ctrl-C,
SIGTERM and errors). The run:

1. starts the sandbox (``python -m sandbox serve``, a temporary SQLite file) and the development
   OpenID provider (``python -m devstack.idp``), creates 20 flows in the sandbox with the
   development API key and captures its answers (the flow page, clusters, ingesters and
   destinations) into a folder;
2. starts nginx from a temporary configuration (never the system service) serving that folder,
   plus an nginx proxy in front of it, and ``redis-server`` (``--save '' --appendonly no``);
   makes a session key ring with ``bff keys``; then the Python arms of ``bench/arms`` under
   uvicorn (uvloop, httptools, no access log) and four ``bff serve`` processes whose upstream is
   that nginx, with their default logging and metrics, and signs alice in to each as a browser
   does;
3. drives each arm with ``wrk``: a warm-up, then ``-t1 -c32 --latency`` (requests/s, p50, p99)
   and ``-t1 -c1 --latency`` (p50 without queueing). Where ``taskset`` is available, wrk, nginx
   and Redis run on one CPU and the process under test on another;
4. writes ``<out>/latest.json`` (machine facts, every arm's figures, the BFFs' RSS, what the
   production shape kept in Redis and its audit files, the target ratios) and
   ``<out>/latest.png`` (a bar chart of requests/s with the ratios below it). ``<out>`` is
   ``bench/out`` unless told, which git ignores; the committed figures in ``bench/results`` change
   only with ``--out bench/results`` (``make bench-save``).

The arms (``bench/README.md`` says how to read them):

- ``upstream-direct``: nginx serving the captured flow page, the floor every proxy adds to;
- ``nginx-proxy``: an nginx proxy in front of it, a C proxy doing no work;
- ``starlette-static``: uvicorn and Starlette answering a constant body, the server ceiling;
- ``reference-aiohttp``: a reshape proxy on raw aiohttp, no auth, no enrichment;
- ``naive-httpx``: the textbook proxy (stock httpx, stdlib json, ``BaseHTTPMiddleware``);
- ``bff-uncached``: the BFF listing 20 enriched flows for alice, micro-cache off
  (``BFF__CACHE__TTL_SECONDS=0``): every request reaches the upstream;
- ``bff-redis-uncached``, ``bff-redis-cached``: each beside its twin above, the production
  shape: sessions in Redis (sealed with the key ring; the defaults' near cache and touch
  interval) and the audit trail in a file.

Every arm must answer 200 with a page of 20 flows before and after its load, and wrk must count
no answer of 400 or more (its "Non-2xx or 3xx responses") and no socket error; the Redis arms
must have left their sessions in Redis and their sign-ins in their audit files. Otherwise the
run stops with exit status 1 and writes nothing: a benchmark of errors is worthless. Missing
nginx, wrk or redis-server exits with status 2.
Missed performance targets are reported, and fail the run only with ``--check``.

    python bench/gateway_bench.py [--seconds 8] [--quick] [--out bench/out] [--check]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any

import httpx
import redis

REPO = Path(__file__).resolve().parents[1]
# The browser sign-in and the process helpers of the end-to-end tests are reused as they are.
sys.path.insert(0, str(REPO))
from bff.paths import API_PREFIX, CALLBACK_PATH  # noqa: E402
from tests.support.oidc_login import browser_login  # noqa: E402
from tests.support.ports import free_ports  # noqa: E402
from tests.support.processes import clean_environ  # noqa: E402

CONFIG = REPO / "config" / "dev.toml"
ARMS_DIR = REPO / "bench" / "arms"
DEFAULT_OUT = REPO / "bench" / "out"
"""Where a run writes unless told: git ignores it, so a run changes nothing committed."""
SAVED_OUT = REPO / "bench" / "results"
"""The committed figures (``make bench-save``), which bench/README.md quotes."""
HOST = "127.0.0.1"
TENANT = "ten_acme"
CLUSTER = "plane_dev_us_east_1"
USER = "alice"
API_KEY = "zen_key_dev_acme_rw"
"""The sandbox's development read-write key (config/dev.toml), used only to seed and capture."""
SOURCE_ID = "ing_stripe_prod"
DESTINATION_ID = "dest_orders_api"
FLOW_COUNT = 20
UPSTREAM_FLOWS = f"/v1/tenants/{TENANT}/delivery-flows"
GATEWAY_FLOWS = f"{API_PREFIX}/tenants/{TENANT}/clusters/{CLUSTER}/delivery-flows"
CAPTURED = (
    f"delivery-flows?cluster_id={CLUSTER}&limit={FLOW_COUNT}",
    "clusters",
    f"ingesters?cluster_id={CLUSTER}",
    f"destinations?cluster_id={CLUSTER}",
)
"""The sandbox answers the BFF's flow list needs, saved under their paths for nginx to serve."""
CONNECTIONS = 32

START_TIMEOUT = 60.0
"""Seconds every process gets to answer its readiness URL (a loaded 2-core machine is slow)."""
STOP_GRACE = 10.0
"""Seconds processes get to exit after SIGTERM before their process group is killed."""
REQUEST_TIMEOUT = 20.0
LOG_TAIL_LINES = 20


@dataclass(frozen=True)
class Timing:
    """Seconds of wrk per arm: warm-up, the measured run at 32 connections, the run at 1."""

    seconds: int
    warmup: int
    single: int


FULL = Timing(seconds=8, warmup=2, single=3)
"""As the shared harness's run.sh."""
QUICK = Timing(seconds=1, warmup=1, single=1)
"""Enough to prove the harness works, not to judge speed: what the test runs."""


@dataclass(frozen=True)
class Target:
    """One performance target, as the performance issue states it."""

    name: str
    comparison: str
    value: float

    def met(self, got: float) -> bool:
        return got >= self.value if self.comparison == ">=" else got <= self.value


TARGETS = (
    Target("uncached / reference-aiohttp", ">=", 0.60),
    Target("uncached / naive-httpx", ">=", 5.0),
    Target("cached / starlette-static", ">=", 0.33),
    Target("added p50 at c=1 (ms)", "<=", 0.40),
    Target("RSS (MB)", "<=", 120.0),
    Target("redis-uncached / uncached", ">=", 0.85),
    Target("redis-cached / cached", ">=", 0.85),
)


class BenchError(Exception):
    """The benchmark cannot give a meaningful answer; the message says why."""


class MissingTool(BenchError):
    """nginx, wrk or redis-server is not installed."""


# --- processes ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tools:
    """The programs the run needs, and the CPUs to pin to when ``taskset`` can."""

    nginx: str
    wrk: str
    redis: str
    taskset: str | None
    load_cpu: int = 0
    server_cpu: int = 1

    def on_load_cpu(self, argv: Sequence[str]) -> list[str]:
        """``argv`` on the CPU of the load generator, nginx and Redis."""
        return self._pinned(argv, self.load_cpu)

    def on_server_cpu(self, argv: Sequence[str]) -> list[str]:
        """``argv`` on the CPU of the process under test."""
        return self._pinned(argv, self.server_cpu)

    def _pinned(self, argv: Sequence[str], cpu: int) -> list[str]:
        return [self.taskset, "-c", str(cpu), *argv] if self.taskset else list(argv)


def find_tools() -> Tools:
    """nginx, wrk, redis-server (``MissingTool`` names what is missing) and, with two CPUs,
    taskset."""
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    found = {name: shutil.which(name, path=search) for name in ("nginx", "wrk", "redis-server")}
    if missing := [name for name, path in found.items() if path is None]:
        raise MissingTool(
            f"{' and '.join(missing)} not installed "
            "(apt-get install -y nginx-light wrk redis-server)"
        )
    nginx, wrk, redis_server = (str(path) for path in found.values())
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    taskset = shutil.which("taskset", path=search)
    if taskset is None or len(cpus) < 2:
        return Tools(nginx, wrk, redis_server, None)
    return Tools(nginx, wrk, redis_server, taskset, load_cpu=cpus[0], server_cpu=cpus[1])


@dataclass
class Child:
    """A process the run started: it leads a process group of its own."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    def running(self) -> bool:
        return self.process.poll() is None

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in lines[-LOG_TAIL_LINES:])

    def rss_mb(self) -> float | None:
        """Its resident memory now, in MiB, or None where /proc is absent."""
        try:
            status = Path(f"/proc/{self.process.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match[1]) / 1024 if match else None

    def killpg(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signum)


class Processes:
    """Every process of the run; leaving the ``with`` block stops each one's process group."""

    def __init__(self, work_dir: Path) -> None:
        self.work_dir = work_dir
        self.children: list[Child] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Child:
        """Start ``argv`` in the repository, its output in ``<work dir>/<name>.log``."""
        log = self.work_dir / f"{name}.log"
        with log.open("wb") as out:
            process = subprocess.Popen(
                list(argv),
                cwd=REPO,
                # The caller's own BFF settings must not leak into the measured processes.
                env=clean_environ(**(env or {})),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own process group: Ctrl-C reaches the benchmark, which stops the children.
                start_new_session=True,
            )
        child = Child(name, process, log)
        self.children.append(child)
        return child

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        running = [child for child in self.children if child.running()]
        for child in running:
            child.killpg(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        for child in running:
            try:
                child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.killpg(signal.SIGKILL)
                child.process.wait()
        for child in self.children:
            # Whatever a leader left behind (nginx's worker, say) goes too.
            child.killpg(signal.SIGKILL)

    def check_running(self) -> None:
        for child in self.children:
            if not child.running():
                raise BenchError(f"{child.name} exited during the run:\n{child.tail()}")


def _answers(http: httpx.Client, url: str) -> bool:
    """An HTTP URL answers 200; a ``redis://`` one answers PING."""
    if url.startswith("redis://"):
        with (
            contextlib.suppress(redis.RedisError),
            redis.Redis.from_url(url, socket_timeout=1.0) as client,
        ):
            return bool(client.ping())
        return False
    with contextlib.suppress(httpx.TransportError):
        return http.get(url).status_code == 200
    return False


def wait_ready(ready: dict[str, tuple[Child, str]]) -> None:
    """Poll until every child answers at its URL (``ready``: name → child, URL)."""
    waiting = dict(ready)
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(trust_env=False, timeout=1.0) as http:
        while waiting:
            for name, (child, url) in list(waiting.items()):
                if not child.running():
                    raise BenchError(f"{name} exited at start:\n{child.tail()}")
                if _answers(http, url):
                    del waiting[name]
            if waiting and time.monotonic() > deadline:
                name, (child, url) = next(iter(waiting.items()))
                raise BenchError(
                    f"{name} did not answer {url} within {START_TIMEOUT:.0f} s:\n{child.tail()}"
                )
            time.sleep(0.1)  # polling starting processes


# --- the stack ---------------------------------------------------------------------------------


NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/nginx-error.log;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  default_type application/json;
  client_body_temp_path {root}/nginx-body;
  proxy_temp_path {root}/nginx-proxy;
  fastcgi_temp_path {root}/nginx-fastcgi;
  uwsgi_temp_path {root}/nginx-uwsgi;
  scgi_temp_path {root}/nginx-scgi;
  upstream up {{ server {host}:{direct}; keepalive 64; }}
  server {{ listen {host}:{direct}; root {root}/www; location / {{ try_files $uri =404; }} }}
  server {{
    listen {host}:{proxy};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection ""; }}
  }}
}}
"""
"""The shared harness's nginx.conf.tmpl on free ports, in the foreground, its files in the run's
folder; the query string plays no part (``try_files $uri``), as the captured answers need."""


@dataclass
class Arm:
    """One thing measured: a URL, the headers to send and the process answering it."""

    name: str
    url: str
    server: Child
    headers: dict[str, str] = field(default_factory=dict)
    python: bool = True
    """A Python process under test (whose memory is reported), not nginx."""
    redis_url: str | None = None
    """Where a BFF of the production shape keeps its sessions (a database of its own)."""
    audit_file: Path | None = None
    """Where a BFF of the production shape writes its audit trail."""


@dataclass(frozen=True)
class BffVariant:
    """One ``bff serve`` arm: its micro-cache, and whether it has the production shape."""

    name: str
    cache_ttl_seconds: str
    redis: bool = False
    """Sessions in Redis, sealed with the key ring, and the audit trail in a file."""


BFF_VARIANTS = (
    BffVariant("bff-uncached", "0"),
    BffVariant("bff-redis-uncached", "0", redis=True),
    BffVariant("bff-cached", "2"),
    BffVariant("bff-redis-cached", "2", redis=True),
)
"""Each Redis arm measured right after its memory twin, so drift on a shared machine falls on
both of a pair alike."""


def seed_and_capture(sandbox: str, www: Path) -> None:
    """Create the flows in the sandbox and save its answers where nginx serves them."""
    folder = www / "v1" / "tenants" / TENANT
    folder.mkdir(parents=True)
    with httpx.Client(
        base_url=f"{sandbox}/v1/tenants/{TENANT}",
        headers={"Authorization": f"Bearer {API_KEY}"},
        trust_env=False,
        timeout=REQUEST_TIMEOUT,
    ) as http:
        for number in range(FLOW_COUNT):
            created = http.post(
                "/delivery-flows",
                json={
                    "name": f"stripe-to-app-{number}",
                    "source_id": SOURCE_ID,
                    "destination_id": DESTINATION_ID,
                    "cluster_id": CLUSTER,
                },
                headers={"Idempotency-Key": f"bench-{number}"},
            )
            if not created.is_success:
                raise BenchError(f"creating a flow answered {created.status_code}: {created.text}")
        for query in CAPTURED:
            answer = http.get(f"/{query}")
            if answer.status_code != 200:
                raise BenchError(f"the sandbox answered {query} with {answer.status_code}")
            (folder / query.split("?")[0]).write_bytes(answer.content)


def sign_in(origin: str) -> str:
    """Alice's cookies at the BFF at ``origin``, after the browser's sign-in hops."""
    with httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT) as browser:
        try:
            final = browser_login(browser, origin, USER)
        except AssertionError as exc:
            raise BenchError(f"sign-in at {origin} failed: {exc}") from exc
        cookies = "; ".join(f"{cookie.name}={cookie.value}" for cookie in browser.cookies.jar)
        if final.status_code != 200 or not cookies:
            raise BenchError(f"sign-in at {origin} failed: {final.status_code} {final.url}")
        return cookies


def _origin(port: int) -> str:
    return f"http://{HOST}:{port}"


def redis_sessions(redis_url: str, key_ring: Path) -> dict[str, str]:
    """The production shape's ``[sessions]`` (its other keys at their defaults, the near cache
    and the touch interval among them): Redis at ``redis_url``, sealed with ``key_ring``."""
    return {
        "BFF__SESSIONS__BACKEND": "redis",
        "BFF__SESSIONS__REDIS_URL": redis_url,
        "BFF__SESSIONS__ENCRYPTION_KEYS_FILE": str(key_ring),
    }


def make_key_ring(sessions: dict[str, str]) -> None:
    """The session key ring ``sessions`` names, written by ``bff keys`` as an operator does."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "bff", "keys", "--config", str(CONFIG)],
            cwd=REPO,
            env=clean_environ(**sessions),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=START_TIMEOUT,
        )
    except subprocess.TimeoutExpired as exc:
        raise BenchError("bff keys did not finish") from exc
    if done.returncode != 0:
        raise BenchError(f"bff keys exited {done.returncode}: {done.stderr}{done.stdout}")


@contextlib.contextmanager
def running_arms(tools: Tools, work_dir: Path) -> Iterator[list[Arm]]:
    """Every arm answering, alice signed in to every BFF; nothing outlives the block."""
    www = work_dir / "www"
    python = [sys.executable, "-m"]
    (sandbox_port, idp_port, direct_port, proxy_port, static_port, reference_port, naive_port,
     redis_port, *ports) = free_ports(8 + len(BFF_VARIANTS))  # fmt: skip
    sandbox_origin, idp_origin = _origin(sandbox_port), _origin(idp_port)
    bff_ports = dict(zip(BFF_VARIANTS, ports, strict=True))
    redirect_uris = [
        option
        for port in bff_ports.values()
        for option in ("--redirect-uri", _origin(port) + CALLBACK_PATH)
    ]
    redis_origin = f"redis://{HOST}:{redis_port}"
    redis_databases = itertools.count()
    with Processes(work_dir) as processes:
        sandbox = processes.start("sandbox", [
            *python, "sandbox", "serve", "--config", str(CONFIG), "--host", HOST,
            "--port", str(sandbox_port), "--db", str(work_dir / "sandbox.db"),
        ])  # fmt: skip
        idp = processes.start("provider", [
            *python, "devstack.idp", "--config", str(CONFIG), "--host", HOST,
            "--port", str(idp_port), *redirect_uris,
        ])  # fmt: skip
        # As the shared harness runs it: no persistence, on the load generator's CPU.
        redis_server = processes.start("redis", tools.on_load_cpu([
            tools.redis, "--port", str(redis_port), "--bind", HOST, "--save", "",
            "--appendonly", "no", "--dir", str(work_dir),
        ]))  # fmt: skip
        wait_ready(
            {
                "sandbox": (sandbox, f"{sandbox_origin}/healthz"),
                "provider": (idp, f"{idp_origin}/.well-known/openid-configuration"),
                "redis": (redis_server, f"{redis_origin}/0"),
            }
        )
        seed_and_capture(sandbox_origin, www)
        key_ring = work_dir / "session.keys"
        make_key_ring(redis_sessions(f"{redis_origin}/0", key_ring))

        conf = work_dir / "nginx.conf"
        conf.write_text(
            NGINX_CONF.format(root=work_dir, host=HOST, direct=direct_port, proxy=proxy_port)
        )
        nginx = processes.start(
            "nginx",
            tools.on_load_cpu([tools.nginx, "-p", str(work_dir), "-e", "stderr", "-c", str(conf)]),
        )
        upstream = f"http://{HOST}:{direct_port}"

        def uvicorn_arm(module: str, port: int) -> Child:
            return processes.start(
                module,
                tools.on_server_cpu([
                    *python, "uvicorn", "--app-dir", str(ARMS_DIR), "--factory",
                    f"{module}:create_app", "--host", HOST, "--port", str(port),
                    "--no-access-log", "--loop", "uvloop", "--http", "httptools",
                    "--log-level", "warning",
                ]),
                env={"BENCH_UPSTREAM": upstream, "BENCH_BODY": str(www / UPSTREAM_FLOWS[1:])},
            )  # fmt: skip

        def bff_arm(variant: BffVariant) -> Arm:
            port = bff_ports[variant]
            env = {
                "BFF__BFF__PUBLIC_ORIGIN": _origin(port),
                # One user drives the whole load: the per-caller limit would measure itself.
                "BFF__BFF__RATE_LIMIT_PER_MINUTE": "0",
                "BFF__UPSTREAM__BASE_URL": upstream,
                "BFF__OIDC__ISSUER": idp_origin,
                "BFF__CACHE__TTL_SECONDS": variant.cache_ttl_seconds,
            }
            redis_url = audit_file = None
            if variant.redis:
                redis_url = f"{redis_origin}/{next(redis_databases)}"
                audit_file = work_dir / f"audit-{variant.name}.jsonl"
                env |= redis_sessions(redis_url, key_ring) | {
                    "BFF__AUDIT__SINK": "file",
                    "BFF__AUDIT__PATH": str(audit_file),
                }
            server = processes.start(
                variant.name,
                tools.on_server_cpu([
                    *python, "bff", "serve", "--config", str(CONFIG), "--host", HOST,
                    "--port", str(port),
                ]),
                env=env,
            )  # fmt: skip
            return Arm(
                variant.name,
                _origin(port) + GATEWAY_FLOWS,
                server,
                redis_url=redis_url,
                audit_file=audit_file,
            )

        static = uvicorn_arm("starlette_static", static_port)
        reference = uvicorn_arm("reference_aiohttp", reference_port)
        naive = uvicorn_arm("naive_httpx", naive_port)
        bff_arms = [bff_arm(variant) for variant in BFF_VARIANTS]
        wait_ready(
            {
                "nginx": (nginx, upstream + UPSTREAM_FLOWS),
                "starlette-static": (static, f"http://{HOST}:{static_port}{GATEWAY_FLOWS}"),
                "reference-aiohttp": (reference, f"http://{HOST}:{reference_port}{GATEWAY_FLOWS}"),
                "naive-httpx": (naive, f"http://{HOST}:{naive_port}{GATEWAY_FLOWS}"),
                **{
                    arm.name: (arm.server, f"{_origin(port)}/healthz")
                    for arm, port in zip(bff_arms, bff_ports.values(), strict=True)
                },
            }
        )
        for arm, port in zip(bff_arms, bff_ports.values(), strict=True):
            arm.headers.update({"Cookie": sign_in(_origin(port)), "X-CSRF": "1"})
        yield [
            Arm("upstream-direct", upstream + UPSTREAM_FLOWS, nginx, python=False),
            Arm("nginx-proxy", f"http://{HOST}:{proxy_port}{UPSTREAM_FLOWS}", nginx, python=False),
            Arm("starlette-static", f"http://{HOST}:{static_port}{GATEWAY_FLOWS}", static),
            Arm("reference-aiohttp", f"http://{HOST}:{reference_port}{GATEWAY_FLOWS}", reference),
            Arm("naive-httpx", f"http://{HOST}:{naive_port}{GATEWAY_FLOWS}", naive),
            *bff_arms,
        ]
        processes.check_running()


def check_pages(arms: Sequence[Arm]) -> None:
    """Every arm answers 200 with a full page of flows: the run measures what it claims to."""
    with httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT) as http:
        for arm in arms:
            answer = http.get(arm.url, headers=arm.headers)
            if answer.status_code != 200:
                raise BenchError(
                    f"{arm.name} answered {answer.status_code}: {answer.text[:300]}\n"
                    f"{arm.server.tail()}"
                )
            page = answer.json()
            flows = page.get("items", page.get("delivery_flows"))
            if not isinstance(flows, list) or len(flows) != FLOW_COUNT:
                raise BenchError(f"{arm.name} answered {answer.text[:300]}, not {FLOW_COUNT} flows")


def check_production_shape(arms: Sequence[Arm]) -> dict[str, dict[str, Any]]:
    """Each Redis arm's database holds its session and its audit file its sign-in: the arm has
    the production shape it claims. What each holds, per arm."""
    found: dict[str, dict[str, Any]] = {}
    for arm in arms:
        if arm.redis_url is None or arm.audit_file is None:
            continue
        try:
            with redis.Redis.from_url(arm.redis_url, socket_timeout=REQUEST_TIMEOUT) as client:
                keys = int(client.dbsize())
        except redis.RedisError as exc:
            raise BenchError(f"{arm.name}: its Redis at {arm.redis_url} failed: {exc}") from exc
        try:
            events = len(arm.audit_file.read_text().splitlines())
        except OSError:
            events = 0
        if not keys or not events:
            raise BenchError(
                f"{arm.name} keeps {keys} keys in {arm.redis_url} and {events} audit events in "
                f"{arm.audit_file} after alice signed in: not the production shape\n"
                f"{arm.server.tail()}"
            )
        found[arm.name] = {"redis_url": arm.redis_url, "redis_keys": keys, "audit_events": events}
    return found


# --- load --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WrkRun:
    """What one wrk run reports."""

    requests: int
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    non_2xx: int
    socket_errors: int


_UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise BenchError(f"wrk printed a latency of {text!r}")
    return float(match[1]) * _UNIT_MS[match[2]]


def parse_wrk(output: str) -> WrkRun:
    """The figures of ``wrk --latency`` output."""

    def find(pattern: str) -> str:
        match = re.search(pattern, output, re.MULTILINE)
        if match is None:
            raise BenchError(f"no {pattern!r} in wrk's output:\n{output}")
        return match[1]

    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    return WrkRun(
        requests=int(find(r"^\s*(\d+) requests in")),
        requests_per_second=float(find(r"^Requests/sec:\s+([\d.]+)")),
        p50_ms=_milliseconds(find(r"^\s+50%\s+(\S+)")),
        p99_ms=_milliseconds(find(r"^\s+99%\s+(\S+)")),
        non_2xx=int(non_2xx[1]) if non_2xx else 0,
        socket_errors=sum(int(count) for count in sockets.groups()) if sockets else 0,
    )


def run_wrk(tools: Tools, arm: Arm, connections: int, seconds: int) -> WrkRun:
    headers = [
        option for name, value in arm.headers.items() for option in ("-H", f"{name}: {value}")
    ]
    argv = tools.on_load_cpu([
        tools.wrk, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", *headers, arm.url,
    ])  # fmt: skip
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60)
    except subprocess.TimeoutExpired as exc:
        raise BenchError(f"wrk on {arm.name} did not finish") from exc
    if done.returncode != 0:
        raise BenchError(f"wrk on {arm.name} exited {done.returncode}: {done.stderr}{done.stdout}")
    result = parse_wrk(done.stdout)
    if result.non_2xx or result.socket_errors or not result.requests:
        raise BenchError(
            f"{arm.name}: {result.non_2xx} answers were not 2xx or 3xx and "
            f"{result.socket_errors} socket errors in {result.requests} requests; "
            f"a benchmark of errors is worthless.\nwrk:\n{done.stdout}\n"
            f"{arm.name}'s output:\n{arm.server.tail()}"
        )
    return result


@dataclass(frozen=True)
class ArmResult:
    """One arm's figures, as written to latest.json."""

    name: str
    requests_per_second: float
    p50_ms: float
    p99_ms: float
    p50_c1_ms: float
    requests: int
    non_2xx: int
    socket_errors: int
    rss_mb: float | None


def measure(tools: Tools, arm: Arm, timing: Timing) -> ArmResult:
    """Warm-up, then 32 connections for requests/s and latency, then 1 for the bare p50."""
    warmup = run_wrk(tools, arm, CONNECTIONS, timing.warmup)
    loaded = run_wrk(tools, arm, CONNECTIONS, timing.seconds)
    single = run_wrk(tools, arm, 1, timing.single)
    return ArmResult(
        name=arm.name,
        requests_per_second=loaded.requests_per_second,
        p50_ms=loaded.p50_ms,
        p99_ms=loaded.p99_ms,
        p50_c1_ms=single.p50_ms,
        requests=loaded.requests + single.requests,
        non_2xx=warmup.non_2xx + loaded.non_2xx + single.non_2xx,
        socket_errors=warmup.socket_errors + loaded.socket_errors + single.socket_errors,
        rss_mb=arm.server.rss_mb() if arm.python else None,
    )


# --- report ------------------------------------------------------------------------------------


def ratios(results: dict[str, ArmResult]) -> list[dict[str, Any]]:
    """The target ratios, computed exactly as the shared harness's ratios.py does."""
    rps = {name: result.requests_per_second for name, result in results.items()}
    bff_rss = [r.rss_mb for n, r in results.items() if n.startswith("bff-") and r.rss_mb]
    got = {
        "uncached / reference-aiohttp": rps["bff-uncached"] / rps["reference-aiohttp"],
        "uncached / naive-httpx": rps["bff-uncached"] / rps["naive-httpx"],
        "cached / starlette-static": rps["bff-cached"] / rps["starlette-static"],
        "added p50 at c=1 (ms)": results["bff-uncached"].p50_c1_ms
        - results["upstream-direct"].p50_c1_ms,
        "RSS (MB)": max(bff_rss) if bff_rss else float("nan"),
        "redis-uncached / uncached": rps["bff-redis-uncached"] / rps["bff-uncached"],
        "redis-cached / cached": rps["bff-redis-cached"] / rps["bff-cached"],
    }
    return [
        {
            "name": target.name,
            "value": round(got[target.name], 3),
            "comparison": target.comparison,
            "target": target.value,
            "met": target.met(got[target.name]),
        }
        for target in TARGETS
    ]


def _git(*args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def _version(argv: Sequence[str]) -> str:
    """The first line a tool prints about its version (wrk and nginx print it on stderr)."""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (done.stderr + done.stdout).strip().splitlines()[0]
    return "unknown"


def machine(tools: Tools) -> dict[str, Any]:
    """Facts about where the figures were taken."""
    cpu_model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    commit = _git("rev-parse", "HEAD")
    changed = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "cores": os.cpu_count(),
        "cpu_model": cpu_model,
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
        "git_commit": commit,
        "git_dirty": bool(changed) if changed is not None else None,
        "nginx": _version([tools.nginx, "-v"]),
        "redis": _version([tools.redis, "--version"]).split(" sha=")[0],
        "wrk": _version([tools.wrk, "--version"]).split(" Copyright")[0],
        "pinning": (
            {
                "load generator, nginx and redis": f"cpu{tools.load_cpu}",
                "under test": f"cpu{tools.server_cpu}",
            }
            if tools.taskset
            else None
        ),
    }


def print_table(results: Sequence[ArmResult], targets: Sequence[dict[str, Any]]) -> None:
    print()
    for r in results:
        rss = f"   RSS {r.rss_mb:.0f} MB" if r.rss_mb is not None else ""
        print(
            f"{r.name:<20} {r.requests_per_second:9.0f} req/s   p50(c32) {r.p50_ms:7.2f} ms"
            f"   p99(c32) {r.p99_ms:7.2f} ms   p50(c1) {r.p50_c1_ms:6.3f} ms{rss}"
        )
    print()
    for t in targets:
        verdict = "ok  " if t["met"] else "MISS"
        target = f"target {t['comparison']} {t['target']}"
        print(f"{verdict} {t['name']:30} {t['value']:8.2f}   {target}")
    print(f"{sum(t['met'] for t in targets)}/{len(targets)} performance targets met")


CHART_COLOURS = {
    "anchor": ("#4a78a8", "anchor"),
    "bff": ("#d9822b", "BFF, sessions in memory"),
    "bff-redis": ("#7b3f98", "BFF, production shape: sessions in Redis, audit file"),
}
"""Bar colour and legend per kind of arm."""


def _kind(arm: str) -> str:
    if arm.startswith("bff-redis-"):
        return "bff-redis"
    return "bff" if arm.startswith("bff-") else "anchor"


def draw_chart(report: dict[str, Any], path: Path) -> None:
    """A horizontal bar chart of requests/s per arm, with the target ratios below it."""
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as exc:
        raise BenchError("Pillow draws the chart: install the dev extra (make venv)") from exc

    arms: list[dict[str, Any]] = report["arms"]
    facts = report["machine"]
    font = ImageFont.load_default(size=15)
    small = ImageFont.load_default(size=13)
    width, margin, bar_height, gap = 1100, 24, 26, 12
    title_height, ratio_line = 96, 22
    bars_top = margin + title_height
    bars_height = len(arms) * (bar_height + gap)
    height = bars_top + bars_height + 30 + ratio_line * (len(report["ratios"]) + 1) + margin
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)

    settings = report["settings"]
    quick = ", quick mode" if settings["quick"] else ""
    title = (
        f"Gateway benchmark: requests/s at {CONNECTIONS} connections "
        f"(wrk, {settings['seconds']} s per arm{quick})"
    )
    draw.text((margin, margin), title, fill="black", font=font)
    load = " ".join(f"{figure:.2f}" for figure in facts["load_average"]["start"])
    commit = (facts["git_commit"] or "unknown")[:10]
    where = (
        f"{facts['cores']} cores, {facts['cpu_model']}, {facts['python']}, "
        f"{facts['timestamp']}, commit {commit}, load average {load}"
    )
    draw.text((margin, margin + 24), where, fill="#444444", font=small)
    left = margin
    for colour, meaning in CHART_COLOURS.values():
        draw.rectangle((left, margin + 50, left + 14, margin + 64), fill=colour)
        draw.text((left + 20, margin + 50), meaning, fill="black", font=small)
        left += 20 + round(draw.textlength(meaning, font=small)) + 28

    label_width = 16 + max(round(draw.textlength(arm["name"], font=font)) for arm in arms)
    largest = max(arm["requests_per_second"] for arm in arms)
    value_room = 330
    scale = (width - 2 * margin - label_width - value_room) / largest
    rps = {arm["name"]: arm["requests_per_second"] for arm in arms}
    for index, arm in enumerate(arms):
        top = bars_top + index * (bar_height + gap)
        colour, _ = CHART_COLOURS[_kind(arm["name"])]
        draw.text((margin, top + 5), arm["name"], fill="black", font=font)
        right = margin + label_width + max(1, round(arm["requests_per_second"] * scale))
        draw.rectangle((margin + label_width, top, right, top + bar_height), fill=colour)
        twin = arm["name"].replace("bff-redis-", "bff-")
        versus = f"   {rps[arm['name']] / rps[twin]:.2f} of {twin}" if twin != arm["name"] else ""
        draw.text(
            (right + 8, top + 5),
            f"{arm['requests_per_second']:,.0f} req/s   p50 {arm['p50_ms']:.2f} ms   "
            f"p50(c1) {arm['p50_c1_ms']:.3f} ms{versus}",
            fill="black",
            font=small,
        )

    top = bars_top + bars_height + 20
    draw.text((margin, top), "Targets", fill="black", font=font)
    for index, target in enumerate(report["ratios"], start=1):
        verdict = "met   " if target["met"] else "MISSED"
        draw.text(
            (margin, top + index * ratio_line),
            f"{verdict}  {target['name']}: {target['value']:.2f}  "
            f"(target {target['comparison']} {target['target']:g})",
            fill="#1a7f37" if target["met"] else "#cf222e",
            font=small,
        )
    image.save(path, format="PNG", optimize=True)


# --- main --------------------------------------------------------------------------------------


def run(timing: Timing, out: Path, quick: bool) -> list[dict[str, Any]]:
    tools = find_tools()
    facts = machine(tools)
    load_at_start = os.getloadavg()
    pinning = (
        f"wrk, nginx and redis on cpu{tools.load_cpu}, "
        f"the process under test on cpu{tools.server_cpu}"
        if tools.taskset
        else "no CPU pinning (taskset or a second CPU is missing)"
    )
    print(f"gateway bench on {facts['cores']} cores, {facts['cpu_model']}; {pinning}", flush=True)
    with (
        tempfile.TemporaryDirectory(prefix="gateway-bench-") as root,
        running_arms(tools, _readable(Path(root))) as arms,
    ):
        check_pages(arms)
        production_shape = check_production_shape(arms)
        results: list[ArmResult] = []
        for arm in arms:
            print(f"measuring {arm.name} ({arm.url})", flush=True)
            results.append(measure(tools, arm, timing))
            if not arm.server.running():
                raise BenchError(f"{arm.name} exited during the run:\n{arm.server.tail()}")
        check_pages(arms)

    facts["load_average"] = {"start": load_at_start, "end": os.getloadavg()}
    targets = ratios({result.name: result for result in results})
    report = {
        "machine": facts,
        "settings": {
            "quick": quick,
            "connections": CONNECTIONS,
            "seconds": timing.seconds,
            "warmup_seconds": timing.warmup,
            "single_connection_seconds": timing.single,
        },
        "arms": [asdict(result) for result in results],
        "bff_rss_mb": {r.name: r.rss_mb for r in results if r.name.startswith("bff-")},
        "production_shape": production_shape,
        "ratios": targets,
    }
    print_table(results, targets)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
    draw_chart(report, out / "latest.png")
    print(f"\nwrote {out / 'latest.json'} and {out / 'latest.png'}")
    return targets


def _readable(folder: Path) -> Path:
    # nginx's worker drops privileges when started as root: it must be able to read the files.
    folder.chmod(0o755)
    return folder


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=int, help=f"measured seconds per arm (default {FULL.seconds})"
    )
    parser.add_argument(
        "--quick", action="store_true", help="1 s per arm and a short warm-up: proves it runs"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help=f"folder for latest.json and latest.png (default {DEFAULT_OUT.relative_to(REPO)}, "
        f"git-ignored; {SAVED_OUT.relative_to(REPO)} holds the committed figures)",
    )
    parser.add_argument(
        "--check", action="store_true", help="exit 1 when a performance target is missed"
    )
    args = parser.parse_args()
    timing = QUICK if args.quick else FULL
    if args.seconds is not None:
        if not 1 <= args.seconds <= 600:
            parser.error("--seconds must be 1 to 600")
        timing = Timing(args.seconds, timing.warmup, timing.single)

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        targets = run(timing, args.out.resolve(), args.quick)
    except MissingTool as exc:
        print(f"gateway_bench: {exc}", file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"gateway_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("gateway_bench: interrupted; every process it started is stopped", file=sys.stderr)
        return 130
    if args.check and not all(target["met"] for target in targets):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
