"""zsmalloc (zmem.Pool): the PoolBase conformance suite plus zsmalloc's own policy.

The policy tests pin the kernel's orders (mm/zsmalloc.c, Linux 6.18), because
they decide which zspages empty out and so ``mem_used_total``: objects fill a
zspage in slot order, a zspage's free slots are reused LIFO, malloc takes the
head of the fullest non-full group, compaction moves objects from the emptiest
zspage into the fullest one.  Where a test needs to see pages it reads the
pool's page tables through the helpers below (white box, kept in one place).
"""

from __future__ import annotations

import gc
import os
import random
import struct

import pytest

from zmem import ClassStats, Pool, PoolExhaustedError, get_codec
from zmem._corpus import corpus_names, load_corpus
from zmem.testing import PoolTests, assert_pool_matches, check_pool_invariants, payload

PAGE = 4096
#: 3600 bytes + the 8-byte header land in class 3632: 8 pages, 9 objects,
#: every object but the first straddles a page boundary (chain size 8).
BIG = 3600
BIG_CLASS = 3632


# -- white-box helpers ---------------------------------------------------------


def zspage_pfns(pool: Pool, z: int) -> list[int]:
    return pool.zspage_pfns(z)


def pool_pfns(pool: Pool) -> list[int]:
    return [pfn for pfn, z in enumerate(pool._frame_zspage) if z >= 0]


def class_row(pool: Pool, size: int) -> ClassStats:
    return next(r for r in pool.class_stats() if r.size == size)


def group_of(inuse: int, objs: int) -> int:
    """get_fullness_group: 0 empty, 1..10 = "10%".."99%", 11 full."""
    if inuse == 0:
        return 0
    if inuse == objs:
        return 11
    return 100 * inuse // objs // 10 + 1


def fullness_tuple(*groups: int) -> tuple[int, ...]:
    """ClassStats.fullness (groups 1..11) with one zspage in each listed group."""
    out = [0] * 11
    for g in groups:
        out[g - 1] += 1
    return tuple(out)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# -- the conformance suite -------------------------------------------------------


class TestZsmalloc(PoolTests):
    def make_pool(self) -> Pool:
        return Pool(chain_size=8)



class TestZsmallocChain4(TestZsmalloc):
    """The suite again with 4-page zspages (other class table, other huge threshold)."""

    def make_pool(self) -> Pool:
        return Pool(chain_size=4)


# -- allocation order --------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 100, 1000, 2040, BIG])
def test_first_objects_fill_one_zspage_in_slot_order(size):
    pool = Pool(8)
    cls = pool.geometry.class_for_payload(size)
    n = cls.objs_per_zspage
    hs = [pool.store(payload(i, size)) for i in range(n)]
    zs = {pool.zspage_of(h) for h in hs}
    assert len(zs) == 1
    z = zs.pop()
    assert pool.zspage_objects(z) == hs  # slot 0, 1, 2, ... in malloc order
    assert pool.total_pages == cls.pages_per_zspage
    info = pool.zspage_info(z)
    assert (info["inuse"], info["objs_per_zspage"], info["size"]) == (n, n, cls.size)
    extra = pool.store(payload(n, size))
    assert pool.zspage_of(extra) != z
    assert pool.total_pages == 2 * cls.pages_per_zspage
    assert pool.zspage_objects(pool.zspage_of(extra)) == [extra]


def test_freed_slots_are_reused_lifo():
    pool = Pool(8)
    hs = [pool.store(payload(i, BIG)) for i in range(9)]
    z = pool.zspage_of(hs[0])
    pool.free(hs[3])
    pool.free(hs[5])
    pool.free(hs[1])
    a = pool.store(payload(100, BIG))  # last freed first: slot 1
    b = pool.store(payload(101, BIG))  # then slot 5
    c = pool.store(payload(102, BIG))  # then slot 3
    assert {pool.zspage_of(h) for h in (a, b, c)} == {z}
    assert pool.zspage_objects(z) == [hs[0], a, hs[2], c, hs[4], b, hs[6], hs[7], hs[8]]
    assert pool.total_pages == 8


