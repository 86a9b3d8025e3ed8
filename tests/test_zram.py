"""Behaviour tests of zmem's userspace zram device (zmem._zram.Zram).

Reference: shared/reference/linux-compressed-memory.md §2 and Linux 6.18's
drivers/block/zram.  Writeback and recompression are not compiled into the
kernel of the test machine, so those are tested against the model only.
"""

from __future__ import annotations

import random
import re
import threading
import zlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zmem import (
    ALGORITHMS,
    BackingDeviceError,
    BdStat,
    DecompressionError,
    DebugStat,
    IoStat,
    MemLimitError,
    MmStat,
    OutOfRangeError,
    SlotFlag,
    UnsupportedAlgorithmError,
    Zram,
    ZmemError,
    get_codec,
)
from zmem._corpus import corpus_names, load_corpus

PAGE = 4096
HUGE_CLASS_SIZE = 3625  # chain size 8, 4 KiB pages
LZO = get_codec("lzo")


# ----------------------------------------------------------------------
# page makers (deterministic)

def rand_page(seed: int) -> bytes:
    """Incompressible: stored HUGE by every algorithm."""
    return random.Random(seed).randbytes(PAGE)


def comp_page(seed: int, k: int = 1000) -> bytes:
    """k random bytes then zeros: compresses to about k bytes."""
    return random.Random(seed).randbytes(k) + bytes(PAGE - k)


def same_page(word: bytes) -> bytes:
    assert len(word) == 8
    return word * 512


def alpha_page(seed: int, symbols: int = 16) -> bytes:
    """Random bytes from a small alphabet: LZ-only codecs (lzo, lz4) find almost no
    matches and store it HUGE, entropy coders (zstd, deflate) halve it."""
    r = random.Random(seed)
    return bytes(r.randrange(symbols) for _ in range(PAGE))


def text_page(seed: int) -> bytes:
    r = random.Random(seed)
    words = [bytes(r.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(r.randint(2, 9)))
             for _ in range(200)]
    out = bytearray()
    while len(out) < PAGE:
        out += r.choice(words) + b" "
    return bytes(out[:PAGE])


def lzo_len(page: bytes) -> int:
    return len(LZO.compress(page))


def whole(z: Zram) -> bytes:
    return z.read(0, z.disksize)


def flags(z: Zram, i: int) -> SlotFlag:
    return z.slot_info(i)["flags"]


@pytest.fixture
def z():
    dev = Zram(64 * PAGE, "lzo")
    yield dev
    dev.close()


# ----------------------------------------------------------------------
# round trips

def test_whole_page_round_trip_spanning_many_pages(z):
    data = b"".join(comp_page(i, 200 + 50 * i) if i % 3 else text_page(i) for i in range(40))
    z.write(8 * PAGE, data)
    assert z.read(8 * PAGE, len(data)) == data
    assert z.read(0, 8 * PAGE) == bytes(8 * PAGE)
    assert z.read(48 * PAGE, 16 * PAGE) == bytes(16 * PAGE)
    assert z.mm_stat().orig_data_size == 40 * PAGE


@pytest.mark.parametrize("offset,length", [
    (0, 1), (1, 1), (4095, 1), (4095, 2), (100, 5000), (4000, 200),
    (3 * PAGE - 5, 2 * PAGE + 10), (PAGE, PAGE - 1), (7, 10 * PAGE), (63 * PAGE + 1, PAGE - 1),
])
def test_partial_write_is_read_modify_write(z, offset, length):
    base = b"".join(text_page(i) for i in range(64))
    z.write(0, base)
    model = bytearray(base)
    data = random.Random(offset).randbytes(length)
    z.write(offset, data)
    model[offset:offset + length] = data
    assert whole(z) == bytes(model)
    # the exact range and one byte around it
    lo, hi = max(0, offset - 1), min(z.disksize, offset + length + 1)
    assert z.read(lo, hi - lo) == bytes(model[lo:hi])
    assert z.mm_stat().orig_data_size == 64 * PAGE


def test_partial_write_to_unwritten_page_allocates_it_with_zeros_around(z):
    z.write(5 * PAGE + 10, b"abc")
    assert z.read(5 * PAGE, PAGE) == bytes(10) + b"abc" + bytes(PAGE - 13)
    assert z.slot_info(5)["allocated"]
    assert not z.slot_info(4)["allocated"] and not z.slot_info(6)["allocated"]
    assert z.mm_stat().orig_data_size == PAGE


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_arbitrary_offset_and_length_round_trip(data):
    with Zram(16 * PAGE, "lzo") as dev:
        model = bytearray(dev.disksize)
        for _ in range(data.draw(st.integers(1, 4))):
            off = data.draw(st.integers(0, dev.disksize - 1))
            n = data.draw(st.integers(0, min(3 * PAGE, dev.disksize - off)))
            kind = data.draw(st.sampled_from(["rand", "zero", "byte", "text"]))
            seed = data.draw(st.integers(0, 2**16))
            if kind == "rand":
                buf = random.Random(seed).randbytes(n)
            elif kind == "zero":
                buf = bytes(n)
            elif kind == "byte":
                buf = bytes([seed & 0xFF]) * n
            else:
                buf = (text_page(seed) * 4)[:n]
            dev.write(off, buf)
            model[off:off + n] = buf
            roff = data.draw(st.integers(0, dev.disksize))
            rn = data.draw(st.integers(0, dev.disksize - roff))
            assert dev.read(roff, rn) == bytes(model[roff:roff + rn])
        assert whole(dev) == bytes(model)


def test_unwritten_device_reads_zeros_and_costs_nothing(z):
    assert whole(z) == bytes(z.disksize)
    assert z.read(12345, 7) == bytes(7)
    m = z.mm_stat()
    assert m == MmStat(0, 0, 0, 0, 0, 0, 0, 0, 0)


def test_read_into_and_zero_length_io_at_the_end(z):
    z.write(PAGE, text_page(1))
    buf = bytearray(PAGE)
    assert z.read_into(PAGE, buf) == PAGE
    assert bytes(buf) == text_page(1)
    z.write(z.disksize, b"")
    assert z.read(z.disksize, 0) == b""
    z.write(z.disksize - 3, b"end")
    assert z.read(z.disksize - 3, 3) == b"end"


def test_write_accepts_bytearray_and_memoryview(z):
    p = text_page(3)
    z.write(0, bytearray(p))
    z.write(PAGE, memoryview(p))
    assert z.read(0, 2 * PAGE) == p + p


@pytest.mark.parametrize("workers", [0, 1])
def test_write_reads_any_buffer_in_place_and_lets_it_go(workers):
    from array import array

    pages = b"".join(text_page(i) if i % 4 else same_page(b"abcdefgh") for i in range(100))
    with Zram(101 * PAGE, "lzo", workers=workers) as dev:
        buf = bytearray(pages)
        dev.write(0, memoryview(buf)[:70 * PAGE])  # a view into a larger buffer
        dev.write(70 * PAGE + 100, array("B", pages[70 * PAGE + 100:]))  # partial head page
        dev.write(70 * PAGE, buf[70 * PAGE:70 * PAGE + 100])
        buf += b"more"  # no view of the caller's buffer is left behind
        buf[:] = bytes(len(buf))  # and what is stored is a copy
        assert dev.read(0, 100 * PAGE) == pages
        with pytest.raises(TypeError):
            dev.write(0, "a str is not bytes")
        assert dev.read(0, 100 * PAGE) == pages


# ----------------------------------------------------------------------
# out of range

@pytest.mark.parametrize("op", [
    lambda z: z.write(z.disksize - 1, b"ab"),
    lambda z: z.write(-1, b"a"),
    lambda z: z.write(-PAGE, bytes(PAGE)),
    lambda z: z.write(z.disksize, b"x"),
    lambda z: z.write(0, bytes(z.disksize + 1)),
    lambda z: z.read(z.disksize, 1),
    lambda z: z.read(-1, 10),
    lambda z: z.read(0, -1),
    lambda z: z.read(z.disksize - PAGE, PAGE + 1),
    lambda z: z.discard(z.disksize - PAGE, 2 * PAGE),
    lambda z: z.discard(-PAGE, PAGE),
    lambda z: z.write_zeroes(-1, 10),
    lambda z: z.write_zeroes(z.disksize - 10, 11),
    lambda z: z.slot_free_notify(64),
    lambda z: z.slot_free_notify(-1),
], ids=["w-tail", "w-neg", "w-negpage", "w-at-end", "w-too-long", "r-at-end", "r-neg",
        "r-neglen", "r-tail", "d-tail", "d-neg", "wz-neg", "wz-tail", "notify-end", "notify-neg"])
