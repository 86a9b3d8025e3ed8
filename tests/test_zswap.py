"""Tests of zswap (zmem._zswap) and its backing swap stores (zmem._swapstore)."""

from __future__ import annotations

import os
import random

import pytest

from zmem import Pool, get_codec
from zmem._compress import Codec
from zmem._corpus import corpus_names, load_corpus
from zmem._errors import (
    DecompressionError,
    OutOfRangeError,
    ZmemError,
)
from zmem._swapstore import (
    FileSwapStore,
    MemorySwapStore,
    SwapIOError,
    SwapSlotEmptyError,
    SwapStore,
)
from zmem._zswap import (
    DEBUGFS_FIELDS,
    MAX_RECLAIM_RETRIES,
    TRANSITIONS,
    EntryState,
    IdHash,
    Zswap,
)
from zmem.testing import DictPool

PAGE = 4096


# ---------------------------------------------------------------------------
# pages


def real_pages(n: int, seed: int = 0) -> list[bytes]:
    """``n`` distinct, compressible, non-trivial pages: real ones when the corpora exist."""
    rnd = random.Random(seed)
    names = corpus_names()
    if names:
        raw = load_corpus(names[0])
        allp = [raw[i:i + PAGE] for i in range(0, len(raw), PAGE)]
        lzo = get_codec("lzo")
        good = [p for p in allp if p.count(0) < PAGE - 64 and 200 < len(lzo.compress(p)) < 3000]
        good = list(dict.fromkeys(good))
        rnd.shuffle(good)
        if len(good) >= n:
            return good[:n]
    # generated: a random head (incompressible) of one of a few lengths and
    # zeros, so objects crowd into a few size classes as real pages do
    out = []
    for i in range(n):
        k = rnd.choice((150, 300, 600, 900, 1300, 1700, 2500))
        body = i.to_bytes(4, "little") + rnd.randbytes(k)
        out.append(body + bytes(PAGE - len(body)))
    return out


def huge_page(seed: int) -> bytes:
    """Compresses to 3257..4095 bytes with lzo: stored compressed but alone in a huge-class page."""
    rnd = random.Random(seed)
    return rnd.randbytes(3600) + bytes(PAGE - 3600)


def random_page(seed: int) -> bytes:
    """Incompressible: lzo output is larger than the page, so zswap stores it as-is."""
    return random.Random(seed).randbytes(PAGE)


@pytest.fixture(scope="module")
def pages() -> list[bytes]:
    return real_pages(400)


def make(memory_pages: int = 1 << 16, **kw) -> Zswap:
    kw.setdefault("backing_store", MemorySwapStore())
    return Zswap(memory_pages * PAGE, **kw)


def check(zs: Zswap) -> None:
    zs._check_invariants()
    if isinstance(zs.pool, Pool):
        zs.pool._check_invariants()


# ---------------------------------------------------------------------------
# swap stores


@pytest.fixture(params=["file", "file-path", "memory"])
def store(request, tmp_path) -> SwapStore:
    if request.param == "file":
        s: SwapStore = FileSwapStore(nr_slots=64)
    elif request.param == "file-path":
        s = FileSwapStore(tmp_path / "swapfile", nr_slots=64)
    else:
        s = MemorySwapStore(nr_slots=64)
    yield s
    s.close()


def test_swapstore_roundtrip_and_stats(store: SwapStore) -> None:
    a, b = random_page(1), random_page(2)
    store.write_page(3, a)
    store.write_page(63, b)
    assert store.contains(3) and store.contains(63) and not store.contains(4)
    assert store.read_page(3) == a and store.read_page(63) == b
    store.write_page(3, b)  # overwrite: still one stored page there
    assert store.read_page(3) == b
    assert store.discard(3) is True and store.discard(3) is False
    st = store.stats()
    assert (st.reads, st.writes, st.discards, st.stored_pages) == (3, 3, 1, 1)
    with pytest.raises(SwapSlotEmptyError) as ei:
        store.read_page(3)
    assert isinstance(ei.value, KeyError) and isinstance(ei.value, ZmemError)
    with pytest.raises(OutOfRangeError):
        store.write_page(64, a)
    with pytest.raises(ValueError):
        store.write_page(0, b"short")


