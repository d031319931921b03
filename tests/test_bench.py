"""``bench/gateway_bench.py --quick`` runs end to end, so the harness of ``make bench`` cannot rot.

It starts the whole stack (sandbox, provider, nginx, Redis, the anchor arms, four BFFs: two with
sessions in memory, two of the production shape, sessions in Redis and the audit trail in a file)
and drives every arm with wrk for a second. The figures of so short a run on a shared machine say
nothing about speed, and nothing here asserts any: only that every arm answered, without errors,
that the Redis arms kept their sessions in Redis and audited their sign-ins, and that the report
and the chart are whole. Without nginx, wrk or redis-server the test skips with the reason, unless
``REQUIRE_BENCH=1``, ``REQUIRE_REDIS=1`` or ``CI=true`` is set: CI installs them, so there it
must run.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.bench, pytest.mark.e2e, pytest.mark.redis]

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench" / "gateway_bench.py"
ARMS = [
    "upstream-direct",
    "nginx-proxy",
    "starlette-static",
    "reference-aiohttp",
    "naive-httpx",
    "bff-uncached",
    "bff-redis-uncached",
    "bff-cached",
    "bff-redis-cached",
]
BFFS = [arm for arm in ARMS if arm.startswith("bff-")]
REDIS_TWINS = {"bff-redis-uncached": "bff-uncached", "bff-redis-cached": "bff-cached"}
"""Each production-shape arm and its twin with sessions in memory."""
TARGETS = [
    "uncached / reference-aiohttp",
    "uncached / naive-httpx",
    "cached / starlette-static",
    "added p50 at c=1 (ms)",
    "RSS (MB)",
    "redis-uncached / uncached",
    "redis-cached / cached",
]
RUN_TIMEOUT = 240.0


def _bench_required() -> bool:
    return (
        os.environ.get("REQUIRE_BENCH") == "1"
        or os.environ.get("REQUIRE_REDIS") == "1"
        or os.environ.get("CI") == "true"
    )


def _missing_tools() -> list[str]:
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/local/sbin"])
    return [
        tool for tool in ("nginx", "wrk", "redis-server") if shutil.which(tool, path=search) is None
    ]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one ``gateway_bench.py --quick`` run that exited 0."""
    if missing := _missing_tools():
        reason = (
            f"{' and '.join(missing)} not on PATH (apt-get install -y nginx-light wrk redis-server)"
        )
        if _bench_required():
            pytest.fail(f"{reason}; REQUIRE_BENCH=1, REQUIRE_REDIS=1 or CI=true forbids skipping")
        pytest.skip(reason)
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [sys.executable, str(BENCH), "--quick", "--out", str(out)],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr}"
    return out