def test_out_of_range_raises_and_changes_nothing(z, op):
    content = b"".join(text_page(i) if i % 2 else comp_page(i) for i in range(64))
    z.write(0, content)
    before = (z.mm_stat(), z.io_stat(), z.debug_stat())
    with pytest.raises(OutOfRangeError) as ei:
        op(z)
    assert isinstance(ei.value, ValueError)
    assert (z.mm_stat(), z.io_stat(), z.debug_stat()) == before
    assert whole(z) == content


# ----------------------------------------------------------------------
# same-filled pages

@pytest.mark.parametrize("word", [bytes(8), b"\xff" * 8, b"ABCDEFGH", (0xDEADBEEF).to_bytes(8, "little")])
def test_same_filled_page_uses_no_pool_memory(z, word):
    z.write(3 * PAGE, same_page(word))
    m = z.mm_stat()
    assert (m.same_pages, m.orig_data_size, m.compr_data_size, m.mem_used_total) == (1, PAGE, 0, 0)
    assert z.pool.objects == 0
    assert flags(z, 3) & SlotFlag.SAME
    assert z.read(3 * PAGE, PAGE) == same_page(word)


def test_sixteen_byte_pattern_is_not_same_filled(z):
    z.write(0, b"ABCDEFGHIJKLMNOP" * 256)
    m = z.mm_stat()
    assert m.same_pages == 0
    assert 0 < m.compr_data_size < 200
    assert m.mem_used_total > 0
    assert not flags(z, 0) & SlotFlag.SAME


def test_last_word_different_is_not_same_filled(z):
    p = b"\x11" * (PAGE - 8) + b"\x12" * 8
    z.write(0, p)
    assert z.mm_stat().same_pages == 0
    q = b"\x12" + b"\x11" * (PAGE - 1)  # first word differs, last one does not
    z.write(PAGE, q)
    assert z.mm_stat().same_pages == 0
    assert z.read(0, 2 * PAGE) == p + q


def test_overwriting_same_filled_pages_updates_count(z):
    z.write(0, same_page(b"12345678") + bytes(PAGE))
    assert z.mm_stat().same_pages == 2
    z.write(0, text_page(1))
    assert z.mm_stat().same_pages == 1
    z.write(PAGE, same_page(b"x" * 8))
    assert z.mm_stat().same_pages == 1
    z.discard(PAGE, PAGE)
    assert z.mm_stat().same_pages == 0
    assert z.mm_stat().orig_data_size == PAGE


def test_partial_write_making_page_same_filled_counts(z):
    z.write(0, b"\x00" * 100 + b"\x01" + bytes(PAGE - 101))
    assert z.mm_stat().same_pages == 0
    z.write(100, b"\x00")
    m = z.mm_stat()
    assert m.same_pages == 1 and m.compr_data_size == 0 and m.mem_used_total == 0


# ----------------------------------------------------------------------
# huge pages

def test_incompressible_page_stored_raw_as_huge(z):
    p = rand_page(1)
    z.write(2 * PAGE, p)
    m = z.mm_stat()
    assert (m.huge_pages, m.huge_pages_since, m.compr_data_size, m.orig_data_size) == (1, 1, PAGE, PAGE)
    assert flags(z, 2) & SlotFlag.HUGE
    assert z.slot_info(2)["size"] == PAGE
    assert m.mem_used_total == PAGE  # the huge class: one page per object
    assert z.read(2 * PAGE, PAGE) == p


def _page_with_lzo_len(target: int) -> bytes:
    r = random.Random(1).randbytes(PAGE)
    for zeros in range(0, 1500):
        p = bytes(zeros) + r[:PAGE - zeros]
        if lzo_len(p) == target:
            return p
    pytest.skip(f"no page with lzo length {target} in the search family")


def test_huge_threshold_is_huge_class_size(z):
    assert z.huge_class_size == HUGE_CLASS_SIZE
    below = _page_with_lzo_len(HUGE_CLASS_SIZE - 1)
    at = _page_with_lzo_len(HUGE_CLASS_SIZE)
    z.write(0, below)
    m = z.mm_stat()
    assert (m.huge_pages, m.compr_data_size) == (0, HUGE_CLASS_SIZE - 1)
    z.write(PAGE, at)
    m = z.mm_stat()
    assert (m.huge_pages, m.huge_pages_since) == (1, 1)
    assert m.compr_data_size == HUGE_CLASS_SIZE - 1 + PAGE
    assert z.read(0, 2 * PAGE) == below + at


def test_huge_pages_since_never_decrements(z):
    z.write(0, rand_page(1) + rand_page(2) + rand_page(3))
    z.write(0, text_page(0))  # overwrite huge -> normal
    z.discard(PAGE, PAGE)
    m = z.mm_stat()
    assert (m.huge_pages, m.huge_pages_since) == (1, 3)
    z.write(PAGE, rand_page(4))
    assert (z.mm_stat().huge_pages, z.mm_stat().huge_pages_since) == (2, 4)


# ----------------------------------------------------------------------
# overwrite and discard

def test_overwrite_frees_the_old_object(z):
    a, b = comp_page(1, 3000), comp_page(2, 500)
    z.write(0, a)
    z.write(0, b)
    m = z.mm_stat()
    assert m.orig_data_size == PAGE
    assert m.compr_data_size == lzo_len(b)
    assert z.pool.objects == 1
    for i in range(200):
        z.write(0, comp_page(i, 100 + 16 * i))
    last = comp_page(199, 100 + 16 * 199)
    assert z.pool.objects == 1
    m = z.mm_stat()
    assert m.orig_data_size == PAGE and m.huge_pages == 0
    assert m.compr_data_size == lzo_len(last)
    assert m.mem_used_total == z.pool.geometry.class_for_payload(lzo_len(last)).pages_per_zspage * PAGE
    assert z.read(0, PAGE) == last


def test_discard_whole_pages_frees_and_counts_notify_free(z):
    pages = [text_page(i) for i in range(8)]
    z.write(0, b"".join(pages))
    z.discard(2 * PAGE, 3 * PAGE)
    m = z.mm_stat()
    assert m.orig_data_size == 5 * PAGE
    assert z.io_stat().notify_free == 3
    assert z.pool.objects == 5
    assert z.read(2 * PAGE, 3 * PAGE) == bytes(3 * PAGE)
    assert z.read(0, 2 * PAGE) == pages[0] + pages[1]
    assert z.read(5 * PAGE, 3 * PAGE) == b"".join(pages[5:])


def test_discard_skips_leading_and_trailing_partial_pages(z):
    pages = [text_page(i) for i in range(4)]
    z.write(0, b"".join(pages))
    z.discard(100, 3 * PAGE)  # page 0 partial (skipped), pages 1-2 whole, page 3 partial (skipped)
    assert z.read(0, PAGE) == pages[0]
    assert z.read(PAGE, 2 * PAGE) == bytes(2 * PAGE)
    assert z.read(3 * PAGE, PAGE) == pages[3]
    assert z.io_stat().notify_free == 2
    assert z.mm_stat().orig_data_size == 2 * PAGE


def test_discard_within_one_page_does_nothing(z):
    z.write(0, text_page(1) + text_page(2))
    before = z.mm_stat()
    z.discard(10, 100)
    z.discard(PAGE - 10, 20)  # straddles two pages, neither whole
    z.discard(PAGE, PAGE - 1)  # aligned start, less than a page
    z.discard(0, 0)
    assert z.mm_stat() == before
    assert z.io_stat().notify_free == 0
    assert z.read(0, 2 * PAGE) == text_page(1) + text_page(2)


def test_discard_of_empty_slots_still_counts_notify_free(z):
    z.discard(0, 4 * PAGE)
    assert z.io_stat().notify_free == 4
    assert z.mm_stat().orig_data_size == 0


def test_discard_everything_returns_all_memory(z):
    z.write(0, b"".join(comp_page(i, 100 + 50 * i) for i in range(64)))
    assert z.mm_stat().mem_used_total > 0
    z.discard(0, z.disksize)
    m = z.mm_stat()
    assert (m.orig_data_size, m.compr_data_size, m.mem_used_total) == (0, 0, 0)
    assert m.mem_used_max > 0


# ----------------------------------------------------------------------
# write_zeroes

