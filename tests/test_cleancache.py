"""Tests of the ephemeral compressed page cache (zmem._cleancache)."""

from __future__ import annotations

import random

import pytest

from zmem import Pool, get_codec
from zmem._cleancache import MAX_POOL_ID, Cleancache
from zmem._compress import Codec
from zmem._corpus import corpus_names, load_corpus
from zmem._errors import DecompressionError
from zmem.testing import DictPool

PAGE = 4096


def real_pages(n: int, seed: int = 1) -> list[bytes]:
    """``n`` distinct compressible pages: real ones when the corpora exist, generated otherwise."""
    rnd = random.Random(seed)
    names = corpus_names()
    if names:
        raw = load_corpus(names[-1])
        allp = [raw[i:i + PAGE] for i in range(0, len(raw), PAGE)]
        lzo = get_codec("lzo")
        good = list(dict.fromkeys(p for p in allp if 200 < len(lzo.compress(p)) < 3000))
        rnd.shuffle(good)
        if len(good) >= n:
            return good[:n]
    out = []  # a few head lengths, so objects crowd into a few classes as real pages do
    for i in range(n):
        k = rnd.choice((150, 300, 600, 900, 1300, 1700, 2500))
        body = i.to_bytes(4, "little") + rnd.randbytes(k)
        out.append(body + bytes(PAGE - len(body)))
    return out


@pytest.fixture(scope="module")
def pages() -> list[bytes]:
    return real_pages(600)


def check(cc: Cleancache) -> None:
    cc._check_invariants()
    if isinstance(cc.pool, Pool):
        cc.pool._check_invariants()


def test_put_get_exclusive(pages) -> None:
    cc = Cleancache(1 << 24)
    fs = cc.init_fs()
    assert cc.put(fs, 7, 0, pages[0]) is True
    assert cc.contains(fs, 7, 0)
    assert cc.get(fs, 7, 1) is None  # another index
    assert cc.get(fs, 8, 0) is None  # another inode
    assert cc.get(fs, 7, 0) == pages[0]
    assert cc.get(fs, 7, 0) is None  # exclusive: the page cache has it now
    st = cc.stats()
    assert (st.puts, st.gets, st.hits, st.misses) == (1, 4, 1, 3)
    assert (st.succ_gets, st.failed_gets) == (1, 3)
    assert st.stored_pages == 0 and st.pool_total_size == 0
    check(cc)


def test_non_exclusive_get_keeps(pages) -> None:
    cc = Cleancache(1 << 24, exclusive_gets=False)
    cc.put(0, 1, 2, pages[3])
    assert cc.get(0, 1, 2) == pages[3] and cc.get(0, 1, 2) == pages[3]
    assert cc.stats().stored_pages == 1
    check(cc)


def test_put_replaces_and_rejected_put_drops_the_stale_page(pages) -> None:
    cc = Cleancache(1 << 24)
    cc.put(0, 1, 0, pages[0])
    cc.put(0, 1, 0, pages[1])
    assert cc.stats().stored_pages == 1 and cc.pool.objects == 1
    incompressible = random.Random(0).randbytes(PAGE)
    assert cc.put(0, 1, 0, incompressible) is False
    assert cc.get(0, 1, 0) is None  # never the stale pages[1]
    st = cc.stats()
    assert st.put_rejects == 1 and st.invalidates == 1 and st.stored_pages == 0
    check(cc)


def test_max_compressed_size(pages) -> None:
    cc = Cleancache(1 << 24)
    assert cc.max_compressed_size == cc.pool.huge_class_size - 1
    # a page taking a whole zspage page saves nothing: not cached
    huge = random.Random(1).randbytes(3600) + bytes(PAGE - 3600)
    assert cc.put(0, 0, 0, huge) is False
    cc2 = Cleancache(1 << 24, max_compressed_size=PAGE - 1)
    assert cc2.put(0, 0, 0, huge) is True and cc2.get(0, 0, 0) == huge


def test_invalidate_page_inode_fs(pages) -> None:
    cc = Cleancache(1 << 26)
    a, b = cc.init_fs(), cc.init_fs()
    assert a != b
    k = 0
    for fs in (a, b):
        for ino in (10, 11, 12):
            for idx in range(5):
                cc.put(fs, ino, idx, pages[k])
                k += 1
    assert cc.stats().stored_pages == 30
    assert cc.invalidate_page(a, 10, 3) is True and cc.invalidate_page(a, 10, 3) is False
    assert cc.invalidate_inode(a, 11) == 5
    assert cc.invalidate_inode(a, 11) == 0
    assert cc.get(a, 10, 4) == pages[4]
    check(cc)
    assert cc.invalidate_fs(a) == 8
    assert all(key[0] == b for key in cc.keys())
    assert cc.stats().stored_pages == 15 and cc.stats().invalidates == 14
    assert cc.get(b, 12, 4) == pages[29]
    assert cc.init_fs() == a  # released by invalidate_fs
    check(cc)