def _three_zspages(pool: Pool):
    """Class 3632 with zspages at 8/9, 2/9 and 5/9 objects; returns (zspages, live handles)."""
    hs = [pool.store(payload(i, BIG)) for i in range(27)]
    z = [pool.zspage_of(hs[0]), pool.zspage_of(hs[9]), pool.zspage_of(hs[18])]
    assert len(set(z)) == 3
    assert [pool.zspage_objects(x) for x in z] == [hs[0:9], hs[9:18], hs[18:27]]
    gone = [hs[4]] + hs[9:16] + hs[18:22]
    for h in gone:
        pool.free(h)
    live = [h for h in hs if h not in gone]
    return z, live


def test_malloc_picks_the_fullest_non_full_zspage():
    pool = Pool(8)
    (z1, z2, z3), live = _three_zspages(pool)
    # 8/9 -> "90%" (group 9), 2/9 -> "30%" (3), 5/9 -> "60%" (6)
    assert class_row(pool, BIG_CLASS).fullness == fullness_tuple(9, 3, 6)
    first = pool.store(payload(50, BIG))
    assert pool.zspage_of(first) == z1  # the 90% one
    assert class_row(pool, BIG_CLASS).fullness == fullness_tuple(11, 3, 6)
    order = [pool.zspage_of(pool.store(payload(60 + i, BIG))) for i in range(11)]
    # then z3 (5/9) until full, then z2 (2/9) until full, then a new zspage
    assert order[:4] == [z3] * 4
    assert order[4:11] == [z2] * 7
    assert pool.total_pages == 24
    nxt = pool.store(payload(99, BIG))
    assert pool.zspage_of(nxt) not in (z1, z2, z3)
    assert pool.total_pages == 32
    assert pool.objects == len(live) + 13
    check_pool_invariants(pool)


@pytest.mark.parametrize("last", ["second-zspage", "first-zspage"])
def test_malloc_takes_the_head_of_the_group(last):
    # Two zspages in the same group: the one that entered it last is the list
    # head (insert_zspage always inserts at the head), so malloc takes it.
    pool = Pool(8)
    hs = [pool.store(payload(i, BIG)) for i in range(18)]
    za, zb = pool.zspage_of(hs[0]), pool.zspage_of(hs[9])
    for h in hs[0:3] + hs[9:12]:  # both at 6/9 ("70%")
        pool.free(h)
    first, second = (hs[3], hs[12]) if last == "second-zspage" else (hs[12], hs[3])
    pool.free(first)
    pool.free(second)  # both at 5/9 ("60%"); the zspage of `second` is the head
    assert class_row(pool, BIG_CLASS).fullness == fullness_tuple(6, 6)
    h = pool.store(payload(77, BIG))
    assert pool.zspage_of(h) == (za if second == hs[3] else zb)


def test_huge_objects_take_one_page_each():
    pool = Pool(8)
    sizes = [pool.huge_class_size, 3800, 4095, 4096]
    hs = [pool.store(payload(i, s)) for i, s in enumerate(sizes)]
    assert pool.total_pages == 4
    assert len({pool.zspage_of(h) for h in hs}) == 4
    for h, s in zip(hs, sizes):
        assert pool.size_of(h) == s
        info = pool.zspage_info(pool.zspage_of(h))
        assert (info["size"], info["pages"], info["objs_per_zspage"]) == (4096, 1, 1)
    assert class_row(pool, 4096).fullness == fullness_tuple(11, 11, 11, 11)
    pool.free(hs[1])
    assert pool.total_pages == 3
    below = pool.store(payload(9, pool.huge_class_size - 1))
    assert pool.zspage_info(pool.zspage_of(below))["size"] == BIG_CLASS
    assert pool.total_pages == 3 + 8
    assert_pool_matches(pool, {h: payload(i, s) for i, (h, s) in enumerate(zip(hs, sizes)) if i != 1}
                        | {below: payload(9, pool.huge_class_size - 1)})


# -- fullness groups and class statistics -------------------------------------------


@pytest.mark.parametrize("inuse", range(1, 10))
def test_fullness_group_of_a_nine_object_zspage(inuse):
    pool = Pool(8)
    hs = [pool.store(payload(i, BIG)) for i in range(inuse)]
    row = class_row(pool, BIG_CLASS)
    g = group_of(inuse, 9)
    assert g == [None, 2, 3, 4, 5, 6, 7, 8, 9, 11][inuse]  # 1/9 = 11% is "20%"
    assert row.fullness == fullness_tuple(g)
    assert pool.zspage_info(pool.zspage_of(hs[0]))["fullness"] == g