def test_write_zeroes_with_partial_pages(z):
    pages = b"".join(text_page(i) for i in range(6))
    z.write(0, pages)
    model = bytearray(pages)
    z.write_zeroes(100, 3 * PAGE)  # partial page 0, whole 1-2, partial page 3
    model[100:100 + 3 * PAGE] = bytes(3 * PAGE)
    assert z.read(0, 6 * PAGE) == bytes(model)
    assert z.io_stat().notify_free == 2
    # whole pages are freed, partial ones rewritten
    assert not z.slot_info(1)["allocated"] and not z.slot_info(2)["allocated"]
    assert z.slot_info(0)["allocated"] and z.slot_info(3)["allocated"]
    assert z.mm_stat().orig_data_size == 4 * PAGE


@pytest.mark.parametrize("offset,length", [(10, 20), (PAGE - 10, 20), (0, PAGE), (5, 2 * PAGE - 10),
                                           (0, 64 * PAGE), (PAGE, 0)])
def test_write_zeroes_reads_back_zeros(z, offset, length):
    content = b"".join(text_page(i) for i in range(64))
    z.write(0, content)
    z.write_zeroes(offset, length)
    model = bytearray(content)
    model[offset:offset + length] = bytes(length)
    assert whole(z) == bytes(model)


# ----------------------------------------------------------------------
# mem_limit

def test_mem_limit_refuses_write_keeps_old_content(z):
    a = comp_page(1, 1000)
    z.write(0, a)
    used = z.mm_stat().mem_used_total
    z.mem_limit = used
    before = z.mm_stat()
    b = comp_page(2, 3000)  # another size class: needs a new zspage
    cls = z.pool.geometry.class_for_payload(lzo_len(b))
    assert cls.index != z.pool.geometry.class_for_payload(lzo_len(a)).index
    with pytest.raises(MemLimitError) as ei:
        z.write(0, b)
    assert isinstance(ei.value, MemoryError)
    after = z.mm_stat()
    assert z.io_stat().failed_writes == 1
    assert z.read(0, PAGE) == a
    for f in ("orig_data_size", "compr_data_size", "mem_used_total", "same_pages", "huge_pages"):
        assert getattr(after, f) == getattr(before, f), f
    assert after.mem_limit == used
    # the kernel raises the high-water mark before checking the limit
    assert after.mem_used_max == used + cls.pages_per_zspage * PAGE
    assert z.pool.objects == 1


def test_mem_limit_same_filled_and_room_in_existing_zspage_still_succeed(z):
    z.write(0, comp_page(1, 1000))
    z.mem_limit = z.mm_stat().mem_used_total
    z.write(PAGE, same_page(b"abcdefgh"))  # no allocation
    z.write(2 * PAGE, comp_page(2, 1000))  # same class, the zspage has room
    assert z.io_stat().failed_writes == 0
    with pytest.raises(MemLimitError):
        z.write(3 * PAGE, rand_page(3))  # a huge page needs a fresh page
    assert z.io_stat().failed_writes == 1
    assert z.read(3 * PAGE, PAGE) == bytes(PAGE)
    assert not z.slot_info(3)["allocated"]


def test_mem_limit_multi_page_write_stops_at_first_failure(z):
    z.mem_limit = 2 * PAGE
    data = b"".join(rand_page(i) for i in range(4))
    with pytest.raises(MemLimitError):
        z.write(0, data)
    assert z.read(0, 2 * PAGE) == data[:2 * PAGE]
    assert z.read(2 * PAGE, 2 * PAGE) == bytes(2 * PAGE)
    assert z.mm_stat().orig_data_size == 2 * PAGE
    assert z.io_stat().failed_writes == 1


def test_mem_limit_parsing_and_rounding(z):
    z.mem_limit = "1M"
    assert z.mem_limit == 1 << 20 and z.mm_stat().mem_limit == 1 << 20
    z.mem_limit = 1
    assert z.mm_stat().mem_limit == PAGE
    z.mem_limit = 0
    assert z.mm_stat().mem_limit == 0
    with pytest.raises(ValueError):
        z.mem_limit = -1
    with pytest.raises(ValueError):
        z.mem_limit = "12Q"


def test_mem_limit_zero_is_unlimited(z):
    z.mem_limit = 0
    z.write(0, b"".join(rand_page(i) for i in range(64)))
    assert z.mm_stat().huge_pages == 64
    assert z.io_stat().failed_writes == 0


# ----------------------------------------------------------------------
# mem_used_max, compaction, reset

def _fragment(z: Zram, n: int = 64) -> list[bytes]:
    pages = [comp_page(i, 700) for i in range(n)]
    z.write(0, b"".join(pages))
    for i in range(n):
        if i % 4:
            z.discard(i * PAGE, PAGE)
    return pages


def test_reset_mem_used_max_sets_current_usage():
    with Zram(256 * PAGE) as dev:
        _fragment(dev, 256)
        assert dev.compact() > 0
        m = dev.mm_stat()
        assert m.mem_used_max > m.mem_used_total > 0
        dev.reset_mem_used_max()
        m2 = dev.mm_stat()
        assert m2.mem_used_max == m2.mem_used_total == m.mem_used_total
        dev.write(PAGE, rand_page(1))
        assert dev.mm_stat().mem_used_max == m.mem_used_total + PAGE


def test_compact_returns_pages_freed_and_pages_compacted_follows():
    with Zram(256 * PAGE) as dev:
        pages = _fragment(dev, 256)
        before = dev.mm_stat()
        freed = dev.compact()
        after = dev.mm_stat()
        assert freed > 0
        assert after.pages_compacted == freed
        assert before.mem_used_total - after.mem_used_total == freed * PAGE
        assert after.compr_data_size == before.compr_data_size
        assert after.orig_data_size == before.orig_data_size
        assert after.mem_used_max == before.mem_used_max
        for i in range(0, 256, 4):
            assert dev.read(i * PAGE, PAGE) == pages[i]
        assert dev.compact() == 0
        assert dev.mm_stat().pages_compacted == freed
        dev.pool._check_invariants()


def test_compact_on_empty_device(z):
    assert z.compact() == 0
    assert z.mm_stat().pages_compacted == 0


def test_reset_frees_everything_and_clears_stats(z):
    z.write(0, b"".join([rand_page(1), same_page(b"q" * 8), text_page(2)]))
    z.mem_limit = "1M"
    z.discard(PAGE, PAGE)
    z.compact()
    z.reset()
    assert z.mm_stat() == MmStat(0, 0, 0, 0, 0, 0, 0, 0, 0)
    assert z.io_stat() == IoStat(0, 0, 0, 0)
    assert z.debug_stat() == DebugStat(1, 0)
    assert z.mem_limit == 0
    assert whole(z) == bytes(z.disksize)
    assert z.pool.objects == 0
    z.write(0, text_page(3))  # still usable
    assert z.read(0, PAGE) == text_page(3)


# ----------------------------------------------------------------------
# idle tracking

class FakeTimer:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_mark_idle_all_skips_same_and_empty(z):
    z.write(0, text_page(1) + same_page(b"s" * 8) + rand_page(2))
    assert z.mark_idle() == 2
    assert flags(z, 0) & SlotFlag.IDLE and flags(z, 2) & SlotFlag.IDLE
    assert not flags(z, 1) & SlotFlag.IDLE
    assert not flags(z, 3) & SlotFlag.IDLE
    z.read(0, 1)  # an access clears IDLE
    assert not flags(z, 0) & SlotFlag.IDLE
    z.write(2 * PAGE, text_page(3))
    assert not flags(z, 2) & SlotFlag.IDLE


def test_mark_idle_by_age_with_fake_timer():
    t = FakeTimer()
    with Zram(16 * PAGE, track_access_time=True, timer=t) as dev:
        dev.write(0, text_page(0))          # t=1000
        t.t = 1100
        dev.write(PAGE, text_page(1))       # t=1100
        dev.write(2 * PAGE, bytes(PAGE))    # same-filled: never idle
        t.t = 1150
        assert dev.mark_idle(older_than=60) == 1   # cutoff 1090: page 0 only
        assert flags(dev, 0) & SlotFlag.IDLE and not flags(dev, 1) & SlotFlag.IDLE
        t.t = 1200
        dev.read(0, PAGE)                   # page 0 accessed at 1200
        assert not flags(dev, 0) & SlotFlag.IDLE
        t.t = 1250
        assert dev.mark_idle(older_than=100) == 1  # cutoff 1150: page 1 only
        assert flags(dev, 1) & SlotFlag.IDLE and not flags(dev, 0) & SlotFlag.IDLE
        dev.mark_idle()
        assert flags(dev, 0) & SlotFlag.IDLE
        assert dev.mark_idle(older_than=100) == 1  # clears IDLE on the recent page 0
        assert not flags(dev, 0) & SlotFlag.IDLE
        assert dev.mark_idle(older_than=0) == 2
        assert dev.mark_idle(older_than=10_000) == 0


