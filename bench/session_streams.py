"""What an open session event stream costs the gateway while nothing happens: memory per stream,
and CPU per heartbeat per stream.

Starts, on free 127.0.0.1 ports, the development OpenID provider and one ``bff serve`` (one
uvicorn worker, sessions in memory, JSON logs as ``bff serve`` writes them) whose heartbeat is
``--heartbeat`` seconds, signs in as alice over HTTP as a browser does, and then:

1. measures the idle process: its resident memory, and its CPU over ``--seconds``;
2. opens ``--streams`` streams of that session (``GET /api/bff/v1/auth/session/events`` with
   ``Sec-Fetch-Site: same-origin``) from one aiohttp client, each read to its first block;
3. measures again: resident memory with the streams open, and CPU over ``--seconds``, during
   which every stream beats ``seconds / heartbeat`` times; each stream's reader counts its
   heartbeats, and the run fails unless every stream beat as often as it should;
4. prints memory per stream (KiB), CPU per heartbeat per stream (µs), and what that CPU comes to
   at the default heartbeat (15 s) for 1000 streams.

CPU and memory are read from ``/proc`` (Linux). Every child is stopped at the end.

    python bench/session_streams.py [--streams 1000] [--heartbeat 1] [--seconds 20]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import aiohttp
import httpx

REPO = Path(__file__).resolve().parents[1]
# The end-to-end tests' process runner and browser sign-in are reused as they are.
sys.path.insert(0, str(REPO))
from tests.support.oidc_login import browser_login  # noqa: E402
from tests.support.ports import free_ports  # noqa: E402
from tests.support.processes import BFF_SCRIPT, clean_environ, serving  # noqa: E402

CONFIG = str(REPO / "config" / "dev.toml")
EVENTS = "/api/bff/v1/auth/session/events"
DEFAULT_HEARTBEAT = 15.0
_TICKS = os.sysconf("SC_CLK_TCK")
_PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def resident_kib(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_KIB


def cpu_over(pid: int, seconds: float) -> float:
    start = cpu_seconds(pid)
    time.sleep(seconds)
    return cpu_seconds(pid) - start


async def hold_streams(
    url: str, cookie: str, count: int, opened: asyncio.Event, stop: asyncio.Event
) -> list[int]:
    """Open ``count`` streams, set ``opened`` once each said its first block, keep reading
    until ``stop``; return each stream's heartbeats."""
    beats = [0] * count
    ready = 0
    headers = {"Sec-Fetch-Site": "same-origin", "Cookie": cookie}
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=None, sock_read=None)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as client:

        async def one(index: int) -> None:
            nonlocal ready
            async with client.get(url, headers=headers) as response:
                if response.status != 200:
                    raise SystemExit(f"stream {index}: {response.status} {await response.text()}")
                first = True
                async for line in response.content:
                    if first:
                        first = False
                        ready += 1
                        if ready == count:
                            opened.set()
                    elif line.startswith(b": heartbeat"):
                        beats[index] += 1

        tasks = [asyncio.create_task(one(index)) for index in range(count)]
        await stop.wait()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return beats


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--heartbeat", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    bff_port, idp_port = free_ports(2)
    bff, idp = f"http://127.0.0.1:{bff_port}", f"http://127.0.0.1:{idp_port}"
    provider_argv = [
        sys.executable, "-m", "devstack.idp", "--config", CONFIG, "--port", str(idp_port),
        "--redirect-uri", f"{bff}/api/bff/v1/auth/callback",
    ]  # fmt: skip
    with ExitStack() as stack:
        stack.enter_context(
            serving(
                provider_argv,
                name="the provider",
                url=idp,
                ready="/.well-known/openid-configuration",
            )
        )
        server = stack.enter_context(
            serving(
                [str(BFF_SCRIPT), "serve", "--config", CONFIG, "--port", str(bff_port)],
                name="the BFF",
                url=bff,
                env=clean_environ(
                    BFF__BFF__PUBLIC_ORIGIN=bff,
                    BFF__OIDC__ISSUER=idp,
                    BFF__SESSION_EVENTS__HEARTBEAT_SECONDS=str(args.heartbeat),
                    BFF__SESSION_EVENTS__MAX_STREAMS_PER_SESSION=str(args.streams),
                    BFF__SESSION_EVENTS__MAX_STREAMS=str(args.streams),
                ),
            )
        )
        with httpx.Client(trust_env=False) as browser:
            browser_login(browser, bff, "alice")
            cookie = "; ".join(f"{name}={value}" for name, value in browser.cookies.items())
        pid = server.process.pid
        time.sleep(1.0)
        idle_kib = resident_kib(pid)
        idle_cpu = cpu_over(pid, args.seconds)

        async def measured() -> tuple[int, float, list[int]]:
            opened, stop = asyncio.Event(), asyncio.Event()
            holding = asyncio.create_task(
                hold_streams(bff + EVENTS, cookie, args.streams, opened, stop)
            )
            await asyncio.wait_for(opened.wait(), timeout=60)
            await asyncio.sleep(2.0)  # settled: the streams' first beats are behind them
            open_kib = resident_kib(pid)
            cpu = await asyncio.to_thread(cpu_over, pid, args.seconds)
            stop.set()
            return open_kib, cpu, await holding

        open_kib, open_cpu, beats = asyncio.run(measured())

    expected = args.seconds / args.heartbeat
    if min(beats) < expected - 1:
        print(f"a stream beat {min(beats)} times, not about {expected:g}", file=sys.stderr)
        return 1
    per_stream_kib = (open_kib - idle_kib) / args.streams
    beats_measured = args.streams * expected
    per_beat_us = (open_cpu - idle_cpu) / beats_measured * 1e6
    at_default = per_beat_us * 1e-6 * 1000 / DEFAULT_HEARTBEAT
    rows = [
        ("streams open", f"{args.streams} (one session, heartbeat {args.heartbeat:g} s)"),
        ("resident memory", f"{idle_kib / 1024:.1f} MiB idle, {open_kib / 1024:.1f} MiB open"),
        ("memory per stream", f"{per_stream_kib:.1f} KiB"),
        (f"CPU over {args.seconds:g} s", f"{idle_cpu:.2f} s idle, {open_cpu:.2f} s open"),
        ("CPU per heartbeat, stream", f"{per_beat_us:.0f} µs"),
        ("1000 streams, 15 s beats", f"{at_default * 100:.2f} % of one core"),
    ]
    for name, value in rows:
        print(f"{name + ':':27}{value}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
