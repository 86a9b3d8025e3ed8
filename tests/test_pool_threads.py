"""zsmalloc under concurrent readers, writers, compaction and page migration.

Every object carries its own id, version, size and a CRC-32 of all of it, so a
reader can tell a torn read (half moved, half written, or bytes of another
slot) from a good one without any lock of its own.  Each writer owns its
objects and knows their exact bytes, so it can also tell a lost write (an
overwrite or a move that did not stick).  Meanwhile one thread compacts in a
loop and one migrates random pages of the pool.

The default run is a few seconds per configuration; ``ZMEM_STRESS_SECONDS=60``
runs the ``slow`` variant for that long.
"""

from __future__ import annotations

import os
import random
import struct
import sys
import threading
import time
import zlib
from dataclasses import dataclass, field

import pytest

from zmem import InvalidHandleError, Pool

HEADER = struct.Struct("<QIH")  # object id, version, size
TRAILER = struct.Struct("<I")  # crc32 of everything before it
MIN_SIZE = HEADER.size + TRAILER.size + 1
REGISTRY = 4096  # published (handle, id) pairs the readers pick from


def make_object(rnd: random.Random, oid: int, version: int, size: int) -> bytes:
    head = HEADER.pack(oid, version, size) + rnd.randbytes(size - HEADER.size - TRAILER.size)
    return head + TRAILER.pack(zlib.crc32(head))


def parse_object(data: bytes) -> tuple[int, int] | None:
    """(id, version) of a self-consistent object, None if the bytes are torn."""
    if len(data) < MIN_SIZE or TRAILER.unpack_from(data, len(data) - TRAILER.size)[0] != zlib.crc32(
            data[:-TRAILER.size]):
        return None
    oid, version, size = HEADER.unpack_from(data)
    return (oid, version) if size == len(data) else None


@dataclass
class Stats:
    reads: int = 0
    gone: int = 0  # the handle was freed between pick and read: fine
    aliased: int = 0  # handle value reused after 256 generations: the documented limit
    writes: int = 0
    frees: int = 0
    compactions: int = 0
    pages_compacted: int = 0
    migrations: int = 0
    torn: list = field(default_factory=list)
    wrong: list = field(default_factory=list)
    lost: list = field(default_factory=list)
    regressed: list = field(default_factory=list)
    errors: list = field(default_factory=list)


