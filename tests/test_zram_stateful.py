"""A hypothesis state machine drives a small Zram against a bytearray model of the disk.

Besides the content, the model tracks which slots are allocated (written and not
discarded; partial pages of a discard keep their data, partial pages of
write_zeroes are rewritten) and derives every counter of mm_stat that does not
depend on zsmalloc's layout from it.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from zmem import Zram, get_codec

PAGE = 4096
NPAGES = 64
DISK = NPAGES * PAGE
LZO = get_codec("lzo")

KINDS = ("same", "zero", "comp", "text", "rand", "alpha")


def make_page(kind: str, seed: int) -> bytes:
    r = random.Random(seed)
    if kind == "same":
        return r.getrandbits(64).to_bytes(8, "little") * 512
    if kind == "zero":
        return bytes(PAGE)
    if kind == "comp":
        k = r.randint(1, 3600)
        return r.randbytes(k) + bytes(PAGE - k)
    if kind == "text":
        words = [bytes(r.choice(b"abcdefgh") for _ in range(r.randint(1, 6))) for _ in range(40)]
        out = bytearray()
        while len(out) < PAGE:
            out += r.choice(words)
        return bytes(out[:PAGE])
    if kind == "alpha":
        return bytes(r.randrange(16) for _ in range(PAGE))
    return r.randbytes(PAGE)  # rand: huge


def make_bytes(kind: str, seed: int, n: int) -> bytes:
    if kind == "same":
        return (random.Random(seed).getrandbits(64).to_bytes(8, "little") * (n // 8 + 1))[:n]
    if kind == "zero":
        return bytes(n)
    if kind == "rand":
        return random.Random(seed).randbytes(n)
    page = make_page(kind, seed)
    return (page * (n // PAGE + 1))[:n]


def is_same(page: bytes) -> bool:
    return page == page[:8] * 512


_lzo_cache: dict[bytes, int] = {}


def stored_size(page: bytes) -> int:
    """compr_data_size contribution of a non-same-filled page (4096 when huge)."""
    n = _lzo_cache.get(page)
    if n is None:
        n = len(LZO.compress(page))
        if len(_lzo_cache) > 20000:
            _lzo_cache.clear()
        _lzo_cache[page] = n
    return PAGE if n >= 3625 else n


class ZramMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.z = Zram(DISK, "lzo")
        self.model = bytearray(DISK)
        self.alloc = [False] * NPAGES
        self.notify = 0
        self.compacted = 0
        self.max_used = 0

    def teardown(self) -> None:
        self.z.close()

    # -- helpers ----------------------------------------------------------

    def page(self, i: int) -> bytes:
        return bytes(self.model[i * PAGE:(i + 1) * PAGE])

    def touched(self, offset: int, length: int) -> range:
        if length == 0:
            return range(0)
        return range(offset // PAGE, (offset + length - 1) // PAGE + 1)

    def model_discard(self, offset: int, length: int) -> None:
        """The kernel's zram_bio_discard: skip a leading partial page, free whole pages."""
        index, head, n = offset // PAGE, offset % PAGE, length
        if head:
            if n <= PAGE - head:
                return
            n -= PAGE - head
            index += 1
        while n >= PAGE:
            self.model[index * PAGE:(index + 1) * PAGE] = bytes(PAGE)
            self.alloc[index] = False
            self.notify += 1
            index += 1
            n -= PAGE

    # -- rules --------------------------------------------------------------

    @initialize(kinds=st.lists(st.sampled_from(KINDS), min_size=NPAGES // 2, max_size=NPAGES // 2),
                seed=st.integers(0, 2**20))
    def fill(self, kinds, seed):
        data = b"".join(make_page(k, seed + i) for i, k in enumerate(kinds))
        self.z.write(0, data)
        self.model[:len(data)] = data
        for i in range(len(kinds)):
            self.alloc[i] = True

    @rule(index=st.integers(0, NPAGES - 1), kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=6),
          seed=st.integers(0, 2**20))
    def write_pages(self, index, kinds, seed):
        kinds = kinds[:NPAGES - index]
        data = b"".join(make_page(k, seed + i) for i, k in enumerate(kinds))
        self.z.write(index * PAGE, data)
        self.model[index * PAGE:index * PAGE + len(data)] = data
        for i in range(index, index + len(kinds)):
            self.alloc[i] = True

    @precondition(lambda self: any(self.alloc))
    @rule(which=st.integers(0, NPAGES - 1), kind=st.sampled_from(KINDS), seed=st.integers(0, 2**20))
    def overwrite(self, which, kind, seed):
        allocated = [i for i in range(NPAGES) if self.alloc[i]]
        i = allocated[which % len(allocated)]
        page = make_page(kind, seed)
        self.z.write(i * PAGE, page)
        self.model[i * PAGE:(i + 1) * PAGE] = page

    @rule(offset=st.integers(0, DISK - 1), length=st.integers(0, 3 * PAGE), kind=st.sampled_from(KINDS),
          seed=st.integers(0, 2**20))
    def write_unaligned(self, offset, length, kind, seed):
        length = min(length, DISK - offset)
        data = make_bytes(kind, seed, length)
        self.z.write(offset, data)
        self.model[offset:offset + length] = data
        for i in self.touched(offset, length):
            self.alloc[i] = True

    @rule(offset=st.integers(0, DISK), length=st.integers(0, 4 * PAGE))
    def read(self, offset, length):
        length = min(length, DISK - offset)
        assert self.z.read(offset, length) == bytes(self.model[offset:offset + length])

    @rule(offset=st.one_of(st.integers(0, NPAGES - 1).map(lambda i: i * PAGE), st.integers(0, DISK - 1)),
          length=st.one_of(st.integers(0, 4).map(lambda n: n * PAGE), st.integers(0, 4 * PAGE)))
    def discard(self, offset, length):
        length = min(length, DISK - offset)
        self.z.discard(offset, length)
        self.model_discard(offset, length)

    @rule(offset=st.integers(0, DISK - 1), length=st.integers(0, 4 * PAGE))
    def write_zeroes(self, offset, length):
        length = min(length, DISK - offset)
        self.z.write_zeroes(offset, length)
        if length == 0:
            return
        end = offset + length
        a = -(-offset // PAGE) * PAGE
        b = end // PAGE * PAGE
        if a >= b:
            partial = [(offset, end)]
            whole = range(0)
        else:
            partial = [(offset, a), (b, end)]
            whole = range(a // PAGE, b // PAGE)
        for lo, hi in partial:
            if lo < hi:
                self.model[lo:hi] = bytes(hi - lo)
                for i in self.touched(lo, hi - lo):
                    self.alloc[i] = True
        for i in whole:
            self.model[i * PAGE:(i + 1) * PAGE] = bytes(PAGE)
            self.alloc[i] = False
            self.notify += 1

    @rule()
    def compact(self):
        before = self.z.mm_stat()
        freed = self.z.compact()
        after = self.z.mm_stat()
        assert freed >= 0
        self.compacted += freed
        assert before.mem_used_total - after.mem_used_total == freed * PAGE
        assert after.compr_data_size == before.compr_data_size
        assert after.mem_used_max == before.mem_used_max

    @rule()
    def reset_mem_used_max(self):
        self.z.reset_mem_used_max()
        m = self.z.mm_stat()
        assert m.mem_used_max == m.mem_used_total

    # -- invariants -----------------------------------------------------------

    @invariant()
    def content_matches(self):
        assert self.z.read(0, DISK) == bytes(self.model)

    @invariant()
    def counters_match_model(self):
        m = self.z.mm_stat()
        alloc = [i for i in range(NPAGES) if self.alloc[i]]
        same = [i for i in alloc if is_same(self.page(i))]
        stored = [i for i in alloc if not is_same(self.page(i))]
        sizes = [stored_size(self.page(i)) for i in stored]
        assert m.orig_data_size == len(alloc) * PAGE
        assert m.same_pages == len(same)
        assert m.huge_pages == sum(s == PAGE for s in sizes)
        assert m.compr_data_size == sum(sizes)
        assert m.pages_compacted == self.compacted
        assert m.mem_limit == 0
        assert m.huge_pages_since >= m.huge_pages
        assert m.mem_used_max >= m.mem_used_total >= m.compr_data_size
        if not stored:
            assert m.mem_used_total == 0
        assert self.z.pool.objects == len(stored)
        assert self.z.io_stat().notify_free == self.notify
        assert self.z.io_stat().failed_writes == 0 and self.z.io_stat().failed_reads == 0
        for i in range(NPAGES):
            assert self.z.slot_info(i)["allocated"] == self.alloc[i], i

    @invariant()
    def pool_consistent(self):
        self.z.pool._check_invariants()


ZramMachine.TestCase.settings = settings(
    max_examples=250, stateful_step_count=40, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
TestZramStateful = ZramMachine.TestCase