def test_mark_idle_by_age_without_tracking_is_a_clear_error(z):
    z.write(0, text_page(0))
    with pytest.raises(ZmemError, match="track_access_time"):
        z.mark_idle(older_than=10)
    assert not flags(z, 0) & SlotFlag.IDLE


# ----------------------------------------------------------------------
# writeback

@pytest.fixture
def wb(tmp_path):
    dev = Zram(32 * PAGE, "lzo", backing_dev=tmp_path / "backing.img")
    yield dev
    dev.close()


def _wb_setup(dev: Zram) -> list[bytes]:
    pages = [text_page(0), rand_page(1), same_page(b"w" * 8), comp_page(3, 2000), rand_page(4)]
    dev.write(0, b"".join(pages))
    return pages


def test_writeback_without_backing_dev_raises(z):
    z.write(0, text_page(0))
    z.mark_idle()
    with pytest.raises(BackingDeviceError) as ei:
        z.writeback("idle")
    assert isinstance(ei.value, OSError)
    assert z.bd_stat() == BdStat(0, 0, 0)
    assert not flags(z, 0) & SlotFlag.WB


def test_writeback_huge(wb):
    pages = _wb_setup(wb)
    before = wb.mm_stat()
    assert wb.writeback("huge") == 2
    m = wb.mm_stat()
    assert wb.bd_stat() == BdStat(2, 0, 2)
    assert m.orig_data_size == before.orig_data_size  # written-back pages still count
    assert m.compr_data_size == before.compr_data_size - 2 * PAGE
    assert m.huge_pages == 0 and m.huge_pages_since == 2
    assert m.mem_used_total == before.mem_used_total - 2 * PAGE
    assert flags(wb, 1) & SlotFlag.WB and flags(wb, 4) & SlotFlag.WB
    assert wb.read(PAGE, PAGE) == pages[1]
    assert wb.read(0, 5 * PAGE) == b"".join(pages)
    assert wb.bd_stat().bd_reads == 3


def test_writeback_idle_and_huge_idle(wb):
    pages = _wb_setup(wb)
    assert wb.writeback("idle") == 0  # nothing marked yet
    wb.mark_idle()
    wb.read(4 * PAGE, 1)  # page 4 (huge) accessed again: not idle
    assert wb.writeback("huge_idle") == 1  # page 1 only
    assert flags(wb, 1) & SlotFlag.WB and not flags(wb, 4) & SlotFlag.WB
    assert wb.writeback("idle") == 2  # pages 0 and 3; the same-filled page is never written
    assert wb.bd_stat() == BdStat(3, 0, 3)
    assert not flags(wb, 2) & SlotFlag.WB
    assert wb.read(0, 5 * PAGE) == b"".join(pages)
    assert wb.mm_stat().orig_data_size == 5 * PAGE


def test_writeback_page_indexes_ignore_flags(wb):
    pages = _wb_setup(wb)
    assert wb.writeback(None, page_indexes=[3]) == 1
    assert flags(wb, 3) & SlotFlag.WB
    assert wb.writeback(None, page_indexes=[2, 3, 10]) == 0  # same-filled, already WB, empty
    assert wb.writeback("huge", page_indexes=[0, 1]) == 1  # mode AND range
    assert wb.bd_stat() == BdStat(2, 0, 2)
    assert wb.read(0, 5 * PAGE) == b"".join(pages)
    with pytest.raises(OutOfRangeError):
        wb.writeback(None, page_indexes=[32])
    with pytest.raises(ValueError):
        wb.writeback(None)
    with pytest.raises(ValueError):
        wb.writeback("bogus")


def test_writeback_limit(wb):
    pages = _wb_setup(wb)
    wb.mark_idle()
    wb.writeback_limit_enable = True
    wb.writeback_limit = 2
    with pytest.raises(BackingDeviceError):
        wb.writeback("idle")  # four idle candidates, budget of two
    assert wb.bd_stat().bd_writes == 2
    assert wb.writeback_limit == 0
    with pytest.raises(BackingDeviceError):
        wb.writeback("idle")
    assert wb.bd_stat().bd_writes == 2
    wb.writeback_limit_enable = False  # budget ignored when disabled
    assert wb.writeback("idle") == 2
    assert wb.bd_stat() == BdStat(4, 0, 4)
    assert wb.read(0, 5 * PAGE) == b"".join(pages)


def test_writeback_limit_enabled_with_budget_larger_than_work(wb):
    _wb_setup(wb)
    wb.writeback_limit_enable = True
    wb.writeback_limit = 10
    assert wb.writeback("huge") == 2
    assert wb.writeback_limit == 8


def test_written_back_slot_freed_by_overwrite_discard_and_partial_write(wb):
    pages = _wb_setup(wb)
    wb.mark_idle()
    assert wb.writeback("idle") == 4
    assert wb.bd_stat().bd_count == 4
    wb.write(0, text_page(9))  # overwrite
    assert wb.bd_stat().bd_count == 3 and not flags(wb, 0) & SlotFlag.WB
    wb.discard(PAGE, PAGE)
    assert wb.bd_stat().bd_count == 2
    assert wb.read(PAGE, PAGE) == bytes(PAGE)
    wb.write(3 * PAGE + 5, b"xyz")  # read-modify-write of a written-back page
    expect = bytearray(pages[3])
    expect[5:8] = b"xyz"
    assert wb.read(3 * PAGE, PAGE) == bytes(expect)
    assert wb.bd_stat().bd_count == 1
    assert wb.mm_stat().orig_data_size == 4 * PAGE
    # freed blocks are reused
    wb.mark_idle()
    wb.writeback("idle")
    assert wb.read(0, 5 * PAGE)[:PAGE] == text_page(9)


# ----------------------------------------------------------------------
# recompression

def _rz(secondaries, n=32, primary="lzo"):
    return Zram(n * PAGE, primary, recomp_algorithms=secondaries)


@pytest.mark.parametrize("algo", ["zstd", "deflate"])
def test_recompress_huge(algo):
    with _rz({1: algo}) as dev:
        pages = [alpha_page(0), text_page(1), alpha_page(2), rand_page(3), same_page(b"r" * 8)]
        dev.write(0, b"".join(pages))
        before = dev.mm_stat()
        assert before.huge_pages == 3
        assert dev.recompress(type="huge") == 2
        m = dev.mm_stat()
        assert m.huge_pages == 1 and m.huge_pages_since == 3
        assert m.orig_data_size == before.orig_data_size
        codec = get_codec(algo)
        assert m.compr_data_size == (before.compr_data_size - 2 * PAGE
                                     + len(codec.compress(pages[0])) + len(codec.compress(pages[2])))
        for i in (0, 2):
            info = dev.slot_info(i)
            assert info["priority"] == 1 and not info["flags"] & SlotFlag.HUGE
        assert dev.slot_info(1)["priority"] == 0  # not huge: not a candidate
        assert flags(dev, 3) & SlotFlag.INCOMPRESSIBLE and flags(dev, 3) & SlotFlag.HUGE
        assert dev.read(0, 5 * PAGE) == b"".join(pages)
        # nothing left to do: the incompressible page is never retried
        assert dev.recompress(type="huge") == 0
        dev.pool._check_invariants()


@pytest.mark.parametrize("algo", ["zstd", "lz4hc", "deflate"])
def test_recompress_all_types_round_trip(algo):
    with _rz({1: algo}) as dev:
        pages = [text_page(i) for i in range(8)]
        dev.write(0, b"".join(pages))
        sec = get_codec(algo)
        expect = sum(1 for p in pages if dev.pool.lookup_class_index(len(sec.compress(p)))
                     < dev.pool.lookup_class_index(lzo_len(p)))
        assert expect > 0
        assert dev.recompress() == expect
        assert sum(dev.slot_info(i)["priority"] == 1 for i in range(8)) == expect
        assert dev.read(0, 8 * PAGE) == b"".join(pages)
        assert dev.mm_stat().compr_data_size == sum(
            len(sec.compress(p)) if dev.slot_info(i)["priority"] else lzo_len(p)
            for i, p in enumerate(pages))


