"""Throughput of the backend client's transport choices against a local nginx.

Starts nginx from a temporary configuration on a free 127.0.0.1 port, serving one static JSON
page of flows, then runs each variant for a fixed time with a fixed number of concurrent calls
on one event loop, in short interleaved slices so that outside load on the machine falls on
every variant alike, and prints calls per second and the ratio to stock httpx:

- ``httpx (httpcore)``: ``httpx.AsyncClient`` with its own transport;
- ``httpx over httpx-aiohttp``: ``httpx.AsyncClient`` over ``AiohttpTransport``;
- ``BackendClient (default)``: ``BackendClient.list_flows`` with its default transport;
- ``BackendClient (httpcore)``: the same client over httpx's own transport;
- ``BackendClient (DPoP)``: the default client with a DPoP-bound token, so every call also
  makes a proof (the gateway's per-session key, :mod:`bff.auth.dpop`): the difference to
  ``BackendClient (default)`` is what a proof costs per upstream call;
- ``raw aiohttp``: ``aiohttp.ClientSession.get``.

Every variant reads the whole body and decodes it into ``FlowPage``, so only the HTTP stack
differs. Exits non-zero when nginx is not installed.

    python bench/upstream_client_bench.py [--seconds 3] [--rounds 2] [--slice 0.5]
        [--concurrency 32] [--flows 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httpx
import msgspec
from httpx_aiohttp import AiohttpTransport

from bff.auth.dpop import DPoPKey
from upstream_client import BackendClient, DPoPToken, FlowPage, Limits, TLSConfig

TENANT = "ten_acme"
PATH = f"/v1/tenants/{TENANT}/delivery-flows"
TOKEN = "zen_key_bench"
PAGE_DECODER = msgspec.json.Decoder(FlowPage)

NGINX_CONF = """\
daemon off;
worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 60s;
    server {{
        listen 127.0.0.1:{port};
        location = {path} {{
            default_type application/json;
            alias {root}/page.json;
        }}
    }}
}}
"""


def flow_page(count: int) -> bytes:
    flows = [
        {
            "id": f"flow_{i:04d}",
            "tenant_id": TENANT,
            "cluster_id": "plane_dev_us_east_1",
            "name": f"flow-{i}",
            "source_id": "ing_stripe_prod",
            "destination_id": "dest_orders_api",
            "config": {"retry_policy": {"max_attempts": 3, "backoff_seconds": 10}},
            "version": 1,
            "created_at": "2026-01-01T00:00:00Z",
            "updated_at": "2026-01-01T00:00:00Z",
        }
        for i in range(count)
    ]
    return msgspec.json.encode({"delivery_flows": flows, "next_cursor": None})


def httpcore_transport(limits: Limits, tls: TLSConfig | None) -> httpx.AsyncBaseTransport:
    """httpx's own transport with the limits and TLS the client's default transport honours."""
    return httpx.AsyncHTTPTransport(
        verify=tls.ssl_context() if tls is not None else True,
        trust_env=False,
        limits=httpx.Limits(
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
        ),
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nginx did not listen on 127.0.0.1:{port}")


Call = Callable[[], Awaitable[object]]


async def measure(call: Call, seconds: float, concurrency: int) -> tuple[int, float]:
    """Calls completed and time taken by ``concurrency`` workers looping ``call``."""
    count = 0
    stop_at = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal count
        while time.perf_counter() < stop_at:
            await call()
            count += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return count, time.perf_counter() - started


async def run_variants(
    base_url: str, seconds: float, concurrency: int, rounds: int, slice_seconds: float
) -> None:
    url = base_url + PATH
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"}
    limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)

    stock = httpx.AsyncClient(limits=limits, trust_env=False)
    over_aiohttp = httpx.AsyncClient(
        transport=AiohttpTransport(limits=limits, trust_env=False), trust_env=False
    )
    backend = BackendClient(base_url)
    backend_httpcore = BackendClient(
        base_url, transport=httpcore_transport(Limits(max_keepalive_connections=100), None)
    )
    session = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())

    async def call_stock() -> object:
        response = await stock.get(url, headers=headers)
        return PAGE_DECODER.decode(response.content)

    probe = await stock.get(url, headers=headers)
    if probe.status_code != 200:
        raise RuntimeError(f"nginx answered {probe.status_code}: {probe.text[:200]}")

    async def call_over_aiohttp() -> object:
        response = await over_aiohttp.get(url, headers=headers)
        return PAGE_DECODER.decode(response.content)

    async def call_backend() -> object:
        return await backend.list_flows(TENANT, token=TOKEN)

    bound = DPoPToken(TOKEN, DPoPKey.generate())

    async def call_backend_dpop() -> object:
        return await backend.list_flows(TENANT, token=bound)

    async def call_backend_httpcore() -> object:
        return await backend_httpcore.list_flows(TENANT, token=TOKEN)

    async def call_aiohttp() -> object:
        async with session.get(url, headers=headers) as response:
            return PAGE_DECODER.decode(await response.read())

    variants: dict[str, Call] = {
        "httpx (httpcore)": call_stock,
        "httpx over httpx-aiohttp": call_over_aiohttp,
        "BackendClient (default)": call_backend,
        "BackendClient (DPoP)": call_backend_dpop,
        "BackendClient (httpcore)": call_backend_httpcore,
        "raw aiohttp": call_aiohttp,
    }
    calls: dict[str, int] = dict.fromkeys(variants, 0)
    elapsed: dict[str, float] = dict.fromkeys(variants, 0.0)
    slices = max(1, round(seconds / slice_seconds))
    try:
        for call in variants.values():
            for _ in range(concurrency):
                await call()  # open the pools before measuring
        # Short interleaved slices spread any outside load on the machine over every variant.
        for round_number in range(1, rounds + 1):
            for _ in range(slices):
                for name, call in variants.items():
                    count, took = await measure(call, slice_seconds, concurrency)
                    calls[name] += count
                    elapsed[name] += took
            summary = ", ".join(f"{n} {calls[n] / elapsed[n]:.0f}" for n in variants)
            print(f"  after round {round_number}: {summary}", flush=True)
    finally:
        await stock.aclose()
        await over_aiohttp.aclose()
        await backend.aclose()
        await backend_httpcore.aclose()
        await session.close()

    baseline = calls["httpx (httpcore)"] / elapsed["httpx (httpcore)"]
    print(
        f"\n{concurrency} concurrent calls, {rounds * slices} interleaved slices "
        f"of {slice_seconds:g}s per variant:"
    )
    for name in variants:
        rate = calls[name] / elapsed[name]
        print(f"  {name:<26} {rate:8.0f} calls/s   x{rate / baseline:5.2f} vs stock httpx")
    default, dpop = (
        calls[name] / elapsed[name] for name in ("BackendClient (default)", "BackendClient (DPoP)")
    )
    print(
        f"  a DPoP proof per call: x{dpop / default:.2f} of the default client's calls/s, "
        f"{(1 / dpop - 1 / default) * 1e6:.0f} µs more per call"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="measured seconds per variant and round"
    )
    parser.add_argument("--concurrency", type=int, default=32, help="concurrent calls")
    parser.add_argument("--rounds", type=int, default=2, help="runs of every variant")
    parser.add_argument("--slice", type=float, default=0.5, help="seconds of one slice")
    parser.add_argument("--flows", type=int, default=20, help="flows in the served page")
    args = parser.parse_args()

    nginx = shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )
    if nginx is None:
        print("nginx is not installed; install it (apt-get install -y nginx) to run this benchmark")
        return 1

    with tempfile.TemporaryDirectory(prefix="upstream-bench-") as root:
        # nginx workers drop privileges: they must be able to read the page.
        os.chmod(root, 0o755)
        port = free_port()
        Path(root, "page.json").write_bytes(flow_page(args.flows))
        conf = Path(root, "nginx.conf")
        conf.write_text(NGINX_CONF.format(root=root, port=port, path=PATH))
        process = subprocess.Popen(
            [nginx, "-p", root, "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            wait_for_port(port, time.monotonic() + 10)
            print(f"nginx on 127.0.0.1:{port}, {args.flows} flows per page ({os.cpu_count()} CPUs)")
            base_url = f"http://127.0.0.1:{port}"
            asyncio.run(
                run_variants(base_url, args.seconds, args.concurrency, args.rounds, args.slice)
            )
        finally:
            process.send_signal(signal.SIGQUIT)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            if process.stderr is not None:
                process.stderr.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