def test_file_swapstore_is_a_real_file(tmp_path) -> None:
    path = tmp_path / "swap"
    with FileSwapStore(path, nr_slots=8) as s:
        s.write_page(5, random_page(5))
        s.flush()
    assert path.stat().st_size == 8 * PAGE
    with open(path, "rb") as f:
        f.seek(5 * PAGE)
        assert f.read(PAGE) == random_page(5)


def test_unbounded_swapstore_grows() -> None:
    with FileSwapStore() as s:
        s.write_page(100_000, random_page(0))
        assert s.read_page(100_000) == random_page(0)
        assert s.stored_pages == 1 and s.nr_slots is None


class FailingStore(MemorySwapStore):
    """A store whose writes fail while ``broken`` (a dying disk)."""

    broken = True

    def _write(self, offset, page):
        if self.broken:
            raise OSError(5, "I/O error")
        super()._write(offset, page)


def test_swapstore_io_error_is_mapped() -> None:
    s = FailingStore()
    with pytest.raises(SwapIOError) as ei:
        s.write_page(0, random_page(0))
    assert isinstance(ei.value, OSError) and ei.value.errno == 5
    assert not s.contains(0)


# ---------------------------------------------------------------------------
# basic behaviour


def test_store_load_exclusive(pages) -> None:
    zs = make()
    assert zs.store(5, pages[0]) is True
    assert zs.state(5) is EntryState.POOL
    st = zs.stats()
    assert st.stored_pages == 1 and st.zswpout == 1
    assert 0 < st.compressed_bytes < PAGE
    assert zs.load(5) == pages[0]
    assert zs.state(5) is EntryState.EMPTY
    assert zs.load(5) is None
    st = zs.stats()
    assert st.stored_pages == 0 and st.zswpin == 1 and st.pool_total_size == 0
    check(zs)


def test_load_non_exclusive_keeps_and_references(pages) -> None:
    zs = make(exclusive_loads=False)
    zs.store(1, pages[1])
    zs.writeback(1)  # first walk step only clears the referenced bit
    assert not zs.is_referenced(1)
    assert zs.load(1) == pages[1] and zs.load(1) == pages[1]
    assert zs.is_referenced(1)
    assert zs.stats().zswpin == 2 and zs.state(1) is EntryState.POOL
    check(zs)


def test_unknown_offset_and_invalidate(pages) -> None:
    zs = make()
    assert zs.load(123) is None and zs.load_cached(123) is None
    assert zs.invalidate(123) is False
    zs.store(123, pages[0])
    assert zs.invalidate(123) is True
    assert zs.load(123) is None and zs.stats().stored_pages == 0
    with pytest.raises(OutOfRangeError):
        zs.store(-1, pages[0])
    with pytest.raises(TypeError):
        zs.load("7")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        zs.store(0, b"x" * 100)


def test_overwrite_frees_the_old_object(pages) -> None:
    zs = make()
    zs.store(9, pages[0])
    zs.store(9, pages[1])
    assert zs.stats().stored_pages == 1 and zs.pool.objects == 1
    assert zs.load(9) == pages[1]
    check(zs)


def test_offsets_bounded_by_store() -> None:
    zs = Zswap(1 << 20, backing_store=MemorySwapStore(nr_slots=10))
    with pytest.raises(OutOfRangeError):
        zs.store(10, random_page(0))


def test_debugfs_names(pages) -> None:
    zs = make()
    zs.store(0, pages[0])
    st = zs.stats()
    d = st.debugfs()
    assert tuple(d) == DEBUGFS_FIELDS
    assert d["reject_kmemcache_fail"] == 0
    assert d["pool_total_size"] == zs.pool.total_pages * PAGE > 0
    assert st.compression_ratio == PAGE / d["pool_total_size"]