def test_recompress_idle_and_huge_idle():
    with _rz({1: "zstd"}) as dev:
        pages = [text_page(0), alpha_page(1), text_page(2), alpha_page(3)]
        dev.write(0, b"".join(pages))
        assert dev.recompress(type="idle") == 0
        dev.mark_idle()
        dev.read(2 * PAGE, 1)  # text page 2 not idle
        dev.read(3 * PAGE, 1)  # alpha page 3 not idle
        assert dev.recompress(type="huge_idle") == 1
        assert dev.slot_info(1)["priority"] == 1
        assert not flags(dev, 1) & SlotFlag.IDLE
        assert dev.recompress(type="idle") == 1  # text page 0
        assert dev.slot_info(0)["priority"] == 1 and not flags(dev, 0) & SlotFlag.IDLE
        assert dev.slot_info(2)["priority"] == 0 and dev.slot_info(3)["priority"] == 0
        assert dev.read(0, 4 * PAGE) == b"".join(pages)


def test_recompress_threshold():
    with _rz({1: "zstd"}) as dev:
        small, big = text_page(0), alpha_page(1)  # lzo ~2300 and 4096 (huge); zstd ~1600 and ~2100
        dev.write(0, small + big)
        assert lzo_len(small) < 2500
        assert dev.recompress(threshold=2500) == 1  # the smaller object is small enough
        assert dev.slot_info(0)["priority"] == 0 and dev.slot_info(1)["priority"] == 1
        with pytest.raises(ValueError):
            dev.recompress(threshold=HUGE_CLASS_SIZE)


def test_recompress_threshold_new_size_must_be_below_it():
    with _rz({1: "zstd"}) as dev:
        p = alpha_page(1)  # zstd ~2100 bytes
        dev.write(0, p)
        assert dev.recompress(threshold=1500) == 0
        assert dev.slot_info(0)["priority"] == 0 and flags(dev, 0) & SlotFlag.HUGE
        assert dev.read(0, PAGE) == p


def test_recompress_max_pages():
    with _rz({1: "zstd"}) as dev:
        dev.write(0, b"".join(alpha_page(i) for i in range(6)))
        assert dev.recompress(type="huge", max_pages=2) == 2
        assert sum(dev.slot_info(i)["priority"] for i in range(6)) == 2
        assert dev.recompress(type="huge", max_pages=0) == 0
        assert dev.recompress(type="huge") == 4
        assert dev.read(0, 6 * PAGE) == b"".join(alpha_page(i) for i in range(6))


def test_recompress_max_pages_counts_failed_attempts():
    with _rz({1: "zstd"}) as dev:
        dev.write(0, rand_page(0) + rand_page(1) + alpha_page(2))
        # 64-byte buckets: all three are 4096-byte objects, so the budget of two is
        # spent on two of them; whichever they are, at most one can succeed
        done = dev.recompress(type="huge", max_pages=2)
        tried = sum(bool(flags(dev, i) & SlotFlag.INCOMPRESSIBLE) for i in range(2)) + done
        assert tried == 2


def _two_pages_in_one_bucket():
    """Two text-like pages whose lzo sizes differ but share a 64-byte pp bucket."""
    sizes: dict[int, tuple[int, bytes]] = {}
    for seed in range(400):
        p = text_page(seed)
        n = lzo_len(p)
        for m, (_s, q) in sizes.items():
            if m // 64 == n // 64 and m != n:
                lo, hi = (q, p) if m < n else (p, q)
                return lo, hi
        sizes[n] = (seed, p)
    pytest.skip("no two pages in one 64-byte bucket")


def test_recompress_threshold_skips_do_not_use_max_pages():
    with _rz({1: "zstd"}) as dev:
        lo, hi = _two_pages_in_one_bucket()
        dev.write(0, lo + hi)  # below-threshold slot first
        t = lzo_len(hi)
        assert lzo_len(lo) < t <= lzo_len(hi)
        assert dev.recompress(threshold=t, max_pages=1) == 1
        assert dev.slot_info(1)["priority"] == 1
        assert dev.slot_info(0)["priority"] == 0


def test_recompress_algo_selects_one_secondary():
    with _rz({1: "lz4", 2: "zstd"}) as dev:
        pages = [alpha_page(i) for i in range(3)]
        dev.write(0, b"".join(pages))
        assert dev.recompress(type="huge", algo="lz4") == 0
        # lz4 is not the last algorithm: no INCOMPRESSIBLE flag yet
        assert not any(flags(dev, i) & SlotFlag.INCOMPRESSIBLE for i in range(3))
        assert dev.recompress(type="huge", algo="zstd") == 3
        assert all(dev.slot_info(i)["priority"] == 2 for i in range(3))
        assert dev.read(0, 3 * PAGE) == b"".join(pages)
        with pytest.raises(UnsupportedAlgorithmError):
            dev.recompress(algo="deflate")


def test_recompress_tries_secondaries_in_order_and_flags_incompressible_after_last():
    with _rz({1: "lz4", 2: "zstd"}) as dev:
        dev.write(0, alpha_page(0) + rand_page(1))
        assert dev.recompress(type="huge") == 1
        assert dev.slot_info(0)["priority"] == 2
        assert flags(dev, 1) & SlotFlag.INCOMPRESSIBLE
        assert not flags(dev, 0) & SlotFlag.INCOMPRESSIBLE
        assert dev.read(0, 2 * PAGE) == alpha_page(0) + rand_page(1)


def test_recompress_priority_restricts_to_one_secondary():
    with _rz({1: "lz4", 2: "zstd"}) as dev:
        pages = [alpha_page(i) for i in range(2)]
        dev.write(0, b"".join(pages))
        assert dev.recompress(type="huge", priority=1) == 0
        assert all(dev.slot_info(i)["priority"] == 0 for i in range(2))
        assert not any(flags(dev, i) & SlotFlag.INCOMPRESSIBLE for i in range(2))
        assert dev.recompress(type="huge", priority=2) == 2


def test_recompress_priority_zero_is_treated_as_one():
    with _rz({1: "zstd"}) as dev:
        dev.write(0, alpha_page(0))
        assert dev.recompress(type="huge", priority=0) == 1
        assert dev.slot_info(0)["priority"] == 1


def test_recompress_without_secondaries_raises(z):
    z.write(0, text_page(0))
    with pytest.raises(UnsupportedAlgorithmError):
        z.recompress()
    with pytest.raises(ValueError):
        z.recompress(type="bogus")


def test_recompressed_page_survives_writeback(tmp_path):
    with Zram(8 * PAGE, "lzo", recomp_algorithms={1: "zstd"}, backing_dev=tmp_path / "bd") as dev:
        dev.write(0, alpha_page(0) + text_page(1))
        assert dev.recompress(type="huge") == 1
        assert dev.writeback(None, page_indexes=[0, 1]) == 2
        assert dev.read(0, 2 * PAGE) == alpha_page(0) + text_page(1)
        assert dev.mm_stat().compr_data_size == 0


# ----------------------------------------------------------------------
# algorithms and parameters

