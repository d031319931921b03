"""What the BFF itself costs: its throughput, latency and CPU per request against the sandbox's.

Starts the real processes on free 127.0.0.1 ports, one uvicorn worker each: the sandbox
(``python -m sandbox serve``, a temporary SQLite file), the development OpenID provider
(``python -m devstack.idp``) and three BFFs (``python -m bff serve``, JSON logs, the access
line on, as ``bff serve`` runs by default): one with the default micro-cache (2 s), one with it
off (``BFF__CACHE__TTL_SECONDS=0``), and one with it off and the access line off too
(``BFF__LOG__ACCESS=false``), to price the access log. It signs in as alice
over HTTP, as a browser does, creates ``--flows`` flows through the BFF, and then drives each
variant with ``--concurrency`` concurrent requests from one aiohttp session:

- ``(a)`` the sandbox's flow list, directly, with an API key: the baseline;
- ``(b)`` the BFF's flow list with the session cookie and ``X-CSRF: 1``, micro-cache on;
- ``(c)`` the same, micro-cache off: every request reaches the sandbox;
- ``(d)`` the BFF's GET of one flow with ``If-None-Match`` (a 304), micro-cache on;
- ``(e)`` the same 304, micro-cache off;
- ``(f)`` ``(c)`` without the access line: ``(c)/(f)`` is what the access log costs.

Variants run in short interleaved slices (``--slice``), so outside load on the machine falls
on all of them alike. Every response's status is checked; an unexpected one (or a connection
error) stops the run with a message and a non-zero exit. The table gives requests/s, p50 and
p99 latency, the ratio of requests/s to ``(a)``, and the CPU each server process spent per
request (read from ``/proc``), which varies far less than throughput on a shared machine.
Every child process is stopped on exit, also on Ctrl-C, SIGTERM and errors.

    python bench/bff_bench.py [--duration 6] [--concurrency 16] [--slice 0.5] [--flows 20]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

import aiohttp
import httpx

REPO = Path(__file__).resolve().parents[1]
# The browser sign-in of the end-to-end tests is reused as is.
sys.path.insert(0, str(REPO))
from bff.paths import API_PREFIX, CALLBACK_PATH, JWKS_PATH  # noqa: E402
from tests.support.oidc_login import browser_login  # noqa: E402

CONFIG = REPO / "config" / "dev.toml"
HOST = "127.0.0.1"
TENANT = "ten_acme"
CLUSTER = "plane_dev_us_east_1"
API_KEY = "zen_key_dev_acme_ro"
SOURCE_ID = "ing_stripe_prod"
DESTINATION_ID = "dest_orders_api"
USER = "alice"
SESSION_COOKIE = "bff_session"
BFF_FLOWS = f"{API_PREFIX}/tenants/{TENANT}/clusters/{CLUSTER}/delivery-flows"
PAGE_LIMIT = 20
SANDBOX_FLOWS = f"/v1/tenants/{TENANT}/delivery-flows?cluster_id={CLUSTER}&limit={PAGE_LIMIT}"

START_TIMEOUT = 30.0
"""Seconds every child gets to answer its readiness URL."""
STOP_GRACE = 5.0
"""Seconds children get to exit after SIGTERM before they are killed."""
REQUEST_TIMEOUT = 10.0
LOG_TAIL_LINES = 20


class BenchError(Exception):
    """The benchmark cannot give a meaningful answer; the message says why."""


# --- child processes ---------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


_CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class Child:
    name: str
    argv: list[str]
    origin: str
    ready_path: str
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # The caller's own BFF settings must not leak into the measured processes.
        env = {k: v for k, v in os.environ.items() if not k.startswith("BFF_")}
        env.update(self.env)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.argv,
                cwd=REPO,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                # Own process group: Ctrl-C reaches the benchmark, which stops the children.
                start_new_session=True,
            )

    @property
    def ready_url(self) -> str:
        return self.origin + self.ready_path

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def tail(self) -> str:
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(f"    {line}" for line in lines[-LOG_TAIL_LINES:])

    def cpu_seconds(self) -> float | None:
        """User plus system CPU time of the process so far, or None where /proc is absent."""
        if self.process is None:
            return None
        try:
            stat = Path(f"/proc/{self.process.pid}/stat").read_text()
        except OSError:
            return None
        # The command name may contain spaces; the fields after it do not.
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS

    def signal(self, sig: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)


def stop_all(children: list[Child]) -> None:
    running = [child for child in children if child.running()]
    for child in running:
        child.signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE
    for child in running:
        assert child.process is not None
        try:
            child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.signal(signal.SIGKILL)
            child.process.wait()


def wait_ready(children: list[Child]) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    with httpx.Client(trust_env=False, timeout=1.0) as http:
        for child in children:
            while True:
                for other in children:
                    if not other.running():
                        raise BenchError(f"{other.name} exited at start:\n{other.tail()}")
                try:
                    if http.get(child.ready_url).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{child.name} did not answer {child.ready_url} within "
                        f"{START_TIMEOUT:.0f} s:\n{child.tail()}"
                    )
                time.sleep(0.1)  # polling a starting process


@dataclass
class Stack:
    sandbox: Child
    idp: Child
    bff_cached: Child
    bff_uncached: Child
    bff_quiet: Child

    @property
    def bffs(self) -> list[Child]:
        return [self.bff_cached, self.bff_uncached, self.bff_quiet]

    @property
    def children(self) -> list[Child]:
        return [self.sandbox, self.idp, *self.bffs]


@contextlib.contextmanager
def running_stack(work_dir: Path) -> Iterator[Stack]:
    """Sandbox, provider and both BFFs, ready; none of them outlives the block."""
    sandbox_port, idp_port, cached_port, uncached_port, quiet_port = free_ports(5)
    sandbox_origin = f"http://{HOST}:{sandbox_port}"
    idp_origin = f"http://{HOST}:{idp_port}"
    cached_origin = f"http://{HOST}:{cached_port}"
    uncached_origin = f"http://{HOST}:{uncached_port}"
    quiet_origin = f"http://{HOST}:{quiet_port}"
    python = [sys.executable, "-m"]
    sandbox = Child(
        "sandbox",
        [
            *python, "sandbox", "serve", "--config", str(CONFIG),
            "--host", HOST, "--port", str(sandbox_port), "--db", str(work_dir / "sandbox.db"),
            # Both BFFs mint their own upstream tokens (credential mode internal-jwt).
            "--trusted-issuer", f"{cached_origin}={cached_origin}{JWKS_PATH}",
            "--trusted-issuer", f"{uncached_origin}={uncached_origin}{JWKS_PATH}",
            "--trusted-issuer", f"{quiet_origin}={quiet_origin}{JWKS_PATH}",
        ],
        sandbox_origin,
        "/healthz",
        work_dir / "sandbox.log",
    )  # fmt: skip
    idp = Child(
        "identity provider",
        [
            *python, "devstack.idp", "--config", str(CONFIG), "--host", HOST,
            "--port", str(idp_port),
            "--redirect-uri", f"{cached_origin}{CALLBACK_PATH}",
            "--redirect-uri", f"{uncached_origin}{CALLBACK_PATH}",
            "--redirect-uri", f"{quiet_origin}{CALLBACK_PATH}",
        ],
        idp_origin,
        "/.well-known/openid-configuration",
        work_dir / "idp.log",
    )  # fmt: skip

    def bff(name: str, bff_origin: str, port: int, **env: str) -> Child:
        return Child(
            name,
            [*python, "bff", "serve", "--config", str(CONFIG), "--host", HOST, "--port", str(port)],
            bff_origin,
            "/healthz",
            work_dir / f"{name.replace(' ', '-')}.log",
            env={
                "BFF__BFF__PUBLIC_ORIGIN": bff_origin,
                # One user drives the whole load: the per-caller limit would measure itself.
                "BFF__BFF__RATE_LIMIT_PER_MINUTE": "0",
                "BFF__UPSTREAM__BASE_URL": sandbox_origin,
                "BFF__OIDC__ISSUER": idp_origin,
                "BFF__LOG__FORMAT": "json",
                **env,
            },
        )

    stack = Stack(
        sandbox=sandbox,
        idp=idp,
        bff_cached=bff("BFF cache on", cached_origin, cached_port),
        bff_uncached=bff(
            "BFF cache off", uncached_origin, uncached_port, BFF__CACHE__TTL_SECONDS="0"
        ),
        bff_quiet=bff(
            "BFF cache off no access log",
            quiet_origin,
            quiet_port,
            BFF__CACHE__TTL_SECONDS="0",
            BFF__LOG__ACCESS="false",
        ),
    )
    try:
        for child in (sandbox, idp):
            child.start()
        wait_ready([sandbox, idp])
        for child in stack.bffs:
            child.start()
        wait_ready(stack.children)
        yield stack
    finally:
        stop_all(stack.children)


# --- set-up through the BFF --------------------------------------------------------------------


def sign_in(bff_origin: str) -> str:
    """Alice's session cookie for this BFF, after the browser's sign-in hops."""
    with httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT) as browser:
        final = browser_login(browser, bff_origin, USER, return_to="/")
        cookie = browser.cookies.get(SESSION_COOKIE)
        if final.status_code != 200 or not cookie:
            raise BenchError(f"sign-in at {bff_origin} failed: {final.status_code} {final.url}")
        return cookie


def bff_headers(cookie: str) -> dict[str, str]:
    return {"Cookie": f"{SESSION_COOKIE}={cookie}", "X-CSRF": "1", "Accept": "application/json"}


def seed_flows(bff_origin: str, cookie: str, count: int) -> tuple[str, str]:
    """Create ``count`` flows through the BFF; returns the id and ETag of the first."""
    headers = {**bff_headers(cookie), "Origin": bff_origin}
    first: tuple[str, str] | None = None
    with httpx.Client(base_url=bff_origin, trust_env=False, timeout=REQUEST_TIMEOUT) as http:
        for number in range(1, count + 1):
            body = {
                "name": f"bench-flow-{number:02d}",
                "sourceId": SOURCE_ID,
                "destinationId": DESTINATION_ID,
                "retryPolicy": {"maxAttempts": 3, "backoffSeconds": 10},
            }
            created = http.post(BFF_FLOWS, json=body, headers=headers)
            if created.status_code != 201:
                raise BenchError(
                    f"creating a flow answered {created.status_code}: {created.text[:300]}"
                )
            if first is None:
                first = (created.json()["id"], created.headers.get("etag", ""))
    assert first is not None
    if not first[1]:
        raise BenchError("the BFF sent no ETag for a created flow")
    return first


# --- load --------------------------------------------------------------------------------------


@dataclass
class Variant:
    key: str
    label: str
    url: str
    headers: dict[str, str]
    expected_status: int
    server: Child
    """The process answering the request (whose CPU time is charged to this variant)."""
    upstream: Child | None = None
    """The sandbox, when the variant goes through a BFF."""
    latencies: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    server_cpu: float = 0.0
    upstream_cpu: float = 0.0


async def fetch(session: aiohttp.ClientSession, variant: Variant) -> bytes:
    try:
        async with session.get(variant.url, headers=variant.headers) as response:
            body = await response.read()
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise BenchError(f"({variant.key}) {variant.url}: {type(exc).__name__}: {exc}") from exc
    if response.status != variant.expected_status:
        raise BenchError(
            f"({variant.key}) {variant.label}: expected {variant.expected_status}, got "
            f"{response.status}: {body[:300].decode(errors='replace')}"
        )
    return body


async def run_slice(
    session: aiohttp.ClientSession, variant: Variant, seconds: float, concurrency: int
) -> None:
    stop_at = time.perf_counter() + seconds
    latencies = variant.latencies

    async def worker() -> None:
        while (started := time.perf_counter()) < stop_at:
            await fetch(session, variant)
            latencies.append(time.perf_counter() - started)

    server_before = variant.server.cpu_seconds()
    upstream_before = variant.upstream.cpu_seconds() if variant.upstream else None
    started = time.perf_counter()
    # A task group stops every worker as soon as one of them meets an unexpected answer.
    try:
        async with asyncio.TaskGroup() as workers:
            for _ in range(concurrency):
                workers.create_task(worker())
    except ExceptionGroup as group:
        raise group.exceptions[0] from None
    variant.elapsed += time.perf_counter() - started
    server_after = variant.server.cpu_seconds()
    if server_before is not None and server_after is not None:
        variant.server_cpu += server_after - server_before
    if variant.upstream is not None and upstream_before is not None:
        upstream_after = variant.upstream.cpu_seconds()
        if upstream_after is not None:
            variant.upstream_cpu += upstream_after - upstream_before


async def drive(
    variants: list[Variant], duration: float, slice_seconds: float, concurrency: int
) -> None:
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, cookie_jar=aiohttp.DummyCookieJar()
    ) as session:
        for variant in variants:
            # Open the connections and fill the caches before measuring.
            await asyncio.gather(*(fetch(session, variant) for _ in range(concurrency)))
        slices = max(1, round(duration / slice_seconds))
        # Every slice is bounded in time, so the whole run is bounded too; this is the backstop.
        budget = slices * len(variants) * (slice_seconds + REQUEST_TIMEOUT)
        try:
            async with asyncio.timeout(budget):
                await measure_all(session, variants, slices, slice_seconds, concurrency)
        except TimeoutError:
            raise BenchError(f"the run took longer than {budget:.0f} s") from None


async def measure_all(
    session: aiohttp.ClientSession,
    variants: list[Variant],
    slices: int,
    slice_seconds: float,
    concurrency: int,
) -> None:
    # Short interleaved slices spread any outside load on the machine over every variant.
    for number in range(1, slices + 1):
        for variant in variants:
            await run_slice(session, variant, slice_seconds, concurrency)
        if number % max(1, slices // 3) == 0 or number == slices:
            rates = ", ".join(f"({v.key}) {len(v.latencies) / v.elapsed:.0f}" for v in variants)
            print(f"  after slice {number}/{slices}: {rates} requests/s", flush=True)


def percentile(sorted_values: list[float], share: float) -> float:
    """Nearest-rank percentile of an ascending list."""
    index = min(len(sorted_values) - 1, max(0, math.ceil(share * len(sorted_values)) - 1))
    return sorted_values[index]


def report(variants: list[Variant], concurrency: int, slice_seconds: float) -> None:
    baseline = len(variants[0].latencies) / variants[0].elapsed
    print(
        f"\n{concurrency} concurrent requests, {variants[0].elapsed:.1f} s per variant in "
        f"interleaved slices of {slice_seconds:g} s ({os.cpu_count()} CPUs):\n"
    )
    print(
        f"  {'variant':<40} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'vs (a)':>7}"
        f" {'server CPU ms/req':>18} {'sandbox CPU ms/req':>19}"
    )
    for v in variants:
        count = len(v.latencies)
        rate = count / v.elapsed
        ordered = sorted(v.latencies)
        upstream = f"{1000 * v.upstream_cpu / count:19.3f}" if v.upstream else f"{'-':>19}"
        print(
            f"  ({v.key}) {v.label:<36} {rate:7.0f} {1000 * percentile(ordered, 0.5):7.1f}"
            f" {1000 * percentile(ordered, 0.99):7.1f} {rate / baseline:7.2f}"
            f" {1000 * v.server_cpu / count:18.3f} {upstream}"
        )
    print(
        "\n  server CPU: the process answering (the sandbox for (a), a BFF otherwise);"
        "\n  sandbox CPU: what the sandbox spent on the BFF's upstream calls."
    )
    by_key = {v.key: v for v in variants}
    logged, quiet = by_key.get("c"), by_key.get("f")
    if logged and quiet and logged.latencies and quiet.latencies:
        rate_ratio = (len(logged.latencies) / logged.elapsed) / (
            len(quiet.latencies) / quiet.elapsed
        )
        cpu_ratio = (logged.server_cpu / len(logged.latencies)) / (
            quiet.server_cpu / len(quiet.latencies)
        )
        print(
            f"\n  the access log: (c)/(f) = {rate_ratio:.3f} in requests/s, "
            f"{cpu_ratio:.3f} in BFF CPU per request"
        )


def variants_for(stack: Stack, cookies: dict[str, str], flow: tuple[str, str]) -> list[Variant]:
    flow_id, etag = flow
    cached, uncached, quiet = stack.bff_cached, stack.bff_uncached, stack.bff_quiet
    api_key = {"Authorization": f"Bearer {API_KEY}", "Accept": "application/json"}

    def conditional(bff: Child) -> dict[str, str]:
        return {**bff_headers(cookies[bff.name]), "If-None-Match": etag}

    return [
        Variant("a", "sandbox list flows, API key", stack.sandbox.origin + SANDBOX_FLOWS,
                api_key, 200, stack.sandbox),
        Variant("b", "BFF list flows, micro-cache on", cached.origin + BFF_FLOWS,
                bff_headers(cookies[cached.name]), 200, cached, stack.sandbox),
        Variant("c", "BFF list flows, micro-cache off", uncached.origin + BFF_FLOWS,
                bff_headers(cookies[uncached.name]), 200, uncached, stack.sandbox),
        Variant("d", "BFF get flow, 304, micro-cache on", f"{cached.origin}{BFF_FLOWS}/{flow_id}",
                conditional(cached), 304, cached, stack.sandbox),
        Variant("e", "BFF get flow, 304, micro-cache off",
                f"{uncached.origin}{BFF_FLOWS}/{flow_id}", conditional(uncached), 304, uncached,
                stack.sandbox),
        Variant("f", "BFF list, cache off, no access log", quiet.origin + BFF_FLOWS,
                bff_headers(cookies[quiet.name]), 200, quiet, stack.sandbox),
    ]  # fmt: skip


def check_pages(variants: list[Variant], flows: int) -> None:
    """The list variants return full pages: the run measures what it claims to."""
    expected = min(flows, PAGE_LIMIT)
    with httpx.Client(trust_env=False, timeout=REQUEST_TIMEOUT) as http:
        for variant in variants:
            if variant.expected_status != 200:
                continue
            response = http.get(variant.url, headers=variant.headers)
            if response.status_code != 200:
                raise BenchError(
                    f"({variant.key}) {variant.label}: expected 200, got "
                    f"{response.status_code}: {response.text[:300]}"
                )
            page = response.json()
            items = page.get("delivery_flows", page.get("items"))
            if not isinstance(items, list) or len(items) != expected:
                raise BenchError(f"({variant.key}) returned {items!r:.200}, not {expected} flows")


def run(args: argparse.Namespace) -> None:
    with (
        tempfile.TemporaryDirectory(prefix="bff-bench-") as root,
        running_stack(Path(root)) as stack,
    ):
        print(
            f"sandbox {stack.sandbox.origin}, provider {stack.idp.origin}, "
            f"BFF {stack.bff_cached.origin} (micro-cache on), "
            f"{stack.bff_uncached.origin} (off), {stack.bff_quiet.origin} (off, no access log)",
            flush=True,
        )
        cookies = {bff.name: sign_in(bff.origin) for bff in stack.bffs}
        flow = seed_flows(stack.bff_cached.origin, cookies[stack.bff_cached.name], args.flows)
        variants = variants_for(stack, cookies, flow)
        check_pages(variants, args.flows)
        print(f"signed in as {USER}, {args.flows} flows created; measuring", flush=True)
        asyncio.run(drive(variants, args.duration, args.slice, args.concurrency))
        for child in stack.children:
            if not child.running():
                raise BenchError(f"{child.name} exited during the run:\n{child.tail()}")
        report(variants, args.concurrency, args.slice)


def _stop_on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=6.0, help="measured seconds per variant (default 6)"
    )
    parser.add_argument(
        "--concurrency", type=int, default=16, help="concurrent requests (default 16)"
    )
    parser.add_argument("--slice", type=float, default=0.5, help="seconds of one slice")
    parser.add_argument("--flows", type=int, default=20, help="flows to create (default 20)")
    args = parser.parse_args()
    if not (0 < args.duration <= 600 and 0 < args.slice <= args.duration):
        parser.error("--duration must be in (0, 600] and --slice in (0, duration]")
    if not 1 <= args.concurrency <= 1000 or not 1 <= args.flows <= 100:
        parser.error("--concurrency must be 1 to 1000 and --flows 1 to 100")

    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        run(args)
    except BenchError as exc:
        print(f"bff_bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bff_bench: interrupted; child processes stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