class Stress:
    def __init__(self, pool: Pool, seconds: float, readers: int = 3, writers: int = 3,
                 migrate: bool = True, seed: int = 0) -> None:
        self.pool = pool
        self.seconds = seconds
        self.nreaders, self.nwriters = readers, writers
        self.migrate = migrate
        self.seed = seed
        self.stop = threading.Event()
        self.stats = Stats()
        self.registry: list = [None] * REGISTRY
        self.ids_at: dict[int, set] = {}  # every id ever stored under a handle value
        self.ids = iter(range(1, 1 << 62))
        self.id_lock = threading.Lock()
        self.owned: list[dict] = []

    # -- threads --------------------------------------------------------

    def _guard(self, fn, *args):
        try:
            fn(*args)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.stats.errors.append(f"{fn.__name__}: {type(exc).__name__}: {exc}")
            self.stop.set()

    def reader(self, k: int) -> None:
        rnd = random.Random(self.seed * 1000 + k)
        pool, st = self.pool, self.stats
        seen: dict[int, int] = {}
        buf = bytearray(4096)
        while not self.stop.is_set():
            ent = self.registry[rnd.randrange(REGISTRY)]
            if ent is None:
                continue
            h, oid = ent
            mode = rnd.random()
            try:
                if mode < 0.6:
                    data = pool.read(h)
                else:
                    n = pool.read_into(h, buf)
                    data = bytes(buf[:n])
            except InvalidHandleError:
                st.gone += 1
                continue
            st.reads += 1
            got = parse_object(data)
            if got is None:
                st.torn.append((h, oid, len(data)))
                continue
            if got[0] != oid:
                if got[0] in self.ids_at.get(h, ()):
                    st.aliased += 1
                else:
                    st.wrong.append((h, oid, got))
                continue
            if got[1] < seen.get(oid, 0):
                st.regressed.append((h, oid, seen[oid], got[1]))
            seen[oid] = got[1]

    def writer(self, k: int) -> None:
        rnd = random.Random(self.seed * 1000 + 100 + k)
        pool, st = self.pool, self.stats
        own: dict[int, list] = {}  # handle -> [id, version, bytes, registry index]
        self.owned.append(own)
        slots = list(range(k, REGISTRY, self.nwriters))
        free_slots = slots[:]
        cap = 600  # objects per writer: filled, drained to a quarter, filled again
        filling = True
        sizes = [3600, 1000, 2000, 3000, 100, 4000, 700]

        def new_id() -> int:
            with self.id_lock:
                return next(self.ids)

        def publish(h: int, oid: int) -> int:
            self.ids_at.setdefault(h, set()).add(oid)
            if free_slots:
                i = free_slots.pop(rnd.randrange(len(free_slots)))
                self.registry[i] = (h, oid)
                return i
            return -1

        def retire(h: int) -> None:
            i = own[h][3]
            if i >= 0:
                self.registry[i] = None
                free_slots.append(i)

        def check(h: int) -> None:
            want = own[h][2]
            got = pool.read(h)
            if got != want:
                st.lost.append((h, own[h][0], own[h][1]))

        while not self.stop.is_set():
            if filling and len(own) >= cap:
                filling = False
            elif not filling and len(own) <= cap // 4:
                filling = True
            r = rnd.random()
            if filling and r < 0.55 or not own:
                batch = 1 if rnd.random() < 0.7 else rnd.randint(2, 10)
                items = []
                for _ in range(batch):
                    size = rnd.choice(sizes) if rnd.random() < 0.8 else rnd.randint(MIN_SIZE, 4096)
                    oid = new_id()
                    items.append((oid, make_object(rnd, oid, 1, size)))
                if batch == 1:
                    hs = [pool.store(items[0][1])]
                else:
                    hs = pool.store_many([d for _, d in items])
                for h, (oid, data) in zip(hs, items):
                    assert h not in own
                    own[h] = [oid, 1, data, -1]
                    own[h][3] = publish(h, oid)
                st.writes += batch
            elif r < 0.75:
                h = rnd.choice(list(own))
                oid, version, old, _ = own[h]
                data = make_object(rnd, oid, version + 1, len(old))
                pool.write(h, data)
                own[h][1:3] = [version + 1, data]
                st.writes += 1
                check(h)
            elif filling and r < 0.9 or not filling:
                batch = 1 if rnd.random() < 0.7 else min(len(own), rnd.randint(2, 20))
                victims = rnd.sample(list(own), batch)
                for h in victims:
                    retire(h)
                if batch == 1:
                    pool.free(victims[0])
                else:
                    pool.free_many(victims)
                for h in victims:
                    del own[h]
                st.frees += batch
            else:
                for h in rnd.sample(list(own), min(20, len(own))):
                    check(h)

    def compactor(self) -> None:
        st = self.stats
        while not self.stop.is_set():
            st.pages_compacted += self.pool.compact()
            st.compactions += 1
            time.sleep(0.0005)

    def migrator(self) -> None:
        rnd = random.Random(self.seed * 1000 + 999)
        pool, st = self.pool, self.stats
        while not self.stop.is_set():
            pfns = pool._frame_zspage  # white box: the page descriptors
            if not len(pfns):
                time.sleep(0.001)
                continue
            try:
                pool.migrate_page(rnd.randrange(len(pfns)))
            except ValueError:
                continue  # not a page of the pool at the moment
            st.migrations += 1

    # -- driver -----------------------------------------------------------

    def run(self) -> Stats:
        threads = [threading.Thread(target=self._guard, args=(self.writer, k)) for k in range(self.nwriters)]
        threads += [threading.Thread(target=self._guard, args=(self.reader, k)) for k in range(self.nreaders)]
        threads.append(threading.Thread(target=self._guard, args=(self.compactor,)))
        if self.migrate:
            threads.append(threading.Thread(target=self._guard, args=(self.migrator,)))
        old = sys.getswitchinterval()
        sys.setswitchinterval(2e-5)  # many more interleavings than the default 5 ms
        try:
            for t in threads:
                t.start()
            self.stop.wait(self.seconds)
            self.stop.set()
            for t in threads:
                t.join(30)
                assert not t.is_alive(), f"{t.name} hangs"
        finally:
            sys.setswitchinterval(old)
        return self.stats

    def final_check(self) -> None:
        """After the threads: every writer's objects exactly as last written."""
        pool = self.pool
        total = 0
        for own in self.owned:
            for h, (oid, version, data, _) in own.items():
                got = pool.read(h)
                if got != data:
                    self.stats.lost.append((h, oid, version))
            total += len(own)
        assert pool.objects == total
        pool._check_invariants()
        before = pool.total_pages
        freed = pool.compact()
        assert pool.total_pages == before - freed
        assert all(r.free_slots < r.objs_per_zspage for r in pool.class_stats())
        for own in self.owned:
            pool.free_many(list(own))
        assert pool.objects == 0 and pool.total_pages == 0