def _sample_pages() -> list[bytes]:
    names = corpus_names()
    if not names:
        pytest.skip("no corpora (shared/corpora) available")
    out = []
    for name in names:
        data = load_corpus(name)
        step = max(1, len(data) // PAGE // 64)
        out += [data[i * PAGE:(i + 1) * PAGE] for i in range(0, len(data) // PAGE, step)][:64]
    return out


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_algorithm_round_trips_real_pages(algo):
    pages = _sample_pages()
    with Zram(len(pages) * PAGE, algo) as dev:
        dev.write(0, b"".join(pages))
        assert dev.read(0, len(pages) * PAGE) == b"".join(pages)
        codec = get_codec(algo)
        nsame = sum(p == p[:8] * 512 for p in pages)
        m = dev.mm_stat()
        assert m.same_pages == nsame
        expect = 0
        for p in pages:
            if p != p[:8] * 512:
                n = len(codec.compress(p))
                expect += PAGE if n >= HUGE_CLASS_SIZE else n
        assert m.compr_data_size == expect
        assert dev.comp_algorithm == algo


@pytest.mark.parametrize("algo", ALGORITHMS)
def test_algorithm_round_trips_synthetic_pages(algo):
    pages = [text_page(0), rand_page(1), same_page(b"a" * 8), comp_page(2, 1500), alpha_page(3)]
    with Zram(8 * PAGE, algo) as dev:
        dev.write(0, b"".join(pages))
        dev.write(10, b"partial")
        expect = bytearray(b"".join(pages))
        expect[10:17] = b"partial"
        assert dev.read(0, 5 * PAGE) == bytes(expect)


def test_algorithm_params_level_as_dict_or_string():
    p = text_page(5)
    sizes = {}
    for params in ({"level": 1}, "level=1", {"level": 19}, "level=19"):
        with Zram(4 * PAGE, "zstd", algorithm_params=params) as dev:
            dev.write(0, p)
            assert dev.read(0, PAGE) == p
            lvl = params["level"] if isinstance(params, dict) else int(params.split("=")[1])
            assert dev.algorithms[0].level == lvl
            sizes[str(params)] = dev.mm_stat().compr_data_size
    assert sizes["{'level': 1}"] == sizes["level=1"]
    assert sizes["{'level': 19}"] == sizes["level=19"]
    assert sizes["level=19"] == len(get_codec("zstd", level=19).compress(p))
    with Zram(4 * PAGE, "lz4hc", algorithm_params="level=12") as dev:
        assert dev.algorithms[0].level == 12


@pytest.mark.parametrize("algo", ["zstd", "lz4", "deflate"])
def test_algorithm_params_dictionary_from_path_and_bytes(tmp_path, algo):
    dictionary = b"".join(text_page(i) for i in range(100, 104))
    path = tmp_path / "dict.bin"
    path.write_bytes(dictionary)
    page = dictionary[PAGE:2 * PAGE]  # content the dictionary holds verbatim
    results = []
    # the kernel's default deflate window is 2 KiB (winbits -11): a dictionary
    # larger than that needs the full window to be useful
    extra = {"deflate.winbits": -15} if algo == "deflate" else {}
    text_extra = " deflate.winbits=-15" if algo == "deflate" else ""
    for params in (f"dict={path}{text_extra}", {"dict": str(path), **extra},
                   {"dict": dictionary, **extra}, extra or None):
        with Zram(4 * PAGE, algo, algorithm_params=params) as dev:
            dev.write(0, page)
            assert dev.read(0, PAGE) == page
            results.append(dev.mm_stat().compr_data_size)
    with_dict, without = results[:3], results[3]
    assert len(set(with_dict)) == 1
    assert with_dict[0] < without // 4


def test_algorithm_params_deflate_winbits():
    r = random.Random(3).randbytes(2048)
    page = r + r  # the repeat is 2048 bytes back
    sizes = {}
    for wb in (-9, -15):
        with Zram(4 * PAGE, "deflate", algorithm_params=f"deflate.winbits={wb}") as dev:
            dev.write(0, page)
            assert dev.read(0, PAGE) == page
            assert dev.algorithms[0].winbits == wb
            sizes[wb] = dev.mm_stat().compr_data_size
    assert sizes[-15] < 2300
    assert sizes[-9] == PAGE  # a 512-byte window cannot see the repeat: stored huge
    with Zram(4 * PAGE, "deflate", algorithm_params={"deflate.winbits": -15, "level": 9}) as dev:
        assert (dev.algorithms[0].winbits, dev.algorithms[0].level) == (-15, 9)


def test_deflate_defaults_match_kernel_backend():
    r = random.Random(3).randbytes(2048)
    page = r + r
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -11, 9)
    kernel_len = len(c.compress(page) + c.flush())
    assert kernel_len >= HUGE_CLASS_SIZE  # a 2 KiB window cannot reach 2048 bytes back
    with Zram(4 * PAGE, "deflate") as dev:
        dev.write(0, page)
        assert dev.mm_stat().huge_pages == 1
    sample = text_page(1)
    c = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -11, 9)
    assert len(get_codec("deflate").compress(sample)) == len(c.compress(sample) + c.flush())


@pytest.mark.parametrize("params", [
    "level", "bogus=1", "level=x", {"bogus": 1},
])
def test_bad_algorithm_params_raise_value_error(params):
    with pytest.raises(ValueError):
        Zram(4 * PAGE, "zstd", algorithm_params=params)


@pytest.mark.parametrize("algo,params", [
    ("lzo", "level=3"), ("zstd", "deflate.winbits=-11"), ("deflate", "level=12"), ("lz4hc", "level=13"),
])
def test_parameters_an_algorithm_does_not_take_raise(algo, params):
    with pytest.raises(UnsupportedAlgorithmError):
        Zram(4 * PAGE, algo, algorithm_params=params)


@pytest.mark.parametrize("name", ["lzo-rle", "842", "snappy"])
def test_unavailable_algorithms_raise_with_the_list(name):
    with pytest.raises(UnsupportedAlgorithmError) as ei:
        Zram(4 * PAGE, name)
    assert isinstance(ei.value, ValueError)
    msg = str(ei.value)
    assert name in msg
    for algo in ALGORITHMS:
        assert algo in msg
    with pytest.raises(UnsupportedAlgorithmError):
        Zram(4 * PAGE, "lzo", recomp_algorithms={1: name})


def test_recomp_priority_out_of_range():
    with pytest.raises(ValueError):
        Zram(4 * PAGE, "lzo", recomp_algorithms={4: "zstd"})
    with pytest.raises(ValueError):
        Zram(4 * PAGE, "lzo", recomp_algorithms={0: "zstd"})


def test_disksize_parsing_and_rounding():
    with Zram("64K") as dev:
        assert dev.disksize == 65536 and dev.nr_pages == 16
    with Zram(PAGE + 1) as dev:
        assert dev.disksize == 2 * PAGE
    for bad in (0, -PAGE, "x"):
        with pytest.raises(ValueError):
            Zram(bad)


# ----------------------------------------------------------------------
# statistics text

def test_mm_stat_text_is_nine_width_eight_fields():
    m = MmStat(81920000, 42174523, 44077056, 0, 44077056, 3, 0, 2449, 2449)
    assert str(m) == "81920000 42174523 44077056        0 44077056        3        0     2449     2449\n"
    assert MmStat.parse(str(m)) == m
    wide = MmStat(123456789012, 1, 2, 3, 4, 5, 6, 7, 8)
    assert str(wide).startswith("123456789012        1 ")  # grows, never truncates
    assert MmStat.parse(str(wide)) == wide


def test_stat_texts_of_a_live_device(tmp_path):
    with Zram(16 * PAGE, backing_dev=tmp_path / "bd") as dev:
        dev.write(0, rand_page(1) + bytes(PAGE) + text_page(2))
        dev.discard(PAGE, PAGE)
        dev.mark_idle()
        dev.writeback("idle")
        dev.read(0, PAGE)
        m = dev.mm_stat()
        text = str(m)
        assert re.fullmatch(r"(?: {0,7}\d{1,8} ){8} {0,7}\d{1,8}\n", text)
        assert text == " ".join("%8d" % v for v in (
            m.orig_data_size, m.compr_data_size, m.mem_used_total, m.mem_limit, m.mem_used_max,
            m.same_pages, m.pages_compacted, m.huge_pages, m.huge_pages_since)) + "\n"
        assert MmStat.parse(text) == m
        io = dev.io_stat()
        assert str(io) == "%8d %8d 0 %8d\n" % (0, 0, 1)
        assert IoStat.parse(str(io)) == io
        bd = dev.bd_stat()
        assert bd == BdStat(2, 1, 2)
        assert str(bd) == "       2        1        2\n"
        assert BdStat.parse(str(bd)) == bd
        assert str(dev.debug_stat()) == "version: 1\n0        0\n"
        assert DebugStat.parse(str(dev.debug_stat())) == dev.debug_stat()


def test_io_stat_third_field_is_unpadded_zero():
    assert str(IoStat(1, 22, 0, 333)) == "       1       22 0      333\n"
    assert str(DebugStat(1, 7)) == "version: 1\n0        7\n"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**40), min_size=9, max_size=9))
def test_mm_stat_parse_inverts_str(values):
    m = MmStat(*values)
    assert MmStat.parse(str(m)) == m


def test_stat_parse_rejects_wrong_field_count():
    with pytest.raises(ValueError):
        MmStat.parse("1 2 3")
    with pytest.raises(ValueError):
        IoStat.parse("1 2 0")


# ----------------------------------------------------------------------
# swap slot-free notify

def test_slot_free_notify_frees_and_counts(z):
    z.write(0, text_page(0) + text_page(1))
    assert z.slot_free_notify(0) is True
    assert z.io_stat().notify_free == 1
    assert z.mm_stat().orig_data_size == PAGE
    assert z.read(0, PAGE) == bytes(PAGE)
    assert z.slot_free_notify(5) is True  # empty slot: counted anyway
    assert z.io_stat().notify_free == 2
    assert z.debug_stat().miss_free == 0