def test_disabled_rejects(pages) -> None:
    zs = make(enabled=False)
    assert zs.store(0, pages[0]) is False
    assert zs.stats().stored_pages == 0


def test_parameter_validation() -> None:
    with pytest.raises(ValueError):
        make(max_pool_percent=101)
    with pytest.raises(ValueError):
        make(accept_threshold_percent=-1)
    with pytest.raises(ValueError):
        make(limit_policy="lru")
    with pytest.raises(ValueError):
        make(reclaim="zbud")
    with pytest.raises(ValueError):
        Zswap(100)
    zs = make(100, max_pool_percent=50, accept_threshold_percent=80)
    assert (zs.max_pages, zs.accept_pages) == (50, 40)
    zs.max_pool_percent = 10
    assert (zs.max_pages, zs.accept_pages) == (10, 8)
    assert Zswap("4M", backing_store=MemorySwapStore()).memory_pages == 1024


def test_transition_table_is_total() -> None:
    events = {ev for _, ev in TRANSITIONS}
    assert events == {"store", "reject", "write_through", "writeback", "load", "load_keep",
                      "invalidate"}
    for s in EntryState:
        for ev in events - {"writeback"}:
            assert (s, ev) in TRANSITIONS
    assert TRANSITIONS[(EntryState.POOL, "writeback")] is EntryState.STORE


# ---------------------------------------------------------------------------
# poorly compressing pages


def test_incompressible_stored_as_is() -> None:
    zs = make()
    p = random_page(3)
    assert zs.store(0, p) is True
    st = zs.stats()
    assert st.stored_incompressible_pages == 1 and st.compressed_bytes == PAGE
    assert st.reject_compress_poor == 0
    assert zs.load(0) == p
    assert zs.stats().stored_incompressible_pages == 0
    check(zs)


def test_incompressible_rejected_without_writeback() -> None:
    zs = make(writeback_enabled=False)
    assert zs.store(0, real_pages(1)[0]) is True
    assert zs.store(0, random_page(3)) is False  # the stale copy goes too
    assert zs.load(0) is None
    st = zs.stats()
    assert st.reject_compress_poor == 1 and st.stored_pages == 0


def _codec_with(compress=None, decompress=None) -> Codec:
    base = get_codec("lzo")
    return Codec("lzo", None, None, None, compress or base.compress, decompress or base.decompress)


def test_compress_failure() -> None:
    def boom(page):
        raise RuntimeError("compressor crashed")

    zs = make(compressor=_codec_with(compress=boom))
    assert zs.store(0, real_pages(1)[0]) is True  # stored as-is: writeback allowed
    assert zs.stats().stored_incompressible_pages == 1
    zs2 = make(compressor=_codec_with(compress=boom), writeback_enabled=False)
    assert zs2.store(0, real_pages(1)[0]) is False
    assert zs2.stats().reject_compress_fail == 1
    # exactly PAGE_SIZE bytes out: no -ENOSPC from the compressor, zswap's -EINVAL
    zs3 = make(compressor=_codec_with(compress=lambda page: bytes(PAGE)), writeback_enabled=False)
    assert zs3.store(0, real_pages(1)[0]) is False
    assert (zs3.stats().reject_compress_fail, zs3.stats().reject_compress_poor) == (1, 0)


def test_alloc_failure_counts_reject_alloc_fail(pages) -> None:
    zs = make(pool=Pool(max_pages=1))
    results = [zs.store(i, huge_page(i)) for i in range(3)]
    assert results == [True, False, False]
    assert zs.stats().reject_alloc_fail == 2


