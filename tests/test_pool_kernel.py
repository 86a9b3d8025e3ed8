"""A bare zmem.Pool against the kernel's zsmalloc, page for page.

The kernel's zsmalloc is reached through a zram device (the only way in from
userspace): pages with known lzo sizes (random bytes followed by zeros, which
python-lzo and the kernel compress to exactly the same length; see
zmem._compare.synthetic_pages) are written to a fresh /dev/zramN, and the
objects zram allocates for them are stored in a bare Pool in the same order:

* a same-filled page allocates nothing;
* a page whose lzo size n is below huge_class_size allocates n bytes;
* any other page allocates PAGE_SIZE bytes (zram stores it raw);
* an overwrite allocates the new object before freeing the old one, as
  zram_write_page does; a discard frees the slots of the range in order.

After every step the kernel's ``mem_used_total / 4096`` (zs_get_total_pages)
must equal ``pool.total_pages``, and after compaction ``pages_compacted``
must match too.  That only holds if the pool picks the same zspage for every
object and frees the same zspages as the kernel: the orders this whole
re-implementation is about.

Needs root and /sys/class/zram-control; skipped cleanly elsewhere.
"""

from __future__ import annotations

import random

import lzo
import pytest

from zmem import Pool
from zmem._compare import synthetic_pages
from zmem._kernel import KernelZram, kernel_zram_available

pytestmark = pytest.mark.kernel

PAGE = 4096
AVAILABLE, WHY = kernel_zram_available()