@pytest.mark.parametrize("inuse, group", [(1, 1), (12, 1), (13, 2), (64, 6), (126, 10), (127, 10), (128, 11)])
def test_fullness_groups_of_a_128_object_zspage(inuse, group):
    # class 32 (1 page, 128 objects): 1/128 is ratio 0 but belongs in "10%";
    # 127/128 is ratio 99, group "99%"
    pool = Pool(8)
    hs = [pool.store(b"x" * 8) for _ in range(inuse)]
    assert len({pool.zspage_of(h) for h in hs}) == 1
    assert group_of(inuse, 128) == group
    assert class_row(pool, 32).fullness == fullness_tuple(group)


def test_class_stats_of_a_known_layout():
    pool = Pool(8)
    _three_zspages(pool)
    rows = pool.class_stats()
    assert [r.size for r in rows] == [c.size for c in pool.size_classes]
    row = class_row(pool, BIG_CLASS)
    assert row == ClassStats(index=225, size=3632, fullness=fullness_tuple(9, 3, 6),
                             obj_allocated=27, obj_used=15, pages_used=24,
                             pages_per_zspage=8, objs_per_zspage=9,
                             freeable=8, zspages=3)
    assert row.free_slots == 12
    for r in rows:
        if r.size != BIG_CLASS:
            assert (r.obj_allocated, r.obj_used, r.pages_used, r.freeable, r.zspages) == (0, 0, 0, 0, 0)
            assert r.fullness == (0,) * 11
    assert pool.shrinker_count() == 8
    assert pool.total_pages == 24 and pool.objects == 15


def _expected_stats(pool: Pool, handles) -> dict[int, dict]:
    """Per class size: what class_stats() must say, rebuilt from zspage_of/zspage_info."""
    per_zspage: dict[int, int] = {}
    for h in handles:
        z = pool.zspage_of(h)
        per_zspage[z] = per_zspage.get(z, 0) + 1
    out: dict[int, dict] = {}
    for z, n in per_zspage.items():
        info = pool.zspage_info(z)
        assert info["inuse"] == n
        e = out.setdefault(info["size"], {"fullness": [0] * 11, "zspages": 0, "used": 0,
                                          "objs": info["objs_per_zspage"], "pages": info["pages"]})
        e["fullness"][group_of(n, info["objs_per_zspage"]) - 1] += 1
        e["zspages"] += 1
        e["used"] += n
    return out


@pytest.mark.parametrize("chain", [8, 4])
def test_class_stats_accounting_after_churn(chain):
    pool = Pool(chain)
    rnd = random.Random(chain)
    live = []
    for step in range(6000):
        if live and rnd.random() < 0.4:
            pool.free(live.pop(rnd.randrange(len(live))))
        else:
            live.append(pool.store(b"s" * rnd.choice([8, 100, 700, 1000, 2000, 3000, BIG, 4000, rnd.randint(1, 4096)])))
    want = _expected_stats(pool, live)
    total = 0
    for r in pool.class_stats():
        e = want.get(r.size)
        if e is None:
            assert (r.zspages, r.obj_allocated, r.obj_used, r.fullness) == (0, 0, 0, (0,) * 11)
            continue
        assert r.fullness == tuple(e["fullness"])
        assert r.zspages == e["zspages"] == sum(e["fullness"])
        assert r.obj_allocated == e["zspages"] * e["objs"]
        assert r.obj_used == e["used"]
        assert r.pages_used == e["zspages"] * e["pages"]
        assert r.freeable == (r.obj_allocated - r.obj_used) // r.objs_per_zspage * r.pages_per_zspage
        total += r.pages_used
    assert total == pool.total_pages
    assert pool.shrinker_count() == sum(r.freeable for r in pool.class_stats())
    check_pool_invariants(pool)


