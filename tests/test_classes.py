"""zsmalloc's class geometry (zmem._classes) against the Linux 6.3+ formulas.

The oracle is written here again from the kernel's rules (``zs_create_pool``,
``calculate_zspage_chain_size``, ``can_merge``), independently of
``Geometry``, plus the chain-8 table of the fact sheet (§1.4) verbatim and the
counts and watermarks the fact sheet reports (§1.3).
"""

from __future__ import annotations

import re

import pytest

from zmem import Geometry, InvalidSizeError, ObjectTooLargeError, Pool
from zmem._classes import ZS_HANDLE_SIZE, zspage_chain_size

# -- the oracle --------------------------------------------------------------


def _chain(size: int, max_pages: int, page: int) -> int:
    """calculate_zspage_chain_size: least tail waste, ties keep the shorter chain."""
    if size & (size - 1) == 0:
        return 1
    best_waste, best = page, 1
    for k in range(1, max_pages + 1):
        waste = (k * page) % size
        if waste < best_waste:
            best_waste, best = waste, k
    return best


def _linux_classes(chain: int, page: int = 4096, obj_index_bits: int = 24):
    """(distinct classes [(index, size, pages, objs)] ascending, alias map, huge_class_size)."""
    min_size = max(32, (chain * page) >> obj_index_bits)
    delta = page >> 8
    n = -(-(page - min_size) // delta) + 1
    distinct, alias, huge, prev = [], {}, 0, None
    for i in reversed(range(n)):
        size = min(min_size + i * delta, page)
        pages = _chain(size, chain, page)
        objs = pages * page // size
        if pages != 1 and objs != 1 and not huge:
            huge = size - (ZS_HANDLE_SIZE - 1)
        if prev is not None and prev[2:] == (pages, objs):
            alias[i] = prev[0]
            continue
        prev = (i, size, pages, objs)
        distinct.append(prev)
        alias[i] = i
    return distinct[::-1], alias, huge


def _as_tuples(geo: Geometry):
    return [(c.index, c.size, c.pages_per_zspage, c.objs_per_zspage) for c in geo.classes]


# Fact sheet §1.4, verbatim: chain size 8, 4 KiB pages, the 119 distinct classes.
CHAIN8_TABLE = """
0:32/1p/128o  1:48/3p/256o  2:64/1p/64o  3:80/5p/256o  4:96/3p/128o  5:112/7p/256o
6:128/1p/32o  7:144/7p/199o  8:160/5p/128o  9:176/4p/93o  10:192/3p/64o  11:208/3p/59o
12:224/7p/128o  13:240/1p/17o  14:256/1p/16o  15:272/1p/15o  16:288/5p/71o  17:304/7p/94o
18:320/5p/64o  19:336/6p/73o  20:352/8p/93o  21:368/8p/89o  22:384/3p/32o  23:400/5p/51o
24:416/6p/59o  25:432/7p/66o  26:448/7p/64o  27:464/5p/44o  28:480/2p/17o  29:496/4p/33o
30:512/1p/8o  31:528/4p/31o  32:544/2p/15o  33:560/7p/51o  34:576/1p/7o  35:592/8p/55o
36:608/7p/47o  37:624/2p/13o  38:640/5p/32o  39:656/5p/31o  40:672/1p/6o  41:688/8p/47o
42:704/5p/29o  43:720/3p/17o  44:736/2p/11o  45:752/7p/38o  46:768/3p/16o  47:784/5p/26o
49:816/1p/5o  50:832/8p/39o  51:848/5p/24o  52:864/7p/33o  53:880/8p/37o  54:896/7p/32o
55:912/7p/31o  56:928/5p/22o  57:944/3p/13o  58:960/4p/17o  59:976/6p/25o  60:992/8p/33o
62:1024/1p/4o  64:1056/8p/31o  65:1072/5p/19o  66:1088/4p/15o  67:1104/3p/11o  68:1120/8p/29o
69:1136/5p/18o  71:1168/2p/7o  72:1184/7p/24o  73:1200/5p/17o  74:1216/3p/10o  75:1232/7p/23o
76:1248/4p/13o  78:1280/5p/16o  79:1296/7p/22o  83:1360/1p/3o  87:1424/8p/23o  88:1440/6p/17o
89:1456/5p/14o  91:1488/4p/11o  92:1504/7p/19o  94:1536/3p/8o  95:1552/8p/21o  96:1568/5p/13o
97:1584/7p/18o  100:1632/2p/5o  103:1680/7p/17o  104:1696/5p/12o  105:1712/8p/19o  107:1744/3p/7o
110:1792/7p/16o  111:1808/4p/9o  114:1856/5p/11o  116:1888/6p/13o  117:1904/7p/15o  118:1920/8p/17o
126:2048/1p/2o  134:2176/8p/15o  135:2192/7p/13o  137:2224/6p/11o  140:2272/5p/9o  144:2336/4p/7o
147:2384/7p/12o  151:2448/3p/5o  155:2512/8p/13o  158:2560/5p/8o  160:2592/7p/11o  168:2720/2p/3o
177:2864/7p/10o  180:2912/5p/7o  184:2976/8p/11o  190:3072/3p/4o  197:3184/7p/9o  202:3264/4p/5o
211:3408/5p/6o  217:3504/6p/7o  222:3584/7p/8o  225:3632/8p/9o  254:4096/1p/1o
"""


def _parse_table(text: str) -> list[tuple[int, int, int, int]]:
    rows = [tuple(map(int, m)) for m in re.findall(r"(\d+):(\d+)/(\d+)p/(\d+)o", text)]
    assert len(rows) == len(text.split()), "a table entry did not parse"
    return rows


# -- counts and watermarks -------------------------------------------------


@pytest.mark.parametrize("chain, distinct, huge, largest_normal, aliased_to_huge", [
    (4, 69, 3257, 3264, 52),
    (8, 119, 3625, 3632, 29),
    (16, 192, 3833, 3840, 16),
])
def test_class_counts_and_huge_class_size(chain, distinct, huge, largest_normal, aliased_to_huge):
    geo = Geometry(chain)
    assert geo.nr_classes == 255
    assert len(geo.classes) == distinct
    assert geo.huge_class_size == huge
    assert Pool(chain).huge_class_size == huge
    normal = [c for c in geo.classes if not c.huge]
    assert max(c.size for c in normal) == largest_normal
    assert [c.size for c in geo.classes if c.huge] == [4096]
    assert sum(1 for c in geo.class_of_index if c.huge) == aliased_to_huge


@pytest.mark.parametrize("chain", range(1, 17))
def test_table_matches_linux_formula(chain):
    geo = Geometry(chain)
    want, alias, huge = _linux_classes(chain)
    assert _as_tuples(geo) == want
    assert geo.huge_class_size == huge
    for i, c in enumerate(geo.class_of_index):
        assert c.index == alias[i], i


def test_distinct_counts_for_every_chain_size():
    # Fact sheet §1.3: what the current min-waste code yields (the zsmalloc.rst
    # table, 69/123/191, only reproduces with the pre-6.3 percentage rule).
    counts = [len(Geometry(chain).classes) for chain in range(4, 17)]
    assert counts == [69, 86, 94, 110, 119, 136, 141, 153, 159, 173, 179, 186, 192]


def test_chain8_table_is_the_fact_sheet_oracle():
    table = _parse_table(CHAIN8_TABLE)
    assert len(table) == 119
    assert _as_tuples(Geometry(8)) == table
    assert _as_tuples(Pool(8).geometry) == table
    assert [(c.index, c.size, c.pages_per_zspage, c.objs_per_zspage)
            for c in Pool(8).size_classes] == table


def test_chain_size_rule():
    # powers of two always use one page, whatever the waste elsewhere
    for size in (32, 64, 128, 256, 512, 1024, 2048, 4096):
        assert zspage_chain_size(size, 16) == 1
    # size 208: waste 144/80/16 for 1/2/3 pages, the old percentage rule picked 2
    assert zspage_chain_size(208, 4) == 3
    # ties keep the shorter chain: 48 and 3072 waste nothing at 3 and at 6 pages
    assert zspage_chain_size(48, 8) == 3
    assert zspage_chain_size(3072, 8) == 3
    for chain in (4, 8, 16):
        for size in range(32, 4097, 16):
            assert zspage_chain_size(size, chain) == _chain(size, chain, 4096), (size, chain)


# -- merging --------------------------------------------------------------------


@pytest.mark.parametrize("chain", [4, 8, 16])
def test_aliases_resolve_to_larger_class_with_same_geometry(chain):
    geo = Geometry(chain)
    distinct = {c.index for c in geo.classes}
    for i, c in enumerate(geo.class_of_index):
        size = min(geo.min_alloc_size + i * geo.class_delta, geo.page_size)
        pages = zspage_chain_size(size, chain)
        objs = pages * geo.page_size // size
        assert c.index >= i and c.size >= size
        assert (c.pages_per_zspage, c.objs_per_zspage) == (pages, objs), i
        # it is the next created (distinct) class at or above i
        assert c.index == min(d for d in distinct if d >= i)
    for c in geo.classes:
        assert geo.class_of_index[c.index] is c
    # consecutive distinct classes never share a geometry (they would have merged)
    for a, b in zip(geo.classes, geo.classes[1:]):
        assert (a.pages_per_zspage, a.objs_per_zspage) != (b.pages_per_zspage, b.objs_per_zspage)


def test_lookup_class_index_has_no_header():
    geo = Geometry(8)
    assert geo.lookup_class_index(3632) == 225
    assert geo.lookup_class_index(3633) == 254
    assert geo.lookup_class_index(1) == 0 and geo.lookup_class_index(32) == 0
    assert geo.lookup_class_index(33) == 1
    assert geo.lookup_class_index(785) == 49  # index 48 merged into 49 (816)
    pool = Pool(8)
    assert pool.lookup_class_index(3632) == 225
    # zs_malloc adds the header before the lookup
    assert geo.class_for_payload(3624).index == 225
    assert geo.class_for_payload(3625).index == 254


# -- zspage layout -------------------------------------------------------------


def test_first_obj_offset_example():
    geo = Geometry(8)
    cls = geo.class_of_index[225]
    assert (cls.size, cls.pages_per_zspage, cls.objs_per_zspage) == (3632, 8, 9)
    assert [geo.first_obj_offset(cls, p) for p in range(8)] == [0, 3168, 2704, 2240, 1776, 1312, 848, 384]


@pytest.mark.parametrize("chain", [4, 8, 16])
def test_first_obj_offset_formula(chain):
    geo = Geometry(chain)
    for cls in geo.classes:
        for p in range(cls.pages_per_zspage):
            off = geo.first_obj_offset(cls, p)
            assert 0 <= off < cls.size
            assert (p * 4096 + off) % cls.size == 0
            if p:  # the first object starting in page p: none between its start and p's
                assert p * 4096 + off - cls.size < p * 4096


# -- other page sizes and configurations -----------------------------------


@pytest.mark.parametrize("page, delta, nr", [(4096, 16, 255), (16384, 64, 257), (65536, 256, 257)])
@pytest.mark.parametrize("chain", [4, 8, 16])
def test_other_page_sizes(page, delta, nr, chain):
    geo = Geometry(chain, page_size=page)
    assert geo.class_delta == delta
    assert geo.nr_classes == nr
    assert geo.max_alloc_size == page
    want, alias, huge = _linux_classes(chain, page)
    assert _as_tuples(geo) == want
    assert [c.index for c in geo.class_of_index] == [alias[i] for i in range(nr)]
    assert geo.huge_class_size == huge
    assert geo.classes[-1].size == page and geo.classes[-1].huge
    assert geo.classes[0].size == geo.min_alloc_size == 32


@pytest.mark.parametrize("chain, min_size", [(4, 64), (8, 128), (16, 256)])
def test_small_obj_index_bits_raise_the_minimum_class(chain, min_size):
    # 32-bit PAE: OBJ_INDEX_BITS = 8, ZS_MIN_ALLOC_SIZE = chain * PAGE_SIZE >> 8
    geo = Geometry(chain, obj_index_bits=8)
    assert geo.min_alloc_size == min_size
    assert geo.classes[0].size == min_size
    want, _, huge = _linux_classes(chain, 4096, 8)
    assert _as_tuples(geo) == want and geo.huge_class_size == huge


@pytest.mark.parametrize("kwargs", [{"chain_size": 0}, {"chain_size": 17},
                                    {"page_size": 2048}, {"page_size": 12288}])
def test_bad_geometry(kwargs):
    with pytest.raises(ValueError):
        Geometry(**kwargs)


# -- the huge threshold as the pool applies it -----------------------------------


@pytest.mark.parametrize("chain, last_normal, normal_size", [(4, 3256, 3264), (8, 3624, 3632), (16, 3832, 3840)])
def test_huge_threshold(chain, last_normal, normal_size):
    pool = Pool(chain)
    assert pool.huge_class_size == last_normal + 1
    assert pool.class_size_for(last_normal) == normal_size
    assert pool.class_size_for(last_normal + 1) == 4096
    assert pool.class_size_for(4096) == 4096
    assert pool.class_size_for(1) == 32
    assert pool.class_size_for(24) == 32
    assert pool.class_size_for(25) == 48
    # every payload lands in the smallest class that holds payload + header
    geo = pool.geometry
    for n in range(1, 4097):
        slot = pool.class_size_for(n)
        assert slot >= min(n + ZS_HANDLE_SIZE, 4096)
        assert slot == geo.class_for_payload(n).size
    # and the stored object really sits in a zspage of that class
    h1 = pool.store(b"\x01" * last_normal)
    h2 = pool.store(b"\x02" * (last_normal + 1))
    z1, z2 = pool.zspage_of(h1), pool.zspage_of(h2)
    assert pool.zspage_info(z1)["size"] == normal_size
    assert pool.zspage_info(z2)["size"] == 4096
    assert pool.total_pages == geo.class_for_payload(last_normal).pages_per_zspage + 1


def test_class_size_for_rejects_bad_sizes():
    pool = Pool(8)
    assert pool.class_size_for(3624) == 3632
    assert pool.class_size_for(3625) == 4096
    with pytest.raises(InvalidSizeError):
        pool.class_size_for(0)
    with pytest.raises(ObjectTooLargeError):
        pool.class_size_for(4097)