def test_decompress_failure_keeps_the_entry(pages) -> None:
    def bad(data, size=PAGE):
        raise DecompressionError("corrupt")

    zs = make(compressor=_codec_with(decompress=bad))
    zs.store(4, pages[0])
    with pytest.raises(DecompressionError):
        zs.load(4)
    st = zs.stats()
    assert st.decompress_fail == 1 and st.stored_pages == 1
    assert zs.state(4) is EntryState.POOL  # the kernel keeps it: an I/O error, not a loss
    check(zs)


# ---------------------------------------------------------------------------
# any PoolBase


def test_works_on_any_poolbase(pages) -> None:
    zs = make(100, pool=DictPool(max_alloc_size=PAGE - 128), max_pool_percent=10)
    for i in range(40):
        zs.swap_out(i, pages[i])
    assert zs.pool.total_pages <= zs.max_pages
    assert zs.stats().written_back_pages > 0
    for i in range(40):
        assert zs.load(i) == pages[i]
    check(zs)
    # an as-is page does not fit a 3968-byte allocator: zs_malloc's -ENOSPC
    zs = make(pool=DictPool(max_alloc_size=PAGE - 128))
    assert zs.store(99, random_page(0)) is False
    assert zs.stats().reject_compress_poor == 1
    with pytest.raises(ValueError):
        make(pool=DictPool(max_alloc_size=PAGE - 128), reclaim="zspage")


# ---------------------------------------------------------------------------
# LRU, second chance, writeback


def test_second_chance_order(pages) -> None:
    zs = make(exclusive_loads=False)
    for i in range(5):
        zs.store(i, pages[i])
    assert zs.lru_order() == [0, 1, 2, 3, 4]
    assert all(zs.is_referenced(i) for i in range(5))
    # every new entry is referenced: the first full walk only clears bits
    assert zs.writeback(5) == 0
    assert zs.lru_order() == [0, 1, 2, 3, 4]
    zs.load(2)  # accessed again: referenced
    assert zs.writeback(1) == 1
    assert zs.state(0) is EntryState.STORE
    assert zs.writeback(2) == 1  # 1 goes; 2 gets its second chance
    assert zs.state(1) is EntryState.STORE and zs.state(2) is EntryState.POOL
    assert zs.lru_order() == [3, 4, 2]
    assert zs.writeback(3) == 3
    assert zs.stats().written_back_pages == 5 and zs.stats().stored_pages == 0
    check(zs)


def test_writeback_then_load_from_store(pages) -> None:
    st_store = MemorySwapStore()
    zs = make(backing_store=st_store)
    for i in range(10):
        zs.store(i, pages[i])
    zs.writeback(10)
    assert zs.writeback(10) == 10
    assert zs.stats().pool_total_size == 0 and st_store.stored_pages == 10
    assert zs.load_cached(3) is None  # the kernel's view: not in zswap
    assert zs.state(3) is EntryState.STORE
    assert zs.load(3) == pages[3]
    assert zs.state(3) is EntryState.EMPTY and not st_store.contains(3)
    st = zs.stats()
    assert st.disk_swapins == 1 and st.zswpwb == st.written_back_pages == 10
    # a newer store supersedes the written-back copy
    zs.store(4, pages[20])
    assert not st_store.contains(4) and zs.load(4) == pages[20]
    assert zs.invalidate(5) is True and not st_store.contains(5)
    check(zs)


def test_writeback_to_a_real_file(pages, tmp_path) -> None:
    with Zswap(1 << 30, backing_store=FileSwapStore(tmp_path / "sw")) as zs:
        for i in range(20):
            zs.store(i, pages[i])
        zs.writeback(40)
        assert zs.stats().written_back_pages == 20
        assert os.path.getsize(tmp_path / "sw") == 20 * PAGE
        assert [zs.load(i) for i in range(20)] == pages[:20]


def test_failed_writeback_keeps_the_page(pages) -> None:
    store = FailingStore()
    zs = make(backing_store=store)
    for i in range(4):
        zs.store(i, pages[i])
    assert zs.writeback(8) == 0
    st = zs.stats()
    assert st.reject_reclaim_fail == 4 and st.stored_pages == 4
    store.broken = False
    assert zs.writeback(4) == 4
    assert [zs.load(i) for i in range(4)] == pages[:4]
    check(zs)