def _kernel_classes_text(rows) -> str:
    """zs_stats_size_show (mm/zsmalloc.c, 6.4+) with its own printf format strings."""
    # the kernel's seq_printf formats verbatim, hence %-formatting
    heads = ("10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%", "99%", "100%")
    s = (" %5s %5s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s %9s %13s %10s %10s %16s %8s\n"  # noqa: UP031
         % ("class", "size", *heads, "obj_allocated", "obj_used", "pages_used",
            "pages_per_zspage", "freeable"))
    totals = [0] * 11
    t_objs = t_used = t_pages = t_free = 0
    for r in rows:
        s += " %5u %5u " % (r.index, r.size)  # noqa: UP031
        for i, v in enumerate(r.fullness):
            totals[i] += v
            s += "%9u " % v  # noqa: UP031
        pages_used = r.obj_allocated // r.objs_per_zspage * r.pages_per_zspage
        s += "%13u %10u %10u %16d %8u\n" % (r.obj_allocated, r.obj_used, pages_used,  # noqa: UP031
                                           r.pages_per_zspage, r.freeable)
        t_objs += r.obj_allocated
        t_used += r.obj_used
        t_pages += pages_used
        t_free += r.freeable
    s += "\n"
    s += " %5s %5s " % ("Total", "")  # noqa: UP031
    for v in totals:
        s += "%9u " % v  # noqa: UP031
    s += "%13u %10u %10u %16s %8u\n" % (t_objs, t_used, t_pages, "", t_free)  # noqa: UP031
    return s


def test_format_classes_is_the_debugfs_layout():
    pool = Pool(8)
    _three_zspages(pool)
    for i in range(300):
        pool.store(b"q" * (1 + i * 13 % 4096))
    text = pool.format_classes()
    assert text == _kernel_classes_text(pool.class_stats())
    lines = text.split("\n")
    assert lines[0].split() == ["class", "size", "10%", "20%", "30%", "40%", "50%", "60%", "70%",
                                "80%", "90%", "99%", "100%", "obj_allocated", "obj_used",
                                "pages_used", "pages_per_zspage", "freeable"]
    assert len(lines) == 1 + len(pool.size_classes) + 1 + 1 + 1  # header, rows, blank, Total, ""
    assert lines[-3] == "" and lines[-1] == ""
    total = lines[-2].split()
    assert total[0] == "Total"
    assert int(total[-2]) == pool.total_pages  # pages_used column
    assert int(total[-3]) == pool.objects  # obj_used column
    assert int(total[-1]) == pool.shrinker_count()
    r = class_row(pool, BIG_CLASS)
    row = next(line for line in lines[1:] if line.split()[:2] == ["225", "3632"])
    assert row.split() == [str(v) for v in (225, 3632, *r.fullness, r.obj_allocated, r.obj_used,
                                            r.pages_used, 8, r.freeable)]
    # fixed-width columns, right-aligned under their headers (Total leaves
    # size and pages_per_zspage blank)
    header = lines[0]
    ends = _token_ends(header)
    for line in lines[1:-3]:
        assert len(line) == len(header) and _token_ends(line) == ends, line
    assert len(lines[-2]) == len(header)
    assert _token_ends(lines[-2]) == [e for i, e in enumerate(ends) if i not in (1, 16)]


def _token_ends(line: str) -> list[int]:
    return [i + 1 for i, ch in enumerate(line) if ch != " " and (i + 1 == len(line) or line[i + 1] == " ")]


# -- compaction ------------------------------------------------------------------------


def test_compaction_moves_exactly_as_the_kernel():
    pool = Pool(8)
    (z1, z2, z3), live = _three_zspages(pool)
    h16, h17 = live[8], live[9]  # z2's two objects, slots 7 and 8
    assert pool.zspage_objects(z2) == [h16, h17]
    data = {h: pool.read(h) for h in live}
    freed = pool.compact()
    # dst = z1 (90%), src = z2 (30%): h16 fills z1's free slot 4; z1 is full.
    # dst = z3 (60%), src = z2 (20%): h17 goes to z3's LIFO head, slot 3; z2 is freed.
    assert freed == 8
    assert pool.pages_compacted == 8
    assert pool.total_pages == 16
    zs1 = pool.zspage_objects(z1)
    assert zs1[4] == h16 and len(zs1) == 9
    assert pool.zspage_objects(z3) == [h17] + live[10:]
    assert pool.zspage_of(h17) == z3
    assert class_row(pool, BIG_CLASS).fullness == fullness_tuple(11, 7)
    assert_pool_matches(pool, data)
    assert pool.compact() == 0
    assert pool.pages_compacted == 8