def test_key_validation(pages) -> None:
    cc = Cleancache(1 << 20)
    with pytest.raises(ValueError):
        cc.put(MAX_POOL_ID + 1, 0, 0, pages[0])
    with pytest.raises(ValueError):
        cc.put(0, -1, 0, pages[0])
    with pytest.raises(ValueError):
        cc.get(0, 0, 1 << 64)
    with pytest.raises(TypeError):
        cc.get(0, "ino", 0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        cc.put(0, 0, 0, b"short")
    big = (1 << 64) - 1
    assert cc.put(MAX_POOL_ID, big, big, pages[0]) and cc.get(MAX_POOL_ID, big, big) == pages[0]
    with pytest.raises(ValueError):
        Cleancache(100)
    with pytest.raises(ValueError):
        Cleancache(1 << 20, reclaim="lru")


@pytest.mark.parametrize("reclaim", ["zspage", "object_lru"])
def test_budget_discards_never_wrong(pages, reclaim) -> None:
    cc = Cleancache(64 * PAGE, reclaim=reclaim)
    for i, p in enumerate(pages):
        assert cc.put(0, i // 16, i % 16, p)
        # a put may overshoot by the zspage it allocated, never more
        assert cc.pool.total_pages <= cc.budget_pages + cc.pool.chain_size
    st = cc.stats()
    assert st.evictions > 0 and st.stored_pages + st.evictions == len(pages)
    assert cc.pool.total_pages <= cc.budget_pages
    hits = 0
    for i, p in enumerate(pages):
        got = cc.get(0, i // 16, i % 16)
        assert got is None or got == p
        hits += got is not None
    st = cc.stats()
    assert hits == st.hits > 0 and st.hits + st.misses == st.gets
    check(cc)


def test_second_chance_protects_referenced_pages(pages) -> None:
    cc = Cleancache(1 << 30, exclusive_gets=False, reclaim="object_lru")
    for i in range(10):
        cc.put(0, 0, i, pages[i])
    cc.shrink(0)
    # the first walk clears every bit; then a get re-references page 0
    assert cc.shrink(1) == 1  # one full turn of rotations, then page 0 goes
    assert not cc.contains(0, 0, 0)
    cc.get(0, 0, 1)
    assert cc.shrink(1) == 1
    assert cc.contains(0, 0, 1) and not cc.contains(0, 0, 2)


@pytest.mark.skipif(not corpus_names(), reason="a claim about real pages: no corpora here")
def test_zspage_discard_frees_pages() -> None:
    """Discarding whole zspages frees pages with fewer pages discarded than one by one."""
    pages = real_pages(2000, seed=3)

    def run(reclaim: str) -> tuple[int, int]:
        cc = Cleancache(1 << 30, reclaim=reclaim)
        for i, p in enumerate(pages):
            cc.put(0, 0, i, p)
        rnd = random.Random(5)
        for i in rnd.sample(range(len(pages)), len(pages) // 2):  # fragment it
            cc.get(0, 0, i)
        before = cc.pool.total_pages
        target = before - 100
        discarded = cc._reclaim_to(target)
        assert cc.pool.total_pages <= target
        check(cc)
        return discarded, before - cc.pool.total_pages

    z_disc, z_freed = run("zspage")
    o_disc, o_freed = run("object_lru")
    assert z_freed >= 100 and o_freed >= 100
    assert z_disc / z_freed < 0.75 * (o_disc / o_freed)


def test_zspage_discard_after_compaction(pages) -> None:
    cc = Cleancache(1 << 30, reclaim="zspage")
    for i, p in enumerate(pages):
        cc.put(1, i % 7, i, p)
    for i in range(0, len(pages), 3):
        cc.invalidate_page(1, i % 7, i)
    assert cc.pool.compact() > 0
    check(cc)
    while cc.stats().stored_pages:
        assert cc.shrink(1) >= 1
        check(cc)
    assert cc.pool.total_pages == 0


def _codec_with(decompress) -> Codec:
    base = get_codec("lzo")
    return Codec("lzo", None, None, None, base.compress, decompress)


@pytest.mark.parametrize("exclusive", [True, False])
def test_decompress_failure_is_a_miss(pages, exclusive) -> None:
    def bad(data, size=PAGE):
        raise DecompressionError("corrupt")

    cc = Cleancache(1 << 24, compressor=_codec_with(bad), exclusive_gets=exclusive)
    cc.put(0, 0, 0, pages[0])
    assert cc.get(0, 0, 0) is None
    st = cc.stats()
    assert st.decompress_fail == 1 and st.misses == 1 and st.stored_pages == 0
    check(cc)


def test_works_on_any_poolbase(pages) -> None:
    cc = Cleancache(20 * PAGE, pool=DictPool(), reclaim="object_lru")
    for i in range(50):
        cc.put(0, 0, i, pages[i])
    assert cc.pool.total_pages <= 20 and cc.stats().evictions == 30
    assert all(cc.get(0, 0, i) in (None, pages[i]) for i in range(50))
    check(cc)
    with pytest.raises(ValueError):
        Cleancache(1 << 20, pool=DictPool())  # zspage reclaim needs zspage introspection


def test_metadata_bytes_per_page(pages) -> None:
    cc = Cleancache(1 << 30)
    n = 8192
    for i in range(n):
        cc.put(i % 3, i // 64, i, pages[i % len(pages)])
    per = cc.metadata_bytes() / n
    # 45 bytes of columns + two id tables (4 bytes a slot, load 1/4..1/2) + inode dicts
    assert per < 45 + 16 + 16 + 8, per
