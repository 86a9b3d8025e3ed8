"""Rule-based state machines for zswap and cleancache against plain dict models.

Every rule runs on the front-end and on the model; after every step the
structures are cross-checked (LRU, indexes, counters, the pool's own
invariants) and each offset's state is compared with the model.  zswap's
observed state changes are checked against its transition table.  Compaction,
shrink, writeback and the shrink worker are rules too, so they interleave
with everything else.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from zmem import Pool, get_codec
from zmem._cleancache import Cleancache
from zmem._corpus import corpus_names, load_corpus
from zmem._swapstore import MemorySwapStore
from zmem._zswap import LIMIT_POLICIES, RECLAIM_POLICIES, TRANSITIONS, EntryState, Zswap

PAGE = 4096
NOFF = 24


def _pages() -> list[bytes]:
    """A fixed mix: real (or generated) compressible pages, huge-class, incompressible, zero-ish."""
    rnd = random.Random(42)
    out: list[bytes] = []
    names = corpus_names()
    if names:
        raw = load_corpus(names[0])
        lzo = get_codec("lzo")
        cand = [raw[i:i + PAGE] for i in range(0, len(raw), PAGE)]
        cand = [p for p in cand if 100 < len(lzo.compress(p)) < 3200]
        out += rnd.sample(cand, 14)
    while len(out) < 14:
        k = rnd.randint(100, 3000)
        out.append((rnd.randbytes(k // 4) + b"abcd" * k)[:k] + bytes(PAGE - k))
    out += [rnd.randbytes(3600) + bytes(PAGE - 3600) for _ in range(3)]  # huge class
    out += [rnd.randbytes(PAGE) for _ in range(2)]  # stored as-is
    out += [bytes([i]) * PAGE for i in (0, 7)]
    return out


PAGES = _pages()
SETTINGS = settings(max_examples=150, stateful_step_count=50, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])

offsets = st.integers(0, NOFF - 1)
page_ids = st.integers(0, len(PAGES) - 1)


class ZswapMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.zs: Zswap | None = None
        self.model: dict[int, int] = {}

    @initialize(exclusive=st.booleans(), reclaim=st.sampled_from(RECLAIM_POLICIES),
                policy=st.sampled_from(LIMIT_POLICIES), mem=st.integers(60, 400),
                pct=st.integers(10, 60), writeback=st.booleans())
    def init(self, exclusive, reclaim, policy, mem, pct, writeback) -> None:
        self.zs = Zswap(mem * PAGE, max_pool_percent=pct, exclusive_loads=exclusive,
                        reclaim=reclaim, limit_policy=policy, writeback_enabled=writeback,
                        shrinker_enabled=True, backing_store=MemorySwapStore(nr_slots=NOFF),
                        pool=Pool(chain_size=4))

    def _states(self) -> list[EntryState]:
        return [self.zs.state(o) for o in range(NOFF)]

    @rule(off=offsets, pid=page_ids)
    def store(self, off, pid) -> None:
        before = self.zs.state(off)
        ok = self.zs.store(off, PAGES[pid])
        assert self.zs.state(off) is TRANSITIONS[(before, "store" if ok else "reject")]
        if ok:
            self.model[off] = pid
        else:
            self.model.pop(off, None)

    @rule(off=offsets, pid=page_ids)
    def swap_out(self, off, pid) -> None:
        ok = self.zs.swap_out(off, PAGES[pid])
        assert self.zs.state(off) is (EntryState.POOL if ok else EntryState.STORE)
        self.model[off] = pid

    @rule(off=offsets)
    def load(self, off) -> None:
        before = self.zs.state(off)
        got = self.zs.load(off)
        want = self.model.get(off)
        assert got == (None if want is None else PAGES[want])
        ev = "load" if self.zs.exclusive_loads else "load_keep"
        assert self.zs.state(off) is TRANSITIONS[(before, ev)]
        if self.zs.exclusive_loads:
            self.model.pop(off, None)

    @rule(off=offsets)
    def load_cached(self, off) -> None:
        before = self.zs.state(off)
        got = self.zs.load_cached(off)
        if before is EntryState.POOL:
            assert got == PAGES[self.model[off]]
            if self.zs.exclusive_loads:
                self.model.pop(off)
                assert self.zs.state(off) is EntryState.EMPTY
        else:
            assert got is None and self.zs.state(off) is before

    @rule(off=offsets)
    def invalidate(self, off) -> None:
        before = self.zs.state(off)
        assert self.zs.invalidate(off) == (before is not EntryState.EMPTY)
        assert self.zs.state(off) is TRANSITIONS[(before, "invalidate")]
        self.model.pop(off, None)

    def _only_writebacks(self, before: list[EntryState]) -> None:
        for o, (a, b) in enumerate(zip(before, self._states())):
            assert a is b or (a, b) == (EntryState.POOL, EntryState.STORE), (o, a, b)

    @rule(n=st.integers(1, 12))
    def writeback(self, n) -> None:
        before = self._states()
        written = self.zs.writeback(n)
        self._only_writebacks(before)
        assert written == sum(a is not b for a, b in zip(before, self._states()))

    @rule(n=st.integers(1, 12))
    def shrink(self, n) -> None:
        before = self._states()
        self.zs.shrink(n)
        self._only_writebacks(before)

    @rule()
    def shrink_worker(self) -> None:
        before = self._states()
        self.zs.shrink_worker()
        self._only_writebacks(before)
        if self.zs.writeback_enabled and self.zs.stats().stored_pages == 0:
            assert self.zs.pool.total_pages == 0

    @rule()
    def compact(self) -> None:
        before = self._states()
        self.zs.pool.compact()
        assert self._states() == before

    @rule(pct=st.integers(5, 80))
    def set_max_pool_percent(self, pct) -> None:
        self.zs.max_pool_percent = pct

    @invariant()
    def consistent(self) -> None:
        if self.zs is None:
            return
        self.zs._check_invariants()
        self.zs.pool._check_invariants()
        for o, s in enumerate(self._states()):
            assert (o in self.model) == (s is not EntryState.EMPTY), (o, s)
        st_ = self.zs.stats()
        assert st_.pool_total_size == self.zs.pool.total_pages * PAGE
        assert st_.stored_pages == sum(s is EntryState.POOL for s in self._states())

    def teardown(self) -> None:
        if self.zs is None:
            return
        for o in range(NOFF):
            want = self.model.get(o)
            assert self.zs.load(o) == (None if want is None else PAGES[want])
        self.zs.close()


TestZswapMachine = ZswapMachine.TestCase
TestZswapMachine.settings = SETTINGS


keys = st.tuples(st.integers(0, 2), st.integers(0, 3), st.integers(0, 5))


class CleancacheMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.cc: Cleancache | None = None
        self.model: dict[tuple[int, int, int], int] = {}

    @initialize(exclusive=st.booleans(), reclaim=st.sampled_from(RECLAIM_POLICIES),
                budget=st.integers(4, 40))
    def init(self, exclusive, reclaim, budget) -> None:
        self.cc = Cleancache(budget * PAGE, reclaim=reclaim, exclusive_gets=exclusive,
                             pool=Pool(chain_size=4))

    @rule(key=keys, pid=page_ids)
    def put(self, key, pid) -> None:
        if self.cc.put(*key, PAGES[pid]):
            self.model[key] = pid
            return
        self.model.pop(key, None)
        assert not self.cc.contains(*key)

    @rule(key=keys)
    def get(self, key) -> None:
        got = self.cc.get(*key)
        if got is None:
            self.model.pop(key, None)  # gone: it must not come back without a put
            return
        assert got == PAGES[self.model[key]]  # never wrong data, never a resurrection
        if self.cc.exclusive_gets:
            del self.model[key]

    @rule(key=keys)
    def invalidate_page(self, key) -> None:
        self.cc.invalidate_page(*key)
        self.model.pop(key, None)
        assert not self.cc.contains(*key)

    @rule(fs=st.integers(0, 2), ino=st.integers(0, 3))
    def invalidate_inode(self, fs, ino) -> None:
        cached = sum(1 for k in self.cc.keys() if k[:2] == (fs, ino))
        assert self.cc.invalidate_inode(fs, ino) == cached
        for k in [k for k in self.model if k[:2] == (fs, ino)]:
            del self.model[k]

    @rule(fs=st.integers(0, 2))
    def invalidate_fs(self, fs) -> None:
        self.cc.invalidate_fs(fs)
        for k in [k for k in self.model if k[0] == fs]:
            del self.model[k]
        assert not any(k[0] == fs for k in self.cc.keys())

    @rule(n=st.integers(1, 8))
    def shrink(self, n) -> None:
        before = self.cc.stats().stored_pages
        got = self.cc.shrink(n)
        assert got >= min(n, before) and self.cc.stats().stored_pages == before - got

    @precondition(lambda self: self.cc is not None)
    @rule()
    def compact(self) -> None:
        keys_before = sorted(self.cc.keys())
        self.cc.pool.compact()
        assert sorted(self.cc.keys()) == keys_before

    @invariant()
    def consistent(self) -> None:
        if self.cc is None:
            return
        self.cc._check_invariants()
        self.cc.pool._check_invariants()
        cached = set(self.cc.keys())
        assert cached <= set(self.model), cached - set(self.model)
        assert self.cc.pool.total_pages <= self.cc.budget_pages + self.cc.pool.chain_size
        st_ = self.cc.stats()
        assert st_.hits + st_.misses == st_.gets

    def teardown(self) -> None:
        if self.cc is None:
            return
        for k, pid in self.model.items():
            got = self.cc.get(*k)
            assert got is None or got == PAGES[pid]
        self.cc.close()


TestCleancacheMachine = CleancacheMachine.TestCase
TestCleancacheMachine.settings = SETTINGS