def test_slot_free_notify_misses_when_the_lock_is_held(z):
    z.write(0, text_page(0))
    held, release = threading.Event(), threading.Event()

    def holder():
        with z.pool.lock:
            held.set()
            release.wait(10)

    t = threading.Thread(target=holder)
    t.start()
    try:
        assert held.wait(10)
        assert z.slot_free_notify(0) is False
    finally:
        release.set()
        t.join()
    assert z.io_stat().notify_free == 1
    assert z.debug_stat().miss_free == 1
    assert str(z.debug_stat()) == "version: 1\n0        1\n"
    assert z.slot_info(0)["allocated"]
    assert z.read(0, PAGE) == text_page(0)
    assert z.slot_free_notify(0) is True
    assert z.debug_stat().miss_free == 1 and z.io_stat().notify_free == 2


# ----------------------------------------------------------------------
# more post-processing and concurrency

def test_writeback_incompressible_mode(tmp_path):
    with Zram(8 * PAGE, "lzo", recomp_algorithms={1: "zstd"}, backing_dev=tmp_path / "bd") as dev:
        pages = [rand_page(0), alpha_page(1), rand_page(2), text_page(3)]
        dev.write(0, b"".join(pages))
        assert dev.writeback("incompressible") == 0
        assert dev.recompress(type="huge") == 1
        assert [bool(flags(dev, i) & SlotFlag.INCOMPRESSIBLE) for i in range(4)] == [True, False, True, False]
        assert dev.writeback("incompressible") == 2
        assert dev.bd_stat() == BdStat(2, 0, 2)
        assert flags(dev, 0) & SlotFlag.WB and flags(dev, 2) & SlotFlag.WB
        assert dev.read(0, 4 * PAGE) == b"".join(pages)
        # freeing the slot clears INCOMPRESSIBLE: a new page there is a fresh candidate
        dev.write(0, alpha_page(9))
        assert not flags(dev, 0) & SlotFlag.INCOMPRESSIBLE
        assert dev.recompress(type="huge") == 1


def test_reset_releases_backing_blocks(wb):
    pages = _wb_setup(wb)
    wb.mark_idle()
    assert wb.writeback("idle") == 4
    wb.reset()
    assert wb.bd_stat() == BdStat(0, 0, 0)
    assert whole(wb) == bytes(wb.disksize)
    wb.write(0, b"".join(pages))
    wb.mark_idle()
    assert wb.writeback("idle") == 4
    assert wb.bd_stat() == BdStat(4, 0, 4)
    assert wb.read(0, 5 * PAGE) == b"".join(pages)


def _run_with_compactor(dev, worker, nthreads: int, errors: list) -> None:
    """Run ``worker(t)`` in ``nthreads`` threads while another compacts the
    device in a loop; then no thread may have failed and the pool must be
    consistent."""
    stop = threading.Event()

    def compactor() -> None:
        while not stop.is_set():
            dev.compact()

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(nthreads)]
    c = threading.Thread(target=compactor)
    c.start()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    stop.set()
    c.join()
    assert not errors, errors[0]
    dev.pool._check_invariants()


def test_concurrent_writers_readers_and_compaction():
    nthreads, per = 2, 64
    with Zram(nthreads * per * PAGE, "lzo") as dev:
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                r = random.Random(t)
                model = {}
                for step in range(600):
                    i = t * per + r.randrange(per)
                    if r.random() < 0.6:
                        p = comp_page(r.randrange(1 << 30), r.randint(1, 3500))
                        dev.write(i * PAGE, p)
                        model[i] = p
                    elif r.random() < 0.3:
                        dev.discard(i * PAGE, PAGE)
                        model.pop(i, None)
                    else:
                        assert dev.read(i * PAGE, PAGE) == model.get(i, bytes(PAGE))
                for i in range(t * per, (t + 1) * per):
                    assert dev.read(i * PAGE, PAGE) == model.get(i, bytes(PAGE))
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        _run_with_compactor(dev, worker, nthreads, errors)
        m = dev.mm_stat()
        assert m.orig_data_size == sum(dev.slot_info(i)["allocated"] for i in range(dev.nr_pages)) * PAGE


@pytest.mark.parametrize("algo", ["lzo", "lz4"])
def test_concurrent_batched_io_through_workers_with_compaction(algo):
    """Threads writing and reading many pages per call (the codec-worker
    paths, and the in-process ones when the workers are busy), discarding,
    and a compactor: every read matches the thread's model."""
    nthreads, per = 2, 200
    with Zram(nthreads * per * PAGE, algo, workers=1) as dev:
        errors: list[BaseException] = []

        def worker(t: int) -> None:
            try:
                r = random.Random(t)
                base = t * per
                model = [bytes(PAGE)] * per
                for _ in range(40):
                    first = r.randrange(per - 64)
                    count = r.randint(64, per - first)
                    op = r.random()
                    if op < 0.5:
                        new = [comp_page(r.randrange(1 << 30), r.randint(1, 3900)) if r.random() < 0.9
                               else same_page(r.randbytes(8)) for _ in range(count)]
                        dev.write((base + first) * PAGE, b"".join(new))
                        model[first:first + count] = new
                    elif op < 0.6:
                        dev.discard((base + first) * PAGE, count * PAGE)
                        model[first:first + count] = [bytes(PAGE)] * count
                    elif op < 0.8:
                        got = dev.read((base + first) * PAGE, count * PAGE)
                        assert got == b"".join(model[first:first + count])
                    else:
                        buf = bytearray(count * PAGE)
                        dev.read_into((base + first) * PAGE, buf)
                        assert buf == b"".join(model[first:first + count])
                assert dev.read(base * PAGE, per * PAGE) == b"".join(model)
            except BaseException as e:  # pragma: no cover - reported below
                errors.append(e)

        _run_with_compactor(dev, worker, nthreads, errors)


def test_post_processing_takes_largest_objects_first(tmp_path):
    with Zram(8 * PAGE, "lzo", recomp_algorithms={1: "zstd"}, backing_dev=tmp_path / "bd") as dev:
        pages = [comp_page(0, 500), text_page(1), rand_page(2), comp_page(3, 1500)]
        dev.write(0, b"".join(pages))
        dev.mark_idle()
        dev.writeback_limit_enable = True
        dev.writeback_limit = 2
        with pytest.raises(BackingDeviceError):
            dev.writeback("idle")
        # the huge page (4096) and the text page (~2500) go first
        assert [bool(flags(dev, i) & SlotFlag.WB) for i in range(4)] == [False, True, True, False]
        assert dev.read(0, 4 * PAGE) == b"".join(pages)
    with Zram(8 * PAGE, "lzo", recomp_algorithms={1: "zstd"}) as dev:
        pages = [text_page(0), alpha_page(1), text_page(2)]
        dev.write(0, b"".join(pages))
        assert dev.recompress(max_pages=1) == 1
        assert [dev.slot_info(i)["priority"] for i in range(3)] == [0, 1, 0]


def _corrupt(dev: Zram, index: int) -> None:
    """Overwrite a stored object with garbage (the test reaches into the slot table)."""
    size = dev.slot_info(index)["size"]
    dev.pool.write(dev._handle[index], b"\xff" * size)


@pytest.mark.parametrize("algo,workers", [("lzo", 0), ("lzo", 2), ("lz4", 0), ("lz4", 1), ("zstd", 0),
                                          ("zstd", 1)])
def test_corrupt_object_read_fails_and_counts_failed_reads(algo, workers):
    pages = [text_page(i) for i in range(80)]
    with Zram(80 * PAGE, algo, workers=workers) as dev:
        dev.write(0, b"".join(pages))
        _corrupt(dev, 70)
        with pytest.raises(DecompressionError):
            dev.read(0, 80 * PAGE)  # >= 64 pages: the worker path when there are workers
        assert dev.io_stat().failed_reads == 1
        with pytest.raises(DecompressionError):
            dev.read(70 * PAGE, 10)
        assert dev.io_stat().failed_reads == 2
        assert dev.read(0, 70 * PAGE) == b"".join(pages[:70])
        dev.write(70 * PAGE, pages[70])  # a whole-page overwrite needs no read
        assert dev.read(0, 80 * PAGE) == b"".join(pages)
        assert dev.io_stat().failed_writes == 0


def test_partial_write_over_corrupt_page_counts_failed_writes(z):
    z.write(0, text_page(0))
    _corrupt(z, 0)
    with pytest.raises(DecompressionError):
        z.write(10, b"abc")
    assert z.io_stat().failed_writes == 1
    assert z.io_stat().failed_reads == 0


