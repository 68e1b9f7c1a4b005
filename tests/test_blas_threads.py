"""A live avatar gives its process's BLAS one thread: OpenBLAS's idle pool threads spin between
the small per-frame products a renderer asks for (a meshwarp session's job process used 128% of
a core idle with two threads, 32% with one; avatar_runtime.launch.limit_blas_threads)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json
from threadpoolctl import threadpool_info
import numpy
from avatar_runtime.launch import limit_blas_threads
before = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
limit_blas_threads()
after = [p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"]
print(json.dumps({"before": before, "after": after}))
"""


def _probe(blas_threads: str | None) -> dict[str, list[int]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENBLAS_", "OMP_"))}
    env["OPENBLAS_NUM_THREADS"] = "2"  # a pool to limit, whatever this machine's core count
    if blas_threads is not None:
        env["AVATAR_BLAS_THREADS"] = blas_threads
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_a_live_avatar_limits_blas_to_one_thread() -> None:
    threads = _probe(None)
    assert threads["before"] and all(n == 2 for n in threads["before"])
    assert all(n == 1 for n in threads["after"])


@pytest.mark.parametrize(("setting", "expected"), [("3", 3), ("0", 2)])
def test_avatar_blas_threads_sets_the_pool_or_leaves_it(setting: str, expected: int) -> None:
    threads = _probe(setting)
    assert all(n == expected for n in threads["after"])
