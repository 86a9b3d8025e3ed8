"""Compaction and reclaim together: threads store, load and invalidate real pages while
other threads compact the pool and write back / discard in loops.

Every load is checked against a per-thread model (each worker owns its offsets
or keys, as a process owns its swap slots), and at the end every page is read
back.  Zero lost or corrupted pages is the pass condition.

The short runs (a few seconds each) are part of the normal suite.  The long
run is ``@pytest.mark.slow`` and needs ``ZMEM_STRESS_SECONDS`` (seconds per
configuration), e.g. ``ZMEM_STRESS_SECONDS=600 pytest -m slow
tests/test_reclaim_stress.py -s`` for millions of operations.
"""

from __future__ import annotations

import functools
import os
import random
import threading
import time

import pytest

from zmem import Pool
from zmem._cleancache import Cleancache
from zmem._compare import synthetic_pages
from zmem._corpus import corpus_names, load_corpus
from zmem._zswap import EntryState, Zswap

PAGE = 4096
SHORT_SECONDS = 2.5
LONG_SECONDS = float(os.environ.get("ZMEM_STRESS_SECONDS", "0") or 0)


@functools.lru_cache(maxsize=1)
def stress_pages() -> tuple[bytes, ...]:
    """3000 random real pages from every corpus (generated pages when there are none)."""
    rnd = random.Random(2024)
    names = corpus_names()
    if names:
        out = []
        for name in names:
            raw = load_corpus(name)
            n = len(raw) // PAGE
            out += [raw[i * PAGE:(i + 1) * PAGE] for i in rnd.sample(range(n), min(n, 3000 // len(names)))]
        return tuple(out)
    raw = synthetic_pages(3000, seed=7)
    return tuple(raw[i:i + PAGE] for i in range(0, len(raw), PAGE))


class Harness:
    """Worker threads with models, background threads in loops, errors collected."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.errors: list[BaseException] = []
        self.threads: list[threading.Thread] = []
        self.ops = 0
        self._ops_lock = threading.Lock()

    def spawn(self, fn, *args) -> None:
        def run():
            try:
                fn(*args)
            except BaseException as exc:  # noqa: BLE001 - reported by the test
                self.errors.append(exc)
                self.stop.set()

        t = threading.Thread(target=run, daemon=True)
        self.threads.append(t)
        t.start()

    def compact_loop(self, pool) -> None:
        """Compact the pool over and over until the run stops."""
        while not self.stop.is_set():
            pool.compact()
            time.sleep(0.002)

    def count(self, n: int) -> None:
        with self._ops_lock:
            self.ops += n

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not self.stop.is_set():
            time.sleep(0.05)
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive(), "a stress thread hung"
        if self.errors:
            raise self.errors[0]


# ---------------------------------------------------------------------------
# zswap


def zswap_stress(seconds: float, *, reclaim: str, policy: str, exclusive: bool,
                 worker: str = "inline", auto_compact: bool = False, nworkers: int = 3,
                 per_worker: int = 400, seed: int = 0) -> dict:
    pages = stress_pages()
    pool = Pool(auto_compact=auto_compact, compact_threshold=4, shrinker_interval=32)
    # 2000 pages of memory at 20%: a 400-page pool (200..600 as the reclaimer
    # turns max_pool_percent), under the live set, so the limit is hit and the
    # worker writes back all the time
    zs = Zswap(2000 * PAGE, max_pool_percent=20, reclaim=reclaim, limit_policy=policy,
               exclusive_loads=exclusive, shrinker_enabled=True, pool=pool,
               shrink_worker=worker)  # backing store: a real (anonymous) file
    h = Harness()
    models: list[dict[int, int]] = [{} for _ in range(nworkers)]

    def work(w: int) -> None:
        rnd = random.Random(seed * 1000 + w)
        model = models[w]
        base = w * per_worker
        n = 0
        while not h.stop.is_set():
            off = base + rnd.randrange(per_worker)
            r = rnd.random()
            if r < 0.40:
                pid = rnd.randrange(len(pages))
                zs.swap_out(off, pages[pid])
                model[off] = pid
            elif r < 0.50:
                pid = rnd.randrange(len(pages))
                if zs.store(off, pages[pid]):
                    model[off] = pid
                else:
                    model.pop(off, None)
                    assert zs.state(off) is EntryState.EMPTY
            elif r < 0.90:
                got = zs.load(off)
                want = model.get(off)
                if got != (None if want is None else pages[want]):
                    raise AssertionError(f"offset {off}: wrong page (want {want}, state {zs.state(off)})")
                if exclusive:
                    model.pop(off, None)
            else:
                zs.invalidate(off)
                model.pop(off, None)
            n += 1
            if n % 256 == 0:
                h.count(256)
        h.count(n % 256)

    def reclaimer() -> None:
        rnd = random.Random(seed + 99)
        while not h.stop.is_set():
            r = rnd.random()
            if r < 0.4:
                zs.writeback(rnd.randint(1, 32))
            elif r < 0.7:
                zs.shrink(rnd.randint(1, 16))
            elif r < 0.9:
                zs.shrink_worker()
            else:
                zs.max_pool_percent = rnd.choice((10, 20, 30))
            time.sleep(0.001)

    for w in range(nworkers):
        h.spawn(work, w)
    h.spawn(h.compact_loop, pool)
    h.spawn(reclaimer)
    try:
        h.run_for(seconds)
        zs.drain(timeout=30)
        # every page handed over is still there, byte for byte
        for w, model in enumerate(models):
            for off in range(w * per_worker, (w + 1) * per_worker):
                want = model.get(off)
                assert zs.load(off) == (None if want is None else pages[want]), off
        zs._check_invariants()
        pool._check_invariants()
        st = zs.stats()
        assert st.written_back_pages > 0 and st.pool_limit_hit > 0 and pool.pages_compacted >= 0
        return {"ops": h.ops, "stats": st, "pages_compacted": pool.pages_compacted}
    finally:
        zs.close()


# ---------------------------------------------------------------------------
# cleancache


def cleancache_stress(seconds: float, *, reclaim: str, exclusive: bool, nworkers: int = 3,
                      seed: int = 0) -> dict:
    pages = stress_pages()
    pool = Pool()
    # 600 pages: a few hundred cached pages for 1200 keys, so puts evict
    cc = Cleancache(600 * PAGE, reclaim=reclaim, exclusive_gets=exclusive, pool=pool)
    h = Harness()
    models: list[dict[tuple[int, int], int]] = [{} for _ in range(nworkers)]

    def work(w: int) -> None:
        rnd = random.Random(seed * 1000 + w)
        model = models[w]
        n = 0
        while not h.stop.is_set():
            key = (rnd.randrange(10), rnd.randrange(40))  # (inode, index) in pool id w
            r = rnd.random()
            if r < 0.45:
                pid = rnd.randrange(len(pages))
                if cc.put(w, *key, pages[pid]):
                    model[key] = pid
                else:
                    model.pop(key, None)
            elif r < 0.9:
                got = cc.get(w, *key)
                if got is None:
                    model.pop(key, None)
                else:
                    want = model.get(key)
                    if want is None or got != pages[want]:
                        raise AssertionError(f"key {key}: wrong page (want {want})")
                    if exclusive:
                        del model[key]
            elif r < 0.98:
                cc.invalidate_page(w, *key)
                model.pop(key, None)
            else:
                cc.invalidate_inode(w, key[0])
                for k in [k for k in model if k[0] == key[0]]:
                    del model[k]
            n += 1
            if n % 256 == 0:
                h.count(256)
        h.count(n % 256)

    def shrinker() -> None:
        rnd = random.Random(seed + 7)
        while not h.stop.is_set():
            cc.shrink(rnd.randint(1, 24))
            time.sleep(0.01)

    for w in range(nworkers):
        h.spawn(work, w)
    h.spawn(h.compact_loop, pool)
    h.spawn(shrinker)
    try:
        h.run_for(seconds)
        for w, model in enumerate(models):
            for key, pid in model.items():
                got = cc.get(w, *key)
                assert got is None or got == pages[pid], key
        cc._check_invariants()
        pool._check_invariants()
        st = cc.stats()
        assert st.evictions > 0 and st.hits > 0
        return {"ops": h.ops, "stats": st, "pages_compacted": pool.pages_compacted}
    finally:
        cc.close()


# ---------------------------------------------------------------------------
# the tests

ZSWAP_CONFIGS = [
    pytest.param(dict(reclaim="object_lru", policy="writeback", exclusive=True, auto_compact=True),
                 id="kernel-object-lru"),
    pytest.param(dict(reclaim="zspage", policy="compact_then_writeback", exclusive=False,
                      worker="thread"), id="zspage-compact-threaded"),
]


@pytest.mark.parametrize("cfg", ZSWAP_CONFIGS)
def test_zswap_stress_short(cfg) -> None:
    out = zswap_stress(SHORT_SECONDS, **cfg)
    st = out["stats"]
    print(f"\nzswap {cfg}: {out['ops']} ops, {st.zswpin} pool loads + {st.disk_swapins} store loads "
          f"checked, {st.written_back_pages} written back, {out['pages_compacted']} pages compacted")
    assert out["ops"] > 1000


def test_cleancache_stress_short() -> None:
    out = cleancache_stress(SHORT_SECONDS, reclaim="zspage", exclusive=True)
    st = out["stats"]
    print(f"\ncleancache: {out['ops']} ops, {st.hits} hits checked, {st.evictions} evicted, "
          f"{out['pages_compacted']} pages compacted")
    assert out["ops"] > 1000


@pytest.mark.slow
@pytest.mark.skipif(LONG_SECONDS <= 0, reason="set ZMEM_STRESS_SECONDS for the long stress run")
@pytest.mark.parametrize("cfg", ZSWAP_CONFIGS + [
    pytest.param(dict(reclaim="object_lru", policy="compact_then_writeback", exclusive=False),
                 id="object-lru-compact"),
    pytest.param(dict(reclaim="zspage", policy="writeback", exclusive=True, auto_compact=True),
                 id="zspage-kernel-policy"),
])
def test_zswap_stress_long(cfg) -> None:
    out = zswap_stress(LONG_SECONDS, nworkers=4, per_worker=2000, seed=1, **cfg)
    print(f"\nzswap {cfg}: {out['ops']} ops in {LONG_SECONDS:.0f} s, {out['stats']}")


@pytest.mark.slow
@pytest.mark.skipif(LONG_SECONDS <= 0, reason="set ZMEM_STRESS_SECONDS for the long stress run")
@pytest.mark.parametrize("reclaim", ["zspage", "object_lru"])
@pytest.mark.parametrize("exclusive", [True, False])
def test_cleancache_stress_long(reclaim, exclusive) -> None:
    out = cleancache_stress(LONG_SECONDS, reclaim=reclaim, exclusive=exclusive, nworkers=4, seed=1)
    print(f"\ncleancache {reclaim} exclusive={exclusive}: {out['ops']} ops, {out['stats']}")