def test_shrinker_gate_and_count(pages) -> None:
    zs = make(exclusive_loads=False)
    for i in range(8):
        zs.store(i, pages[i])
    assert zs.shrink(100) == 0 and zs.shrinker_count() == 0  # shrinker_enabled off (target default)
    zs.shrinker_enabled = True
    st = zs.stats()
    assert zs.shrinker_count() == 8 * (st.compressed_bytes >> 12) // 8
    assert zs.shrink(16) == 8
    zs.load(0)  # a disk swap-in: the next count is one lower (then it is consumed)
    for i in range(8, 24):
        zs.store(i, pages[i])
    st = zs.stats()
    assert zs.shrinker_count() == 15 * (st.compressed_bytes >> 12) // 16
    assert zs.shrinker_count() == 16 * (st.compressed_bytes >> 12) // 16


# ---------------------------------------------------------------------------
# limit and hysteresis


def test_limit_hysteresis_without_writeback() -> None:
    # 100 pages of memory, 20% -> max 20 pool pages, 90% -> accept at 18
    zs = make(100, writeback_enabled=False)
    assert (zs.max_pages, zs.accept_pages) == (20, 18)
    for i in range(20):  # one pool page per huge object
        assert zs.store(i, huge_page(i)) is True
    assert zs.pool.total_pages == 20 and not zs.reached_full
    assert zs.store(20, huge_page(20)) is False
    assert zs.reached_full and zs.stats().pool_limit_hit == 1
    zs.invalidate(0)  # 19 pages: below the limit, above the accept threshold
    assert zs.store(21, huge_page(21)) is False
    assert zs.stats().pool_limit_hit == 1  # not at the limit: no hit, but still full
    zs.invalidate(1)  # 18: accepted again
    assert zs.store(22, huge_page(22)) is True
    assert not zs.reached_full
    check(zs)


def test_limit_worker_gives_up_after_retries_on_referenced_entries(pages) -> None:
    # a pool full of fresh (referenced) entries: the worker rotates 16, writes none
    zs = make(100)
    i = 0
    while zs.store(i, huge_page(i)):
        i += 1
    st = zs.stats()
    assert st.pool_limit_hit == 1 and st.written_back_pages == 0
    order = zs.lru_order()
    assert [zs.is_referenced(o) for o in order[-MAX_RECLAIM_RETRIES:]] == [False] * MAX_RECLAIM_RETRIES
    assert all(zs.is_referenced(o) for o in order[:-MAX_RECLAIM_RETRIES])
    # the next rejected store runs the worker again: now the cleared entries go
    assert zs.store(i, huge_page(i)) is False
    st = zs.stats()
    assert st.written_back_pages >= 2 and zs.pool.total_pages <= zs.accept_pages
    check(zs)


def test_global_worker_writes_back_to_accept_threshold(pages) -> None:
    zs = make(500)  # max 100 pages, accept 90
    for i, p in enumerate(pages):
        zs.swap_out(i, p)
        # the check precedes the allocation, as the kernel's: a store accepted
        # just under the limit may add one zspage (at most chain_size pages)
        assert zs.pool.total_pages <= zs.max_pages + zs.pool.chain_size
    st = zs.stats()
    assert st.pool_limit_hit > 0 and st.written_back_pages > 0
    # rejected stores went to the store directly (the worker gives up after
    # 16 rotations of referenced entries, as the kernel's does)
    assert st.zswpout > len(pages) // 2
    assert [zs.load(i) for i in range(len(pages))] == pages
    check(zs)