def test_codec_workers_give_the_same_device():
    pages = b"".join([text_page(i), rand_page(i), same_page(b"abcdefgh"), comp_page(i, 100 + 7 * i),
                      alpha_page(i)][i % 5] for i in range(300))
    seen = []
    for workers in (0, 2):
        with Zram(320 * PAGE, "lzo", recomp_algorithms={1: "zstd"}, workers=workers) as dev:
            dev.write(0, pages)
            m1 = dev.mm_stat()
            assert dev.recompress(type="huge") == 60
            assert dev.read(0, len(pages)) == pages  # recompressed pages decompress with priority 1
            m2 = dev.mm_stat()
            dev.reset()
            dev.mem_limit = 40 * PAGE
            with pytest.raises(MemLimitError):
                dev.write(0, pages)
            seen.append((m1, m2, dev.mm_stat(), dev.io_stat(), dev.read(0, len(pages))))
    assert seen[0] == seen[1]


@pytest.mark.parametrize("algo", ["lzo", "lz4"])
def test_codec_workers_at_many_sizes_match_in_process(algo):
    """Batches go to the worker and a few pages at a time are done in process;
    whatever the split, pages land in order and the device matches one without workers."""
    rnd = random.Random(7)
    npages = 700
    pages = b"".join([text_page(i), rand_page(i), same_page(b"12345678"), comp_page(i, 50 + i % 3000)][i % 4]
                     for i in range(npages))
    with Zram(npages * PAGE, algo) as plain, Zram(npages * PAGE, algo, workers=1) as par:
        for _ in range(6):
            first = rnd.randrange(npages)
            count = rnd.choice([64, 65, 100, 257, 500, npages - first])
            count = min(count, npages - first)
            src = rnd.randrange(npages - count + 1)
            chunk = pages[src * PAGE:(src + count) * PAGE]
            plain.write(first * PAGE, chunk)
            par.write(first * PAGE, chunk)
            assert par.mm_stat() == plain.mm_stat()
            assert par.read(0, npages * PAGE) == plain.read(0, npages * PAGE)
            # whole pages read straight into a caller's buffer, by both paths
            buf = bytearray(count * PAGE)
            assert par.read_into(first * PAGE, buf) == len(buf)
            assert buf == plain.read(first * PAGE, count * PAGE)
            buf2 = bytearray(len(buf))
            plain.read_into(first * PAGE, memoryview(buf2))
            assert buf2 == buf


@pytest.mark.parametrize("workers", [0, 1])
def test_read_into_any_range_and_bad_range(workers):
    pages = b"".join(text_page(i) if i % 3 else rand_page(i) for i in range(100))
    with Zram(100 * PAGE, "lzo", workers=workers) as dev:
        dev.write(0, pages)
        for off, n in [(0, 100 * PAGE), (PAGE, 70 * PAGE), (5, 3 * PAGE), (99 * PAGE, PAGE), (17, 1)]:
            buf = bytearray(n)
            assert dev.read_into(off, buf) == n
            assert bytes(buf) == pages[off:off + n]
        buf = bytearray(b"\x01" * 2 * PAGE)
        with pytest.raises(ValueError):
            dev.read_into(99 * PAGE, buf)  # runs past the end
        with pytest.raises(ValueError):
            dev.read_into(-PAGE, buf)
        assert buf == b"\x01" * 2 * PAGE  # untouched


def test_codec_workers_share_balances_by_measured_rates():
    from zmem._workers import CodecWorkers, _Rates

    cw = CodecWorkers.__new__(CodecWorkers)  # the policy alone, no processes
    cw.batch, cw.steal, cw._workers = 32, 8, [None]
    even = _Rates(worker=5.0, here=5.0, finish=0.0)
    assert cw._share(1000, 64, 64, even) == 32
    assert cw._share(64, 0, 0, even) == 32  # half of what is left
    assert cw._share(40, 0, 0, even) == 20
    assert cw._share(64, 32, 32, even) == 16  # the queue counts against the worker
    assert cw._share(12, 0, 0, even) == 0  # less than a steal's worth: done here
    # committing here costs time too: the worker gets more
    busy = _Rates(worker=5.0, here=5.0, finish=5.0)
    assert cw._share(40, 0, 40, busy) == 32
    # a slow worker gets less; two workers share the queue
    slow = _Rates(worker=15.0, here=5.0, finish=0.0)
    assert cw._share(40, 0, 0, slow) == 10
    cw._workers = [None, None]
    assert cw._share(40, 0, 0, slow) == 16
    for left in range(1, 300):
        for queued in (0, 8, 32, 96):
            n = cw._share(left, queued, queued, busy)
            assert n == 0 or 8 <= n <= min(left, 32)
    r = _Rates(worker=10.0, here=1.0, finish=1.0)
    for _ in range(40):
        r.worker.add(64e-6, 32)  # 2 us per page
    assert abs(r.worker.us - 2.0) < 0.01


def test_codec_worker_messages_round_trip():
    """The fixed-size messages between the device and a worker: commands,
    replies, and an error whose text is long and not ASCII."""
    import os

    from zmem._workers import _Channel

    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        device, worker = _Channel(r2, w1), _Channel(r1, w2)
        assert not worker.poll()
        device.send(("C", 2, 32))
        device.send(("D", 0, 17))
        device.send(("Q",))
        assert worker.poll()
        assert worker.recv_command() == ("C", 2, 32)
        assert worker.recv_command() == ("D", 0, 17)
        assert worker.recv_command()[0] == "Q"
        assert not device.poll()
        worker.send(("ok", 0.00025))
        text = "DecompressionError: \u00e9 " + "x" * 6000
        worker.send(("err", 5, text[:40]))
        worker.send(("err", 6, text))
        assert device.recv() == ("ok", 0.00025)
        assert device.recv() == ("err", 5, text[:40])
        kind, k, got = device.recv()  # cut to one atomic pipe write
        assert (kind, k) == ("err", 6) and text.startswith(got) and 4000 < len(got) < 4096
        os.close(w2)
        w2 = -1
        with pytest.raises(EOFError):
            device.recv()  # the worker is gone
    finally:
        for fd in (r1, w1, r2, w2):
            if fd >= 0:
                os.close(fd)


def test_codec_worker_failure_raises_and_does_not_wait_again():
    """A worker that answers a batch with an error: the write raises a
    ZmemError at once (no wait for a reply that will never come), and the
    batches still out are drained."""
    from zmem import ZmemError
    from zmem._workers import _SETS, CodecWorkers, _Rates, _views

    class FakeWorker:
        def __init__(self) -> None:
            import mmap

            from zmem._workers import _layout

            self.mm = mmap.mmap(-1, _layout(32)[1])
            self.sets = _views(self.mm, 32)
            self.sent: list = []
            self.replies = 0

        def send(self, msg) -> None:
            self.sent.append(msg)

        def poll(self) -> bool:
            return True

        def recv(self):
            self.replies += 1
            if self.replies > len(self.sent):
                raise AssertionError("waited for a reply that was never asked for")
            return ("err", 3, "ValueError: boom") if self.replies == 1 else ("ok", 1e-4)

    cw = CodecWorkers.__new__(CodecWorkers)
    cw.batch, cw.steal, cw.min_pages = 32, 8, 64
    cw.write_rates = _Rates(worker=7.0, here=6.5, finish=2.5)
    fake = FakeWorker()
    cw._workers = [fake]
    with Zram(256 * PAGE, "lzo") as dev:
        with pytest.raises(ZmemError, match="boom"):
            cw.write_pages(dev, 0, b"".join(text_page(i) for i in range(256)), 256)
        assert fake.replies == len(fake.sent) == _SETS  # every batch sent got its one reply
        assert dev.mm_stat().orig_data_size == 0  # nothing was committed


@pytest.mark.parametrize("algo", ["lzo", "lz4"])
def test_a_dead_codec_worker_is_survived(algo):
    """Kill the worker: the next large write and read warn, finish in process
    with the right data, and the device goes on without workers."""
    pages = [text_page(i) if i % 5 else rand_page(i) for i in range(300)]
    data = b"".join(pages)
    with Zram(300 * PAGE, algo, workers=1) as dev:
        dev.write(0, data)
        proc = dev._workers._workers[0].proc
        proc.kill()
        proc.wait()
        if algo == "lzo":  # lzo reads go through the worker too
            with pytest.warns(RuntimeWarning, match="codec worker"):
                assert dev.read(0, len(data)) == data
            dev.write(0, data[::-1])
        else:
            with pytest.warns(RuntimeWarning, match="codec worker"):
                dev.write(0, data[::-1])
        assert dev._workers is None
        assert dev.read(0, len(data)) == data[::-1]
        buf = bytearray(len(data))
        dev.read_into(0, buf)
        assert buf == data[::-1]
        assert dev.mm_stat().orig_data_size == len(data)
        dev.pool._check_invariants()