class Mirror:
    """The objects zram would allocate, in a bare Pool, slot by slot."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.slots: dict[int, int] = {}
        self.sizes: dict[int, int] = {}

    def object_for(self, page: bytes) -> bytes | None:
        if page == page[:8] * 512:
            return None
        c = lzo.compress(page, 1, False)
        return page if len(c) >= self.pool.huge_class_size else c

    def write(self, index: int, page: bytes) -> None:
        obj = self.object_for(page)
        new = self.pool.store(obj) if obj is not None else None
        old = self.slots.pop(index, None)
        if old is not None:
            self.pool.free(old)
            del self.sizes[old]
        if new is not None:
            self.slots[index] = new
            self.sizes[new] = len(obj)

    def discard(self, index: int, count: int) -> None:
        for i in range(index, index + count):
            h = self.slots.pop(i, None)
            if h is not None:
                self.pool.free(h)
                del self.sizes[h]

    def compr_data_size(self) -> int:
        return sum(self.sizes.values())


class SideBySide:
    def __init__(self, npages: int, chain: int = 8) -> None:
        self.npages = npages
        self.kdev = KernelZram(npages * PAGE, "lzo")
        self.mirror = Mirror(Pool(chain))
        self.steps = 0

    def close(self) -> None:
        self.kdev.close()
        self.mirror.pool.close()

    def write(self, index: int, pages: bytes) -> None:
        self.kdev.write(index * PAGE, pages)
        for k in range(len(pages) // PAGE):
            self.mirror.write(index + k, pages[k * PAGE:(k + 1) * PAGE])

    def discard(self, index: int, count: int) -> None:
        self.kdev.discard(index * PAGE, count * PAGE)
        self.mirror.discard(index, count)

    def compact(self) -> int:
        before = self.kdev.mm_stat()["pages_compacted"]
        self.kdev.compact()
        freed = self.mirror.pool.compact()
        assert self.kdev.mm_stat()["pages_compacted"] - before == freed
        return freed

    def check(self, what: str) -> dict:
        self.steps += 1
        st = self.kdev.mm_stat()
        pool = self.mirror.pool
        # the precondition of everything else: the same objects, the same sizes
        assert st["compr_data_size"] == self.mirror.compr_data_size(), f"{what}: object sizes differ"
        assert st["mem_used_total"] % PAGE == 0
        assert st["mem_used_total"] // PAGE == pool.total_pages, (
            f"{what}: kernel {st['mem_used_total'] // PAGE} pages, zmem {pool.total_pages}")
        assert st["pages_compacted"] == pool.pages_compacted, what
        return st


@pytest.fixture
def side_by_side():
    if not AVAILABLE:
        pytest.skip(f"kernel zram unavailable: {WHY}")
    made = []

    def make(npages: int) -> SideBySide:
        s = SideBySide(npages)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_kernel_chain_size_is_8(side_by_side):
    # The comparisons below assume CONFIG_ZSMALLOC_CHAIN_SIZE=8.  An object
    # between the chain-4 and chain-8 huge thresholds tells them apart: with
    # chain 8 it opens a multi-page zspage, with chain 4 it is huge (1 page).
    s = side_by_side(4)
    rnd = random.Random(3)
    page = rnd.randbytes(3300) + bytes(PAGE - 3300)
    n = len(lzo.compress(page, 1, False))
    assert Pool(4).huge_class_size <= n < Pool(8).huge_class_size, n
    s.write(0, page)
    st = s.check("one object")
    assert st["compr_data_size"] == n
    chain8 = Pool(8)
    chain8.store(bytes(n))
    chain4 = Pool(4)
    chain4.store(bytes(n))
    assert chain4.total_pages == 1
    assert st["mem_used_total"] // PAGE == chain8.total_pages > 1


@pytest.mark.parametrize("seed", [1, 2])
def test_pages_match_the_kernel_step_by_step(side_by_side, seed):
    npages = 3000
    s = side_by_side(npages)
    rnd = random.Random(seed)
    pages = synthetic_pages(npages, seed=seed)

    # write everything, 64 pages at a time
    for i in range(0, npages, 64):
        k = min(64, npages - i)
        s.write(i, pages[i * PAGE:(i + k) * PAGE])
        s.check(f"write {i}+{k}")
    full = s.check("all written")
    assert full["mem_used_total"] // PAGE > 500

    # discard 60%: single pages and short runs, scattered
    slots = list(range(npages))
    rnd.shuffle(slots)
    for n, i in enumerate(slots[: npages * 6 // 10]):
        s.discard(i, min(rnd.choice((1, 1, 1, 2, 4)), npages - i))
        if n % 50 == 0:
            s.check(f"discard #{n}")
    s.check("discards done")

    freed = s.compact()
    assert freed > 0, "nothing to compact: the test would prove little"
    s.check("compact 1")

    # overwrites (new object first, then the old one freed) and same-filled pages
    for n in range(800):
        i = rnd.randrange(npages)
        src = rnd.randrange(npages)
        if rnd.random() < 0.1:
            page = rnd.getrandbits(64).to_bytes(8, "little") * 512
        else:
            page = pages[src * PAGE:(src + 1) * PAGE]
        s.write(i, page)
        if n % 50 == 0:
            s.check(f"overwrite #{n}")
    s.check("overwrites done")
    for _ in range(300):
        i = rnd.randrange(npages)
        s.discard(i, 1)
    s.check("more discards")
    s.compact()
    final = s.check("compact 2")
    print(f"\n[kernel seed={seed}] {s.steps} checkpoints equal; mem_used_total "
          f"{full['mem_used_total'] // PAGE} -> {final['mem_used_total'] // PAGE} pages, "
          f"pages_compacted {final['pages_compacted']}")

    # and the contents zmem kept are the objects it was given
    for index, h in list(s.mirror.slots.items())[:500]:
        page = s.kdev.read(index * PAGE, PAGE)
        assert s.mirror.pool.read(h) == s.mirror.object_for(page)


def test_discard_everything_frees_every_page(side_by_side):
    npages = 1024
    s = side_by_side(npages)
    pages = synthetic_pages(npages, seed=7)
    s.write(0, pages)
    s.check("written")
    s.discard(0, npages)
    st = s.check("discarded")
    assert st["mem_used_total"] == 0 and s.mirror.pool.total_pages == 0
