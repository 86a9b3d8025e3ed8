"""Tests of the real-kernel zram driver (zmem._kernel); skipped without root/zram."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import lzo
import pytest

from zmem._kernel import (
    PAGE_SIZE,
    KernelZram,
    kernel_compressed_sizes,
    kernel_zram_available,
)

AVAILABLE, WHY = kernel_zram_available()
pytestmark = pytest.mark.kernel


def _zram_devices() -> set[str]:
    return {p.name for p in Path("/sys/block").glob("zram*")}


@pytest.fixture(autouse=True)
def _no_leaked_devices() -> Iterator[None]:
    if not AVAILABLE:
        pytest.skip(f"kernel zram unavailable: {WHY}")
    before = _zram_devices()
    yield
    assert _zram_devices() == before, "a test left a zram device behind"


@pytest.fixture
def zram() -> Iterator[KernelZram]:
    with KernelZram(4 << 20, "lzo") as dev:
        yield dev


def _lzo_page() -> bytes:
    # Random bytes have no 4-byte repeats to find, so any LZO1X-1 implementation
    # emits one literal run plus one zero match: sizes agree exactly.
    return random.Random(7).randbytes(1000) + bytes(3096)


def test_available_reports_reason() -> None:
    ok, why = kernel_zram_available()
    assert ok and why == ""


def test_device_created_configured_and_removed() -> None:
    dev = KernelZram(1 << 20, "lzo", mem_limit=1 << 20)
    try:
        assert dev.name not in ("zram0", "") and dev.name in _zram_devices()
        sysdir = Path("/sys/block") / dev.name
        assert "[lzo]" in (sysdir / "comp_algorithm").read_text()
        assert int((sysdir / "disksize").read_text()) == 1 << 20
        assert dev.mm_stat()["mem_limit"] == 1 << 20
        assert set(dev.mm_stat()) == {
            "orig_data_size", "compr_data_size", "mem_used_total", "mem_limit",
            "mem_used_max", "same_pages", "pages_compacted", "huge_pages", "huge_pages_since",
        }
        assert dev.io_stat() == dict.fromkeys(
            ("failed_reads", "failed_writes", "invalid_io", "notify_free"), 0
        )
    finally:
        dev.close()
    assert dev.closed and dev.name not in _zram_devices()
    dev.close()  # idempotent


def test_failure_in_body_still_removes_device() -> None:
    name = ""
    with pytest.raises(RuntimeError):
        with KernelZram(1 << 20) as dev:
            name = dev.name
            raise RuntimeError("boom")
    assert name and name not in _zram_devices()


def test_bad_algorithm_removes_device() -> None:
    with pytest.raises(OSError):
        KernelZram(1 << 20, "no-such-compressor")


def test_lzo_page_size_matches_python_lzo(zram: KernelZram) -> None:
    page = _lzo_page()
    zram.write_page(0, page)  # O_DIRECT: the counters move before write() returns
    st = zram.mm_stat()
    assert st["compr_data_size"] == len(lzo.compress(page, 1, False))
    assert st["orig_data_size"] == PAGE_SIZE
    assert st["same_pages"] == 0 and st["huge_pages"] == 0
    assert zram.read(0, PAGE_SIZE) == page


def test_same_filled_page(zram: KernelZram) -> None:
    zram.write_page(3, b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512)
    zram.write_page(4, bytes(PAGE_SIZE))
    st = zram.mm_stat()
    assert st["same_pages"] == 2
    assert st["compr_data_size"] == 0 and st["orig_data_size"] == 2 * PAGE_SIZE
    assert zram.read(3 * PAGE_SIZE, PAGE_SIZE) == b"\x01\x02\x03\x04\x05\x06\x07\x08" * 512


def test_huge_page(zram: KernelZram) -> None:
    zram.write_page(0, os.urandom(PAGE_SIZE))
    st = zram.mm_stat()
    assert st["huge_pages"] == 1 and st["huge_pages_since"] == 1
    assert st["compr_data_size"] == PAGE_SIZE


def test_multi_page_write_read_and_discard(zram: KernelZram) -> None:
    data = b"".join(_lzo_page()[:PAGE_SIZE - 1] + bytes([i]) for i in range(8))
    zram.write(PAGE_SIZE, data)
    assert zram.mm_stat()["orig_data_size"] == 8 * PAGE_SIZE
    assert zram.read(0, 10 * PAGE_SIZE) == bytes(PAGE_SIZE) + data + bytes(PAGE_SIZE)
    zram.discard(2 * PAGE_SIZE, 3 * PAGE_SIZE)
    assert zram.mm_stat()["orig_data_size"] == 5 * PAGE_SIZE
    assert zram.io_stat()["notify_free"] == 3
    assert zram.read(2 * PAGE_SIZE, 3 * PAGE_SIZE) == bytes(3 * PAGE_SIZE)


def test_unaligned_io_is_rejected(zram: KernelZram) -> None:
    with pytest.raises(ValueError):
        zram.write(100, bytes(PAGE_SIZE))
    with pytest.raises(ValueError):
        zram.write(0, bytes(100))
    with pytest.raises(ValueError):
        zram.write(zram.disksize, bytes(PAGE_SIZE))
    with pytest.raises(ValueError):
        zram.write_page(0, bytes(PAGE_SIZE * 2))


def test_mem_limit_write_fails_with_eio() -> None:
    with KernelZram(4 << 20, "lzo") as dev:
        dev.write_page(0, _lzo_page())
        dev.set_mem_limit(dev.mm_stat()["mem_used_total"])
        with pytest.raises(OSError) as err:
            dev.write(PAGE_SIZE, os.urandom(64 * PAGE_SIZE))
        assert err.value.errno == 5  # EIO
        assert dev.io_stat()["failed_writes"] >= 1
        dev.write_page(100, bytes(PAGE_SIZE))  # same-filled pages need no memory
        dev.reset_mem_used_max()
        dev.compact()
        st = dev.mm_stat()
        assert st["mem_used_max"] == st["mem_used_total"]


def test_kernel_compressed_sizes() -> None:
    pages = [bytes(PAGE_SIZE), b"abcdefgh" * 512, os.urandom(PAGE_SIZE), _lzo_page()]
    sizes = kernel_compressed_sizes(b"".join(pages), "lzo")
    assert sizes == [0, 0, PAGE_SIZE, len(lzo.compress(_lzo_page(), 1, False))]
    assert kernel_compressed_sizes(b"") == []
    with pytest.raises(ValueError):
        kernel_compressed_sizes(bytes(100))


def test_kernel_compressed_sizes_repeat_pages_in_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    import zmem._kernel as k

    monkeypatch.setattr(k, "_SCRATCH_SLOTS", 3)  # force several discard-and-reuse rounds
    page = _lzo_page()
    sizes = kernel_compressed_sizes(page * 7, "lzo")
    assert sizes == [len(lzo.compress(page, 1, False))] * 7


def test_kernel_lzo_close_to_python_lzo_on_real_pages() -> None:
    from zmem._corpus import corpus_names, load_corpus

    if not corpus_names():
        pytest.skip("no corpora")
    raw = load_corpus(corpus_names()[0])[: 512 * PAGE_SIZE]
    kernel = kernel_compressed_sizes(raw, "lzo")
    ours = 0
    theirs = 0
    for i, size in enumerate(kernel):
        page = raw[i * PAGE_SIZE : (i + 1) * PAGE_SIZE]
        if 0 < size < PAGE_SIZE:
            ours += len(lzo.compress(page, 1, False))
            theirs += size
    # The kernel's LZO1X-1 is its own implementation (smaller hash table): page
    # sizes differ by a few bytes, totals by well under 1 %.
    assert abs(theirs / ours - 1) < 0.01


def test_unaligned_source_buffer_is_copied(zram: KernelZram) -> None:
    # zram mishandles O_DIRECT buffers that are not page aligned; the driver must
    # copy through its aligned buffer so any source view works.
    backing = bytearray(3 * PAGE_SIZE)
    page = _lzo_page()
    backing[1 : 1 + PAGE_SIZE] = page
    zram.write_page(5, memoryview(backing)[1 : 1 + PAGE_SIZE])
    assert zram.read(5 * PAGE_SIZE, PAGE_SIZE) == page