@pytest.mark.parametrize("chain", [8, 4])
def test_compaction_after_random_frees(chain):
    pool = Pool(chain)
    rnd = random.Random(chain * 7)
    model = {}
    for i in range(6000):
        size = rnd.choice([rnd.randint(1, 4096), rnd.randint(200, 400), rnd.randint(900, 1100),
                           rnd.randint(2000, 3700)])
        data = payload(i, size)
        model[pool.store(data)] = data
    for h in rnd.sample(sorted(model), 4200):
        pool.free(h)
        del model[h]
    before = pool.total_pages
    assert pool.shrinker_count() > 0
    freed = pool.compact()
    assert freed > 0
    assert freed == pool.pages_compacted == before - pool.total_pages
    for r in pool.class_stats():
        # fewer free slots than one zspage holds: nothing left to compact
        assert r.obj_allocated - r.obj_used < r.objs_per_zspage, r
        assert r.freeable == 0
    assert pool.shrinker_count() == 0
    assert_pool_matches(pool, model)  # same handles, same bytes
    # more frees and another round: pages_compacted is the running sum
    for h in rnd.sample(sorted(model), 900):
        pool.free(h)
        del model[h]
    freed2 = pool.compact()
    assert pool.pages_compacted == freed + freed2
    assert all(r.free_slots < r.objs_per_zspage for r in pool.class_stats())
    assert_pool_matches(pool, model)
    for h, data in model.items():
        assert pool.size_of(h) == len(data)


def test_compact_returns_zero_while_another_compaction_runs():
    pool = Pool(8)
    _three_zspages(pool)
    with pool._compacting:  # zs_compact's compaction_in_progress flag, white box
        assert pool.compact() == 0
    assert pool.total_pages == 24 and pool.pages_compacted == 0
    assert pool.compact() == 8


def test_compaction_with_nothing_to_do():
    pool = Pool(8)
    assert pool.compact() == 0
    hs = [pool.store(payload(i, 1000)) for i in range(40)]
    assert pool.compact() == 0  # all zspages full but the last
    pool.free_many(hs)
    assert pool.total_pages == 0 and pool.compact() == 0 and pool.pages_compacted == 0


# -- RSS ----------------------------------------------------------------------------