@pytest.fixture(scope="module")
def report(quick_run: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((quick_run / "latest.json").read_text())
    return loaded


def test_every_arm_answered_only_2xx(report: dict[str, Any]) -> None:
    arms = {arm["name"]: arm for arm in report["arms"]}
    assert list(arms) == ARMS
    for name, arm in arms.items():
        assert arm["requests_per_second"] > 0, name
        assert arm["requests"] > 0, name
        assert arm["non_2xx"] == 0, name
        assert arm["socket_errors"] == 0, name
        assert 0 < arm["p50_ms"] <= arm["p99_ms"], name
        assert arm["p50_c1_ms"] > 0, name


def test_the_bffs_memory_is_reported(report: dict[str, Any]) -> None:
    assert list(report["bff_rss_mb"]) == BFFS
    assert all(rss > 0 for rss in report["bff_rss_mb"].values())


def test_the_redis_arms_have_the_production_shape(report: dict[str, Any]) -> None:
    shape = report["production_shape"]
    assert list(shape) == list(REDIS_TWINS)
    # A database each, so what one holds is its own sign-in's.
    assert len({arm["redis_url"] for arm in shape.values()}) == len(shape)
    for name, arm in shape.items():
        assert arm["redis_url"].startswith("redis://127.0.0.1:"), name
        assert arm["redis_keys"] >= 1, name
        assert arm["audit_events"] >= 1, name


def test_every_target_ratio_is_computed(report: dict[str, Any]) -> None:
    ratios = report["ratios"]
    assert [ratio["name"] for ratio in ratios] == TARGETS
    for ratio in ratios:
        assert math.isfinite(ratio["value"]), ratio
        assert ratio["comparison"] in {">=", "<="}
        expected = (
            ratio["value"] >= ratio["target"]
            if ratio["comparison"] == ">="
            else ratio["value"] <= ratio["target"]
        )
        assert ratio["met"] is expected, ratio
    rps = {arm["name"]: arm["requests_per_second"] for arm in report["arms"]}
    value = {ratio["name"]: ratio["value"] for ratio in ratios}
    assert value["uncached / naive-httpx"] == pytest.approx(
        rps["bff-uncached"] / rps["naive-httpx"], rel=1e-2
    )
    for redis_arm, twin in REDIS_TWINS.items():
        name = f"{redis_arm.removeprefix('bff-')} / {twin.removeprefix('bff-')}"
        assert value[name] == pytest.approx(rps[redis_arm] / rps[twin], rel=1e-2), name


def test_the_machine_is_described(report: dict[str, Any]) -> None:
    machine = report["machine"]
    assert machine["cores"] >= 1
    assert machine["python"]
    assert machine["timestamp"]
    assert len(machine["load_average"]["start"]) == 3
    assert report["settings"]["quick"] is True


def _planned(target: str) -> str:
    """The commands ``make <target>`` would run."""
    return subprocess.run(
        ["make", "--no-print-directory", "--dry-run", target],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def _bench_default_out() -> Path:
    spec = importlib.util.spec_from_file_location("gateway_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # Its dataclasses look their module up by name while they are made.
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[spec.name]
    out: Path = module.DEFAULT_OUT
    return out


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_bench_writes_where_git_ignores_and_only_bench_save_renews_the_figures() -> None:
    committed = REPO / "bench" / "results"
    out = _bench_default_out()
    assert out != committed
    for name in ("latest.json", "latest.png"):
        ignored = subprocess.run(
            ["git", "check-ignore", "--quiet", "--no-index", str(out / name)], cwd=REPO
        )
        assert ignored.returncode == 0, f"git would see {out / name}"
        tracked = subprocess.run(
            ["git", "ls-files", "--error-unmatch", str(committed / name)],
            cwd=REPO,
            capture_output=True,
        )
        assert tracked.returncode == 0, f"{committed / name} is the committed figure"
    assert "bench/gateway_bench.py" in _planned("bench")
    assert "bench/results" not in _planned("bench")
    assert "bench/gateway_bench.py --out bench/results" in _planned("bench-save")


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BYTES_PER_PIXEL = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
"""Per PNG colour type, at 8 bits per sample."""


def _png_pixels(data: bytes) -> tuple[int, int, bytes]:
    """Width, height and the decompressed scanlines of a PNG, every chunk's CRC checked."""
    assert data.startswith(PNG_SIGNATURE), "not a PNG"
    chunks: dict[bytes, list[bytes]] = {}
    offset = len(PNG_SIGNATURE)
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        body = data[offset + 8 : offset + 8 + length]
        (crc,) = struct.unpack(">I", data[offset + 8 + length : offset + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in the {kind!r} chunk"
        chunks.setdefault(kind, []).append(body)
        offset += 12 + length
    assert b"IEND" in chunks, "the PNG is truncated"
    width, height, depth, colour_type = struct.unpack(">IIBB", chunks[b"IHDR"][0][:10])
    assert depth == 8
    pixels = zlib.decompress(b"".join(chunks[b"IDAT"]))
    assert len(pixels) == height * (1 + width * BYTES_PER_PIXEL[colour_type])
    return width, height, pixels


def test_the_chart_is_a_png_of_sensible_size(quick_run: Path) -> None:
    width, height, pixels = _png_pixels((quick_run / "latest.png").read_bytes())
    assert 600 <= width <= 3000
    assert 300 <= height <= 3000
    # Not a blank canvas: bars and labels are drawn on it.
    assert len(set(pixels)) > 16