def _run(chain: int, seconds: float, migrate: bool, seed: int) -> Stats:
    pool = Pool(chain)
    stress = Stress(pool, seconds, migrate=migrate, seed=seed)
    st = stress.run()
    if not st.errors:
        stress.final_check()
    print(f"\n[stress chain={chain} {seconds:.0f}s] reads={st.reads} gone={st.gone} aliased={st.aliased} "
          f"writes={st.writes} frees={st.frees} compactions={st.compactions} "
          f"pages_compacted={st.pages_compacted} migrations={st.migrations} "
          f"torn={len(st.torn)} wrong={len(st.wrong)} lost={len(st.lost)} regressed={len(st.regressed)}")
    assert st.errors == []
    assert st.torn == [], st.torn[:5]
    assert st.wrong == [], st.wrong[:5]
    assert st.lost == [], st.lost[:5]
    assert st.regressed == [], st.regressed[:5]
    # the run must have exercised what it claims to
    assert st.reads > 1000 and st.writes > 1000 and st.frees > 500
    assert st.compactions > 10 and st.pages_compacted > 0
    if migrate:
        assert st.migrations > 100
    pool.close()
    return st


class GateLock:
    """The pool lock, with a gate: the compacting thread stops before its n-th acquire.

    Compaction takes the pool lock once per source zspage and drops it in
    between; at the gate it holds no lock, so the test can change the pool
    under a compaction that is half done, deterministically.
    """

    def __init__(self, inner, stop_at: int) -> None:
        self.inner = inner
        self.stop_at = stop_at
        self.count = 0
        self.compactor = None
        self.at_gate = threading.Event()
        self.go = threading.Event()

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if threading.get_ident() == self.compactor:
            self.count += 1
            if self.count == self.stop_at:
                self.at_gate.set()
                assert self.go.wait(10)
        return self.inner.acquire(blocking, timeout)

    def release(self) -> None:
        self.inner.release()

    def locked(self) -> bool:
        return self.inner.locked()

    __enter__ = acquire

    def __exit__(self, *exc) -> None:
        self.release()


def _fragmented_pool(seed: int):
    pool = Pool(8)
    rnd = random.Random(seed)
    model = {}
    for i in range(1500):
        data = make_object(rnd, i, 1, rnd.choice([3600, 1000, 2000, 300, rnd.randint(MIN_SIZE, 4096)]))
        model[pool.store(data)] = data
    for h in rnd.sample(sorted(model), 900):
        pool.free(h)
        del model[h]
    return pool, model


def _compaction_lock_acquires() -> int:
    pool, _ = _fragmented_pool(1)
    gate = GateLock(pool._lock, stop_at=-1)
    pool._lock = gate
    gate.compactor = threading.get_ident()
    assert pool.compact() > 0
    return gate.count


@pytest.mark.parametrize("where", [0.0, 0.01, 0.1, 0.3, 0.5, 0.7, 0.9, 0.99])
def test_compaction_tolerates_changes_between_steps(where):
    total = _compaction_lock_acquires()
    pool, model = _fragmented_pool(1)
    gate = GateLock(pool._lock, stop_at=1 + int(where * (total - 1)))
    pool._lock = gate  # white box: the lock every entry point takes
    result = []

    def compactor() -> None:
        gate.compactor = threading.get_ident()
        result.append(pool.compact())

    p0 = pool.total_pages
    t = threading.Thread(target=compactor)
    t.start()
    assert gate.at_gate.wait(10), "compaction never reached the gate"
    # compaction is paused between two source zspages, holding no lock
    p_gate = pool.total_pages
    rnd = random.Random(int(where * 100))
    for h in rnd.sample(sorted(model), len(model) // 3):
        pool.free(h)
        del model[h]
    for i in range(200):
        data = make_object(rnd, 10_000 + i, 1, rnd.choice([3600, 1000, 2000, 300]))
        model[pool.store(data)] = data
    for h in rnd.sample(sorted(model), 50):
        data = make_object(rnd, 20_000 + h % 1000, 2, len(model[h]))
        pool.write(h, data)
        model[h] = data
    p_changed = pool.total_pages
    gate.go.set()
    t.join(10)
    assert not t.is_alive()
    [freed] = result
    assert freed >= p0 - p_gate >= 0
    assert pool.pages_compacted == freed
    assert pool.total_pages == p_changed - (freed - (p0 - p_gate))
    for h, data in model.items():
        assert pool.read(h) == data
    assert pool.objects == len(model)
    pool._check_invariants()
    # a second compaction finishes what the changes left behind
    pool.compact()
    assert all(r.free_slots < r.objs_per_zspage for r in pool.class_stats())
    for h, data in model.items():
        assert pool.read(h) == data
    pool._check_invariants()


@pytest.mark.parametrize("chain, migrate", [(8, True), (4, True), (8, False)])
def test_concurrent_readers_writers_compaction(chain, migrate, capsys):
    with capsys.disabled():
        _run(chain, 2.5, migrate, seed=chain)


_LONG = os.environ.get("ZMEM_STRESS_SECONDS")


@pytest.mark.slow
@pytest.mark.skipif(not _LONG, reason="set ZMEM_STRESS_SECONDS to run the long stress test")
@pytest.mark.parametrize("chain", [8, 4])
def test_concurrent_stress_long(chain, capsys):
    with capsys.disabled():
        _run(chain, float(_LONG or 0), True, seed=int(time.time()))