def test_rss_follows_the_pool_through_compaction(capsys):
    rnd = random.Random(64)
    blob = rnd.randbytes(2 * PAGE)
    sizes = [rnd.randint(500, 3000) for _ in range(40000)]
    items = [memoryview(blob)[i % PAGE: i % PAGE + s] for i, s in enumerate(sizes)]
    pool = Pool(8)
    order = list(range(len(items)))
    rnd.shuffle(order)
    gone_idx = order[: len(order) * 4 // 5]
    gc.collect()

    rss0 = rss_bytes()
    handles = pool.store_many(items)
    pages1 = pool.total_pages
    rss1 = rss_bytes()
    assert pages1 * PAGE >= 60 << 20  # about 64 MiB stored
    grow = rss1 - rss0
    # every stored page is resident; Python-side growth (the handle list,
    # the pool's tables) comes on top
    assert pages1 * PAGE * 0.98 < grow < pages1 * PAGE * 1.1 + (8 << 20), (grow, pages1)

    pool.free_many([handles[i] for i in gone_idx])
    gc.collect()
    pages2 = pool.total_pages
    rss2 = rss_bytes()
    dropped_by_free = rss1 - rss2
    # whole zspages emptied by the frees go back at once, but for the arena's
    # small frame cache (at most 1/64 of the frames in use, 256 at most) and
    # the frames it faulted in ahead (fewer than 64)
    cached = pool._arena.resident_frames - pool._arena.frames_in_use
    assert cached < 256 + 64
    assert abs(dropped_by_free - (pages1 - pages2 - cached) * PAGE) < (3 << 20), (dropped_by_free, pages1, pages2)

    resident_before = pool._arena.resident_frames
    freed = pool.compact()
    pool._arena.trim()
    gc.collect()
    rss3 = rss_bytes()
    pages3 = pool.total_pages
    assert freed == pages2 - pages3 and freed * PAGE > 20 << 20
    assert pool._arena.resident_frames == pages3
    dropped = rss2 - rss3
    expect = (resident_before - pages3) * PAGE  # compaction's pages plus the trimmed cache
    assert abs(dropped - expect) < 0.03 * expect + (2 << 20), (dropped, expect)
    assert abs(dropped - freed * PAGE) < 0.03 * expect + (2 << 20) + 256 * PAGE

    keep = set(range(len(items))) - set(gone_idx)
    for i in rnd.sample(sorted(keep), 3000):
        assert pool.read(handles[i]) == items[i]
    with capsys.disabled():
        print(f"\n[rss] stored {pages1} pages ({pages1 * PAGE >> 20} MiB): RSS +{grow / 2**20:.1f} MiB; "
              f"free 80% -> {pages2} pages: RSS -{dropped_by_free / 2**20:.1f} MiB; "
              f"compact freed {freed} pages ({freed * PAGE / 2**20:.1f} MiB) + trim: "
              f"RSS -{dropped / 2**20:.1f} MiB (expected {expect / 2**20:.1f} MiB)")
    pool.close()


# -- the shrinker ----------------------------------------------------------------------


def test_shrinker_compacts_on_its_own():
    threshold, interval = 16, 50
    pool = Pool(8, auto_compact=True, compact_threshold=threshold, shrinker_interval=interval)
    twin = Pool(8)  # the same operations, no shrinker
    rnd = random.Random(9)
    sizes = [rnd.choice([BIG, 1000, 2000, 3000]) for _ in range(3000)]
    hs = pool.store_many(payload(i, s) for i, s in enumerate(sizes))
    ts = twin.store_many(payload(i, s) for i, s in enumerate(sizes))
    calls = []
    real = pool.compact
    nfree = 0

    def spy():
        calls.append((nfree, pool.shrinker_count()))
        return real()

    pool.compact = spy
    order = list(range(len(hs)))
    rnd.shuffle(order)
    for k, i in enumerate(order[:2500]):
        before = pool.pages_compacted
        nfree = k + 1
        pool.free(hs[i])
        twin.free(ts[i])
        ran = bool(calls) and calls[-1][0] == nfree
        assert ran == (pool.pages_compacted != before)
        if nfree % interval:
            assert not ran, f"compaction after free #{nfree}, not a multiple of {interval}"
        elif ran:
            assert calls[-1][1] >= threshold  # what the shrinker counted
            assert pool.shrinker_count() == 0
        else:
            assert pool.shrinker_count() < threshold  # what the shrinker counted
    assert len(calls) > 3
    assert pool.pages_compacted > 0 and twin.pages_compacted == 0
    assert pool.total_pages < twin.total_pages
    live = {hs[i]: payload(i, sizes[i]) for i in order[2500:]}
    assert_pool_matches(pool, live)


def test_shrinker_free_many_ticks_by_batch_size():
    pool = Pool(8, auto_compact=True, compact_threshold=1, shrinker_interval=100)
    hs = [pool.store(payload(i, BIG)) for i in range(900)]  # 100 full zspages
    pool.free_many(hs[0:900:2][:99])  # 99 frees: no tick yet
    assert pool.pages_compacted == 0 and pool.shrinker_count() > 0
    pool.free_many([hs[1]])  # the 100th free: tick, count >= 1, compact
    assert pool.pages_compacted > 0
    assert pool.shrinker_count() == 0


def test_no_shrinker_by_default():
    pool = Pool(8)
    hs = [pool.store(payload(i, BIG)) for i in range(2000)]
    for h in hs[::2]:
        pool.free(h)
    assert pool.shrinker_count() > 256 and pool.pages_compacted == 0


# -- page migration ---------------------------------------------------------------------


def _mixed_pool():
    pool = Pool(8)
    model = {}
    for i, size in enumerate([BIG] * 20 + [8] * 300 + [2040] * 9 + [1000] * 13 + [4000] * 5 + [3625, 4096]):
        data = payload(i, size)
        model[pool.store(data)] = data
    for h in list(model)[3::4]:
        pool.free(h)
        del model[h]
    return pool, model


def test_migrate_every_page_keeps_handles_valid():
    pool, model = _mixed_pool()
    pages = pool.total_pages
    for pfn in pool_pfns(pool):
        zspages = {h: pool.zspage_of(h) for h in model}
        new = pool.migrate_page(pfn)
        assert new != pfn and new in pool_pfns(pool) and pfn not in pool_pfns(pool)
        with pytest.raises(ValueError):
            pool.migrate_page(pfn)
        assert pool.total_pages == pages
        assert {h: pool.zspage_of(h) for h in model} == zspages  # same zspage, new frame
        assert_pool_matches(pool, model)
    for h, data in model.items():
        assert pool.size_of(h) == len(data)
    pool.compact()
    assert_pool_matches(pool, model)
    pool.free_many(list(model))
    assert pool.total_pages == 0


def test_migrate_page_of_a_huge_object():
    # regression: the owner of a huge page was looked up after the page
    # table already named the new frame, so the handle kept the old one
    pool = Pool(8)
    for size in (pool.huge_class_size, 4096):
        data = payload(size, size)
        h = pool.store(data)
        [pfn] = zspage_pfns(pool, pool.zspage_of(h))
        new = pool.migrate_page(pfn)
        assert zspage_pfns(pool, pool.zspage_of(h)) == [new]
        assert pool.read(h) == data
        check_pool_invariants(pool)


def test_migrate_page_ignores_stale_bytes_of_recycled_frames():
    # regression: migrate_page scanned every slot of the page for allocated
    # headers, also slots never allocated in this zspage, whose bytes are
    # left over from the frame's last use (the arena's frame cache hands out
    # frames unzeroed); a stale word with bit 0 set rewrote a live handle.
    pool = Pool(8)
    filler = [pool.store(bytes(PAGE)) for _ in range(300)]  # enough frames for a cache
    victim = pool.store(b"V" * 100)
    word = struct.pack("<q", (victim << 1) | 1)
    bait = [pool.store(word * 255) for _ in range(16)]  # class 2048: every word looks allocated
    pool.free_many(bait)
    assert pool._arena.resident_frames > pool._arena.frames_in_use  # cached, not zeroed
    h = pool.store(b"n" * BIG)  # a new class-3632 zspage, one object, on recycled frames
    for pfn in zspage_pfns(pool, pool.zspage_of(h)):
        pool.migrate_page(pfn)
    assert pool.read(victim) == b"V" * 100
    assert pool.read(h) == b"n" * BIG
    check_pool_invariants(pool)
    assert len(filler) == 300


@pytest.mark.parametrize("bad", [-1, 1 << 30, "x"])
def test_migrate_page_refuses_what_is_not_a_pool_page(bad):
    pool = Pool(8)
    h = pool.store(b"abc")
    with pytest.raises((ValueError, TypeError)):
        pool.migrate_page(bad)
    [pfn] = zspage_pfns(pool, pool.zspage_of(h))
    pool.free(h)
    with pytest.raises(ValueError):
        pool.migrate_page(pfn)  # its zspage is gone
    assert pool.total_pages == 0


# -- limits -------------------------------------------------------------------------


def test_max_pages():
    pool = Pool(8, max_pages=16)
    model = {}
    for i in range(16):
        data = payload(i, 4096)
        model[pool.store(data)] = data
    with pytest.raises(PoolExhaustedError) as exc:
        pool.store(b"x" * 4096)
    assert isinstance(exc.value, MemoryError)
    with pytest.raises(PoolExhaustedError):
        pool.malloc(BIG)  # a new 8-page zspage
    assert pool.total_pages == 16
    assert_pool_matches(pool, model)
    gone = list(model)[:4]
    pool.free_many(gone)
    for h in gone:
        del model[h]
    # a batch that cannot fit stores nothing
    with pytest.raises(PoolExhaustedError):
        pool.store_many([payload(100 + i, 4096) for i in range(5)])
    assert pool.total_pages == 12
    assert_pool_matches(pool, model)
    new = pool.store_many([payload(200 + i, 4096) for i in range(4)])
    model.update({h: payload(200 + i, 4096) for i, h in enumerate(new)})
    assert pool.total_pages == 16
    assert_pool_matches(pool, model)


# -- metadata --------------------------------------------------------------------------


def _corpus_sizes(limit: int = 16384) -> list[int]:
    names = corpus_names()
    if not names:
        pytest.skip("no page corpora (set ZMEM_CORPORA)")
    lz4 = get_codec("lz4")
    huge = Pool(8).huge_class_size
    sizes = []
    for name in names:
        pages = load_corpus(name)
        for i in range(0, len(pages), PAGE):
            page = pages[i:i + PAGE]
            if page == page[:8] * 512:
                continue  # same-filled: zram stores no object
            n = len(lz4.compress(page))
            sizes.append(PAGE if n >= huge else n)
            if len(sizes) >= limit:
                return sizes
    return sizes


@pytest.mark.parametrize("source", ["corpus-lz4", "uniform-500-3000"])
def test_metadata_bytes_per_object(source, capsys):
    if source == "corpus-lz4":
        sizes = _corpus_sizes()
    else:
        rnd = random.Random(500)
        sizes = [rnd.randint(500, 3000) for _ in range(16384)]
    pool = Pool(8)
    blob = random.Random(1).randbytes(2 * PAGE)
    hs = pool.store_many(memoryview(blob)[i % 97: i % 97 + s] for i, s in enumerate(sizes))
    assert pool.objects == len(hs) == len(sizes)
    per_obj = pool.metadata_bytes() / pool.objects
    with capsys.disabled():
        print(f"\n[metadata] {source}: {len(sizes)} objects, mean size {sum(sizes) / len(sizes):.0f} B, "
              f"{pool.total_pages} pages, metadata {pool.metadata_bytes()} B = {per_obj:.1f} B/object")
    assert per_obj < 40
    pool.close()


def _resident_frames(arena) -> int:
    """Frames of the arena's mapping that are in memory, by mincore(2)."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    n = arena.capacity_frames
    vec = (ctypes.c_ubyte * n)()
    buf = (ctypes.c_char * 1).from_buffer(arena.mm)
    try:
        rc = libc.mincore(ctypes.c_void_p(ctypes.addressof(buf)), ctypes.c_size_t(n * PAGE), vec)
    finally:
        del buf  # the arena may not grow while its buffer is exported
    assert rc == 0, ctypes.get_errno()
    return sum(v & 1 for v in vec)


def test_arena_faults_frames_in_ahead_and_trim_gives_them_back():
    from zmem._arena import _PREFAULT, Arena

    arena = Arena(initial_frames=1024)
    assert _resident_frames(arena) == 0
    pfns = arena.alloc_frames(3)
    assert pfns == [0, 1, 2]
    assert arena.resident_frames == _PREFAULT == _resident_frames(arena)
    arena.alloc_frames(_PREFAULT)  # past the populated range: the next run comes in
    assert arena.resident_frames == 3 + _PREFAULT + (_PREFAULT - 3) == _resident_frames(arena)
    arena.trim()
    assert arena.resident_frames == arena.frames_in_use == 3 + _PREFAULT == _resident_frames(arena)
    arena.close()


def test_locate_finds_every_object_as_read_does():
    """Pool._locate_locked (the vectorized lookup zram's reads use) agrees
    with read for objects of every size, straddling and huge ones included,
    after frees and compaction moved them."""
    import numpy as np

    rnd = random.Random(3)
    pool = Pool()
    sizes = [rnd.randint(1, pool.max_alloc_size) for _ in range(3000)]
    handles = [pool.malloc(n) for n in sizes]
    for h, n in zip(handles, sizes):
        pool.write(h, payload(h, n))
    keep = [i for i in range(len(handles)) if rnd.random() < 0.4]
    for i in set(range(len(handles))) - set(keep):
        pool.free(handles[i])
    assert pool.compact() > 0
    hs = np.array([handles[i] for i in keep], dtype=np.uint64)
    ns = np.array([sizes[i] for i in keep], dtype=np.int64)
    with pool._lock:
        a, n1, b = pool._locate_locked(hs, ns)
    mm = pool._mm
    straddling = 0
    for k, i in enumerate(keep):
        n, first = sizes[i], int(n1[k])
        got = mm[int(a[k]):int(a[k]) + first]
        if first < n:
            straddling += 1
            got += mm[int(b[k]):int(b[k]) + n - first]
        assert got == payload(handles[i], n) == pool.read(handles[i])
    assert straddling > 50