def test_worker_in_a_thread(pages) -> None:
    zs = make(1000, shrink_worker="thread", max_pool_percent=100)
    try:
        for i, p in enumerate(pages[:200]):
            assert zs.store(i, p)
        zs.max_pool_percent = 5  # 50 pages: far over the limit now
        for _ in range(40):  # each rejected store queues the worker (coalesced)
            assert zs.store(10_000, pages[0]) is False
            assert zs.drain(timeout=10)
            if zs.pool.total_pages <= zs.accept_pages:
                break
        st = zs.stats()
        assert st.written_back_pages > 0 and zs.pool.total_pages <= zs.accept_pages
        assert st.shrink_worker_ns > 0
        assert [zs.load(i) for i in range(200)] == pages[:200]
    finally:
        zs.close()
    assert zs._wq_thread is None


@pytest.fixture(scope="module")
def many_pages() -> list[bytes]:
    return real_pages(3000, seed=9)


needs_corpora = pytest.mark.skipif(
    not corpus_names(), reason="policy comparisons are claims about real pages: no corpora here")


def _fragmenting_run(policy: str, reclaim: str, pages: list[bytes], memory_pages: int = 8000):
    """Fill half, take every other page of it back (exclusive loads fragment the pool),
    swap out the other half past the limit.  Returns the stats at the end of that and
    the pages that went to the store directly (rejected stores); then checks every page.

    The pool (10% of ``memory_pages``: 800 pages) is large next to the ~150
    size classes times their zspage sizes: a pool of a few dozen pages is all
    per-class overhead.
    """
    zs = make(memory_pages, max_pool_percent=10, limit_policy=policy, reclaim=reclaim)
    n = len(pages)
    rejected = 0
    for i in range(n // 2):
        rejected += not zs.swap_out(i, pages[i])
    for i in range(0, n // 2, 2):
        assert zs.load(i) == pages[i]
    for i in range(n // 2, n):
        rejected += not zs.swap_out(i, pages[i])
    st = zs.stats()
    for i in range(n):
        got = zs.load(i)
        assert got == (None if i < n // 2 and i % 2 == 0 else pages[i]), i
    check(zs)
    return st, rejected


@needs_corpora
def test_compact_then_writeback_writes_back_less(many_pages) -> None:
    ref, ref_rej = _fragmenting_run("writeback", "object_lru", many_pages)
    ctw, ctw_rej = _fragmenting_run("compact_then_writeback", "object_lru", many_pages)
    assert ref.pool_limit_hit > 0 and ref.limit_compactions == 0
    assert ctw.limit_compactions > 0 and ctw.limit_compacted_pages > 0
    # compaction made room: fewer pages went to the store, more stayed in memory
    assert ctw.written_back_pages + ctw_rej < ref.written_back_pages + ref_rej
    assert ctw.written_back_pages < ref.written_back_pages
    assert ctw.compression_ratio > ref.compression_ratio


@needs_corpora
def test_zspage_reclaim_frees_more_per_page_written_back(many_pages) -> None:
    obj, _ = _fragmenting_run("writeback", "object_lru", many_pages)
    zsp, _ = _fragmenting_run("writeback", "zspage", many_pages)
    assert zsp.written_back_pages > 0 and obj.written_back_pages > 0
    assert (zsp.reclaim_pages_freed / zsp.written_back_pages
            > 2 * obj.reclaim_pages_freed / obj.written_back_pages)


def test_policies_lose_nothing(many_pages) -> None:
    """Whatever the data, every policy pair returns every page (the comparisons above
    are about real pages; this part holds for generated ones too)."""
    for policy in ("writeback", "compact_then_writeback"):
        for reclaim in ("object_lru", "zspage"):
            st, _ = _fragmenting_run(policy, reclaim, many_pages, memory_pages=3000)
            assert st.pool_limit_hit > 0


# ---------------------------------------------------------------------------
# zspage-level reclaim


def test_zspage_reclaim_evicts_a_whole_zspage(pages) -> None:
    zs = make(reclaim="zspage")
    # pages that compress to the same length share a class, so zspages fill up
    same = [i.to_bytes(4, "little") * 1024 for i in range(1, 301)]
    for i, p in enumerate(same):
        zs.store(i, p)
    pool = zs.pool
    coldest = zs._zhead
    members = sorted(pool.zspage_objects(coldest))
    npages = pool.zspage_info(coldest)["pages"]
    assert len(members) >= 2
    before = pool.total_pages
    written = zs.writeback(1)
    assert written == len(members)  # no second chance at allocator level
    assert pool.total_pages == before - npages
    assert zs.stats().reclaim_pages_freed == npages
    assert [zs.load(i) for i in range(len(same))] == same
    check(zs)


def test_zspage_reclaim_reads_membership_after_compaction(pages) -> None:
    zs = make(reclaim="zspage", exclusive_loads=True)
    n = 300
    for i in range(n):
        zs.store(i, pages[i])
    rnd = random.Random(3)
    gone = set(rnd.sample(range(n), n * 2 // 3))
    for i in gone:
        assert zs.load(i) == pages[i]
    assert zs.pool.compact() > 0  # objects moved: zspage membership changed
    check(zs)
    total = 0
    while zs.stats().stored_pages:
        w = zs.writeback(1)
        assert w > 0
        total += w
    assert total == n - len(gone)
    assert zs.pool.total_pages == 0
    for i in range(n):
        assert zs.load(i) == (None if i in gone else pages[i])
    check(zs)


def test_zspage_reclaim_huge_objects() -> None:
    zs = make(reclaim="zspage")
    for i in range(5):
        zs.store(i, huge_page(i))
        zs.store(100 + i, random_page(i))  # as-is
    assert zs.writeback(10) == 10 and zs.pool.total_pages == 0
    assert [zs.load(i) for i in range(5)] == [huge_page(i) for i in range(5)]
    assert [zs.load(100 + i) for i in range(5)] == [random_page(i) for i in range(5)]


# ---------------------------------------------------------------------------
# the id table and metadata


def test_idhash_insert_find_remove() -> None:
    keys = {}
    from array import array

    karr = array("q", [0]) * 5000
    t = IdHash(lambda e: karr[e] * 7, bits=2)
    rnd = random.Random(0)
    for e in range(5000):
        karr[e] = rnd.getrandbits(40)
        keys[e] = karr[e]
        t.insert(karr[e] * 7, e)
    for e in rnd.sample(range(5000), 2500):
        t.remove(keys.pop(e) * 7, e)
    assert sorted(t.ids()) == sorted(keys)
    for e, k in keys.items():
        assert t.find(k * 7, k, karr) == e
    assert t.find(12345 * 7, -1, karr) == -1


def test_metadata_bytes_per_offset(pages) -> None:
    zs = make()
    n = 4096
    for i in range(n):
        zs.store(i, pages[i % len(pages)])
    per = zs.metadata_bytes() / n
    assert per <= 19 * 1.01  # 19 bytes per offset, arrays sized exactly at a power of two
    zz = make(reclaim="zspage")
    for i in range(n):
        zz.store(i, pages[i % len(pages)])
    assert zz.metadata_bytes() / n <= 19 + 16 + 4


def test_injected_timer_times_the_worker(pages) -> None:
    class Clock:
        now = 0

        def __call__(self) -> int:
            self.now += 1000  # every reading: 1 us later
            return self.now

    zs = make(500, timer=Clock(), limit_policy="compact_then_writeback")
    for i, p in enumerate(pages):
        zs.swap_out(i, p)
    st = zs.stats()
    assert st.limit_compactions > 0 and st.limit_compact_ns == 1000 * st.limit_compactions
    assert st.shrink_worker_ns > 0
    for i in range(0, len(pages), 2):
        zs.load(i)
    st = zs.stats()
    assert st.hit_rate == st.zswpin / (st.zswpin + st.disk_swapins) and 0 < st.hit_rate < 1
