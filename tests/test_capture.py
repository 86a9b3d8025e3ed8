"""Tests of live-process page capture and the child workload (zmem._capture)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import numpy as np
import pytest

from zmem._capture import (
    PAGE_SIZE,
    Workload,
    _anon_mappings,
    _proc_state,
    _stratified_sample,
    capture_pages,
    capture_workload,
    run_workload,
)

MAPS = """\
55d0c0a00000-55d0c0a21000 r--p 00000000 fe:01 131 /usr/bin/python3.11
55d0c0c00000-55d0c0c02000 rw-p 00200000 fe:01 131 /usr/bin/python3.11
55d0c1000000-55d0c1400000 rw-p 00000000 00:00 0 [heap]
7f0000000000-7f0000100000 rw-p 00000000 00:00 0
7f0000100000-7f0000200000 ---p 00000000 00:00 0
7f0000200000-7f0000300000 rw-s 00000000 00:01 7 /dev/zero (deleted)
7f0000300000-7f0000301000 rw-p 00000000 00:00 0 [anon:jemalloc]
7f0000400000-7f0000401000 r--p 00000000 00:00 0
7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0 [stack]
7ffc000fe000-7ffc00100000 r--p 00000000 00:00 0 [vvar]
"""


def test_anon_mappings_selects_private_rw_anonymous() -> None:
    assert _anon_mappings(MAPS) == [
        (0x55D0C1000000, 0x55D0C1400000),
        (0x7F0000000000, 0x7F0000100000),
        (0x7F0000300000, 0x7F0000301000),
        (0x7FFC00000000, 0x7FFC00021000),
    ]


def test_stratified_sample_one_per_stratum() -> None:
    idx = _stratified_sample(1000, 64, seed=1)
    assert len(idx) == 64 and np.all(np.diff(idx) > 0)
    bounds = np.arange(65) * 1000 // 64
    assert np.all((idx >= bounds[:-1]) & (idx < bounds[1:]))
    assert np.array_equal(idx, _stratified_sample(1000, 64, seed=1))
    assert not np.array_equal(idx, _stratified_sample(1000, 64, seed=2))
    assert np.array_equal(_stratified_sample(10, 64, seed=1), np.arange(10))


@pytest.fixture(scope="module")
def workload() -> Iterator[Workload]:
    with run_workload(seconds=0.5, mb=32) as work:
        yield work


def _pages(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).reshape(-1, PAGE_SIZE)


def test_capture_workload_pages(workload: Workload) -> None:
    data = capture_pages(workload.pid)
    assert len(data) > 0 and len(data) % PAGE_SIZE == 0
    pages = _pages(data)
    assert pages.any(), "all captured pages are zero"
    # The child holds ~32 MiB of anonymous memory; nearly all of it is touched.
    assert len(pages) * PAGE_SIZE >= workload.rss_anon_kb * 1024 // 2
    assert _proc_state(workload.pid) not in "Tt", "capture left the workload stopped"


def test_capture_sample(workload: Workload) -> None:
    sample = capture_pages(workload.pid, max_pages=100, seed=3)
    assert len(sample) == 100 * PAGE_SIZE
    assert _pages(sample).any()


def test_capture_own_process() -> None:
    marker = b"zmem-capture-marker!" * 205  # keeps one recognisable page alive
    data = capture_pages(os.getpid())
    assert len(data) % PAGE_SIZE == 0 and len(data) > 0
    assert marker[:4000] in data


def test_capture_missing_process() -> None:
    with pytest.raises(OSError):
        capture_pages(2**22 + 12345)


def test_workload_stops() -> None:
    work = run_workload(seconds=0.0, mb=8)
    pid = work.pid
    assert work.rss_anon_kb >= 8 * 1024
    work.stop()
    assert not os.path.exists(f"/proc/{pid}") or _proc_state(pid) == "Z"
    work.stop()  # idempotent


def test_capture_workload_convenience() -> None:
    data = capture_workload(mb=8, max_pages=50)
    assert len(data) == 50 * PAGE_SIZE and _pages(data).any()
