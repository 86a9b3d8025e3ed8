"""The conformance suite every :class:`~zmem.PoolBase` allocator must pass.

zmem keeps one allocator interface (:class:`zmem.PoolBase`) so that zsmalloc
and its rivals can be swapped under the front-ends.  This module is the
contract of that interface written as tests, shipped with the seam as
zarr's ``zarr.testing.store`` is: an allocator's test file subclasses
:class:`PoolTests`, says how to build a pool, and then adds tests of its own
policy.  Nothing here knows about zsmalloc's classes or zspages; where an
allocator offers more (compaction, page migration, a ``_check_invariants()``
self-check, an ``objects`` count, ``class_stats()``) the suite uses it when
present and skips it otherwise.

Two parts:

``PoolTests``
    A base class of plain pytest tests.  Round trips (``malloc``/``write``/
    ``read``/``read_into``/``free``, ``store``/``store_many``/``free_many``)
    at many sizes, from 1 byte to ``max_alloc_size``, with enough objects per
    size that some straddle page boundaries; and every error case: size 0
    (:class:`~zmem.InvalidSizeError`, also a ``ValueError``), size above the
    maximum (:class:`~zmem.ObjectTooLargeError`), a write longer than the
    object (:class:`~zmem.WriteTooLargeError`), unknown, freed, stale and
    non-int handles (:class:`~zmem.InvalidHandleError`, also a ``KeyError``),
    double free (:class:`~zmem.DoubleFreeError`).  After *every* error the
    suite reads back every object stored before it: a refused operation must
    change nothing.

``PoolStateMachine`` / ``make_pool_state_machine``
    A Hypothesis rule-based machine that applies random operations (malloc +
    write, store, store_many, a bulk store followed by frees, read, overwrite
    in place, free, free_many, operations that must fail, compact,
    migrate_page) to a pool and to a plain ``dict`` model, and checks after
    every step that the two agree: contents intact, handles unchanged by
    compaction and migration, object count equal, ``total_pages`` equal to
    the pages of the live zspages (``_check_invariants()``, ``class_stats()``),
    and no pages left once the model is empty.

How an allocator's test file uses it (``tests/test_pool.py`` for zsmalloc)::

    from zmem import Pool
    from zmem.testing import PoolTests, make_pool_state_machine

    class TestZsmalloc(PoolTests):
        def make_pool(self):
            return Pool(chain_size=8)

        # ... zsmalloc-specific tests (allocation order, compaction, ...)

    TestZsmallocStateful = make_pool_state_machine(
        lambda: Pool(chain_size=8),
        settings=hypothesis.settings(max_examples=100, stateful_step_count=50),
        pages=lambda pool: [...],  # optional: the pfns the pool holds, for migrate_page
    )

``PoolTests`` is not collected by itself (its name does not start with
``Test``); each subclass is.  The ``pool`` fixture builds a pool with
``make_pool()`` and closes it after the test; ``stored`` also fills it with
objects of every size and returns ``(pool, model)``.

Needs the ``test`` extra (pytest, hypothesis).
"""

from __future__ import annotations

import math
import random
from array import array
from collections.abc import Callable

import pytest
from hypothesis import note
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from ._classes import PAGE_SIZE
from ._errors import (
    DoubleFreeError,
    InvalidHandleError,
    InvalidSizeError,
    ObjectTooLargeError,
    WriteTooLargeError,
)
from ._pool import PoolBase

__all__ = [
    "DictPool",
    "PoolStateMachine",
    "PoolTests",
    "assert_pool_matches",
    "check_pool_invariants",
    "interesting_sizes",
    "make_pool_state_machine",
    "payload",
]


# ----------------------------------------------------------------------
# helpers shared by the suite and by allocator-specific tests


def payload(seed: int, size: int) -> bytes:
    """``size`` deterministic pseudo-random bytes, different for every seed.

    Random bytes rather than a fill pattern: a read that returns the right
    bytes from the wrong offset, or half of one object and half of another,
    cannot pass by accident.
    """
    return random.Random(seed).randbytes(size)


def interesting_sizes(max_alloc_size: int = PAGE_SIZE) -> list[int]:
    """Sizes worth a round trip: the ends, powers of two and their neighbours,
    zsmalloc's class boundaries (header 8, delta 16) and its huge thresholds."""
    base = {1, 2, 7, 8, 9, 15, 16, 17, 23, 24, 25, 31, 32, 33, 40, 63, 64, 65, 100,
            127, 128, 129, 255, 256, 257, 500, 511, 512, 513, 1000, 1023, 1024,
            1025, 1500, 2000, 2039, 2040, 2041, 2047, 2048, 2049, 2500, 3000,
            3256, 3257, 3264, 3500, 3600, 3624, 3625, 3632, 3700, 3832, 3833,
            4000, 4088, 4095, 4096}
    sizes = {s for s in base if s <= max_alloc_size}
    sizes.update({max_alloc_size - 1, max_alloc_size} - {0})
    return sorted(sizes)


def _objects_per_size(size: int) -> int:
    # Enough objects to fill a few pages, so that in any layout some of them
    # start near the end of a page and straddle into the next.
    return min(300, math.ceil(3 * PAGE_SIZE / size) + 2)


def check_pool_invariants(pool: PoolBase, model: dict[int, bytes] | None = None) -> None:
    """The allocator's own self-check plus the accounting the suite can see.

    Runs ``pool._check_invariants()`` if the pool has one (zsmalloc's
    VM_BUG_ONs); checks ``objects`` against the model and, with
    ``class_stats()``, that ``total_pages`` is the sum of the classes' pages.
    """
    check = getattr(pool, "_check_invariants", None)
    if check is not None:
        check()
    if model is not None and hasattr(pool, "objects"):
        assert pool.objects == len(model), (pool.objects, len(model))
    stats = getattr(pool, "class_stats", None)
    if stats is not None:
        rows = stats()
        assert sum(r.pages_used for r in rows) == pool.total_pages
        if model is not None:
            assert sum(r.obj_used for r in rows) == len(model)
    if model is not None and not model:
        assert pool.total_pages == 0, "a pool with no objects still holds pages"


def assert_pool_matches(pool: PoolBase, model: dict[int, bytes]) -> None:
    """Every object of ``model`` reads back exactly (and with the right size)."""
    for h, data in model.items():
        got = pool.read(h)
        if got != data:
            raise AssertionError(
                f"handle {h:#x}: read {len(got)} bytes that differ from the "
                f"{len(data)} bytes stored (first difference at "
                f"{next((i for i, (a, b) in enumerate(zip(got, data)) if a != b), min(len(got), len(data)))})")
    check_pool_invariants(pool, model)


def _handle_calls(pool: PoolBase, handle) -> list:
    """Every entry point that takes a handle, bound to ``handle``."""

    def read():
        return pool.read(handle)

    def free():
        return pool.free(handle)

    def write():
        return pool.write(handle, b"x")

    def read_into():
        return pool.read_into(handle, bytearray(PAGE_SIZE))

    def free_many():
        return pool.free_many([handle])

    return [read, write, read_into, free, free_many]


def _assert_handle_refused(pool: PoolBase, handle) -> None:
    """Every entry point that takes a handle raises InvalidHandleError (a KeyError) for it."""
    for call in _handle_calls(pool, handle):
        with pytest.raises(InvalidHandleError) as exc:
            call()
        assert isinstance(exc.value, KeyError)


class DictPool(PoolBase):
    """A minimal allocator over a dict, one page per object: for testing a
    front-end (zswap, cleancache) on a pool that is not zsmalloc."""

    name = "dictpool"

    def __init__(self, max_alloc_size: int = PAGE_SIZE) -> None:
        self.max_alloc_size = max_alloc_size
        self._objs: dict[int, bytearray] = {}
        self._next = 1

    def malloc(self, size: int) -> int:
        if size > self.max_alloc_size:
            raise ObjectTooLargeError(f"{size} > {self.max_alloc_size}")
        h = self._next
        self._next += 1
        self._objs[h] = bytearray(size)
        return h

    def free(self, handle: int) -> None:
        if self._objs.pop(handle, None) is None:
            raise InvalidHandleError(handle)

    def write(self, handle: int, data) -> None:
        self._objs[handle][:len(data)] = data

    def read(self, handle: int, length: int | None = None) -> bytes:
        o = self._objs[handle]
        return bytes(o if length is None else o[:length])

    def read_into(self, handle: int, buf, length: int | None = None) -> int:
        d = self.read(handle, length)
        memoryview(buf)[:len(d)] = d
        return len(d)

    @property
    def total_pages(self) -> int:
        return len(self._objs)


# ----------------------------------------------------------------------
# PoolTests


class PoolTests:
    """The PoolBase contract as pytest tests; subclass and define ``make_pool``.

    A subclass may also override ``sizes`` (default: :func:`interesting_sizes`
    up to the pool's ``max_alloc_size``).
    """

    def make_pool(self) -> PoolBase:
        """Return a fresh, empty pool (override)."""
        raise NotImplementedError

    def sizes(self, pool: PoolBase) -> list[int]:
        return interesting_sizes(pool.max_alloc_size)

    # -- fixtures ---------------------------------------------------------

    @pytest.fixture
    def pool(self):
        p = self.make_pool()
        try:
            yield p
        finally:
            p.close()

    @pytest.fixture
    def stored(self, pool):
        """The pool holding a few objects of every size; returns (pool, model)."""
        model: dict[int, bytes] = {}
        seed = 0
        for size in self.sizes(pool):
            for _ in range(3):
                seed += 1
                data = payload(seed, size)
                model[pool.store(data)] = data
        assert_pool_matches(pool, model)
        return pool, model

    @staticmethod
    def _unused_handles(model: dict[int, bytes]) -> list:
        top = max(model, default=0)
        return [0, -1, -(1 << 40), top + 1, top + 12345, (top + 1) << 20, 1 << 63, (1 << 64) + 1]

    # -- round trips --------------------------------------------------------

    def test_new_pool_is_empty(self, pool):
        assert pool.total_pages == 0
        assert pool.pages_compacted == 0
        if hasattr(pool, "objects"):
            assert pool.objects == 0
        assert pool.max_alloc_size >= 1
        check_pool_invariants(pool, {})

    def test_store_read_every_size(self, pool):
        model: dict[int, bytes] = {}
        seed = 1000
        for size in self.sizes(pool):
            for _ in range(_objects_per_size(size)):
                seed += 1
                data = payload(seed, size)
                h = pool.store(data)
                assert type(h) is int and h != 0
                assert h not in model, f"handle {h:#x} returned twice"
                model[h] = data
        assert pool.total_pages > 0
        assert_pool_matches(pool, model)

    def test_malloc_write_read(self, pool):
        model = {}
        for i, size in enumerate(self.sizes(pool)):
            for j in range(_objects_per_size(size)):
                h = pool.malloc(size)
                data = payload(i << 16 | j, size)
                pool.write(h, data)
                model[h] = data
        assert_pool_matches(pool, model)

    def test_read_returns_bytes_copy(self, stored):
        pool, model = stored
        h = next(iter(model))
        got = pool.read(h)
        assert type(got) is bytes
        pool.write(h, bytes(len(got)))
        assert got == model[h], "read() must return a copy, not a view of the pool"
        model[h] = bytes(len(got))
        assert_pool_matches(pool, model)

    def test_read_length_prefix(self, stored):
        pool, model = stored
        for h, data in model.items():
            n = len(data)
            assert pool.read(h, 0) == b""
            assert pool.read(h, n) == data
            assert pool.read(h, n // 2) == data[: n // 2]
            assert pool.read(h, n - 1) == data[: n - 1]

    def test_read_into(self, stored):
        pool, model = stored
        for h, data in model.items():
            n = len(data)
            buf = bytearray(n)
            assert pool.read_into(h, buf) == n
            assert buf == data
            big = bytearray(b"\xa5" * (PAGE_SIZE + 16))
            assert pool.read_into(h, big) == n
            assert big[:n] == data and big[n:] == b"\xa5" * (len(big) - n)
            half = array("B", bytes(n))
            assert pool.read_into(h, memoryview(half), n // 2) == n // 2
            assert half.tobytes()[: n // 2] == data[: n // 2]

    def test_write_accepts_buffers(self, pool):
        data = payload(7, 3000)
        h1 = pool.store(bytearray(data))
        h2 = pool.store(memoryview(data))
        h3 = pool.malloc(3000)
        pool.write(h3, memoryview(bytearray(data)))
        h4 = pool.malloc(3000)
        pool.write(h4, array("B", data))
        assert_pool_matches(pool, {h1: data, h2: data, h3: data, h4: data})

    def test_partial_write_keeps_the_tail(self, stored):
        pool, model = stored
        for h, data in list(model.items()):
            n = len(data)
            k = n // 3
            new = payload(h & 0xFFFF, k)
            pool.write(h, new)
            model[h] = new + data[k:]
            pool.write(h, b"")
        assert_pool_matches(pool, model)

    def test_overwrite_in_place(self, stored):
        pool, model = stored
        for round_ in range(3):
            for h, data in list(model.items()):
                new = payload(round_ << 24 | (h & 0xFFFFF), len(data))
                pool.write(h, new)
                model[h] = new
            assert_pool_matches(pool, model)

    def test_max_alloc_size(self, pool):
        m = pool.max_alloc_size
        data = payload(99, m)
        h = pool.store(data)
        h2 = pool.malloc(m)
        pool.write(h2, data[::-1])
        h3 = pool.store(b"\x00")
        assert_pool_matches(pool, {h: data, h2: data[::-1], h3: b"\x00"})

    def test_store_many_and_free_many(self, pool):
        sizes = self.sizes(pool)
        items = [payload(i, sizes[i % len(sizes)]) for i in range(500)]
        hs = pool.store_many(items)
        assert len(hs) == len(items) and len(set(hs)) == len(hs)
        model = dict(zip(hs, items))
        assert_pool_matches(pool, model)
        gone = hs[::3]
        pool.free_many(gone)
        for h in gone:
            del model[h]
            with pytest.raises(InvalidHandleError):
                pool.read(h)
        assert_pool_matches(pool, model)
        assert pool.store_many([]) == []
        pool.free_many([])
        pool.free_many(list(model))
        assert_pool_matches(pool, {})

    def test_free_everything_releases_all_pages(self, pool):
        model = {}
        for i, size in enumerate(self.sizes(pool)):
            for j in range(_objects_per_size(size)):
                data = payload(i << 16 | j, size)
                model[pool.store(data)] = data
        handles = list(model)
        random.Random(5).shuffle(handles)
        for n, h in enumerate(handles):
            pool.free(h)
            del model[h]
            if n % 97 == 0:
                assert_pool_matches(pool, model)
        assert pool.total_pages == 0
        check_pool_invariants(pool, {})

    def test_interleaved_churn(self, pool):
        rnd = random.Random(11)
        model: dict[int, bytes] = {}
        sizes = self.sizes(pool)
        for step in range(3000):
            if model and rnd.random() < 0.45:
                h = rnd.choice(list(model))
                pool.free(h)
                del model[h]
            else:
                data = payload(step, rnd.choice(sizes))
                model[pool.store(data)] = data
            if step % 500 == 0:
                assert_pool_matches(pool, model)
        assert_pool_matches(pool, model)

    def test_compact_keeps_objects(self, stored):
        pool, model = stored
        handles = list(model)
        random.Random(3).shuffle(handles)
        for h in handles[: len(handles) * 2 // 3]:
            pool.free(h)
            del model[h]
        before_pages, before_compacted = pool.total_pages, pool.pages_compacted
        freed = pool.compact()
        assert type(freed) is int and freed >= 0
        if not pool.supports_compaction:
            assert freed == 0
        assert pool.pages_compacted == before_compacted + freed
        assert pool.total_pages == before_pages - freed
        assert_pool_matches(pool, model)

    def test_context_manager(self):
        with self.make_pool() as pool:
            h = pool.store(b"ctx")
            assert pool.read(h) == b"ctx"

    # -- errors: sizes ---------------------------------------------------

    def test_size_zero(self, stored):
        pool, model = stored
        pages = pool.total_pages
        for call in (lambda: pool.malloc(0), lambda: pool.store(b""),
                     lambda: pool.store_many([b"a", b""])):
            with pytest.raises(InvalidSizeError) as exc:
                call()
            assert isinstance(exc.value, ValueError)
        with pytest.raises(InvalidSizeError):
            pool.malloc(-1)
        assert pool.total_pages == pages
        assert_pool_matches(pool, model)

    def test_size_too_large(self, stored):
        pool, model = stored
        m = pool.max_alloc_size
        pages = pool.total_pages
        for call in (lambda: pool.malloc(m + 1), lambda: pool.malloc(1 << 40),
                     lambda: pool.store(bytes(m + 1)),
                     lambda: pool.store_many([b"ok", bytes(m + 1)])):
            with pytest.raises(ObjectTooLargeError) as exc:
                call()
            assert isinstance(exc.value, ValueError)
        assert pool.total_pages == pages
        assert_pool_matches(pool, model)

    def test_size_not_an_int(self, stored):
        pool, model = stored
        for bad in (1.0, "8", None, b"8"):
            with pytest.raises(TypeError):
                pool.malloc(bad)
        assert_pool_matches(pool, model)

    def test_store_of_a_non_buffer_leaves_nothing_behind(self, stored):
        pool, model = stored
        pages = pool.total_pages
        for bad in ("text is not bytes", ["a", "list"], 12345, None):
            with pytest.raises(TypeError):
                pool.store(bad)
        assert pool.total_pages == pages
        assert_pool_matches(pool, model)

    def test_store_of_a_multibyte_buffer(self, stored):
        # A buffer whose len() counts items of more than one byte: the pool
        # must store its bytes or refuse it, and never leave a half-made object.
        pool, model = stored
        data = array("H", range(500))
        try:
            h = pool.store(data)
        except (TypeError, ValueError):
            pass
        else:
            assert pool.read(h) == data.tobytes()
            model[h] = data.tobytes()
        assert_pool_matches(pool, model)

    def test_write_too_large(self, stored):
        pool, model = stored
        for h, data in list(model.items())[::5]:
            with pytest.raises(WriteTooLargeError) as exc:
                pool.write(h, b"\xee" * (len(data) + 1))
            assert isinstance(exc.value, ValueError)
        assert_pool_matches(pool, model)

    def test_read_beyond_the_object(self, stored):
        pool, model = stored
        for h, data in list(model.items())[::5]:
            with pytest.raises(ValueError):
                pool.read(h, len(data) + 1)
            with pytest.raises(ValueError):
                pool.read(h, -1)
            with pytest.raises(ValueError):
                pool.read_into(h, bytearray(len(data) - 1))
        assert_pool_matches(pool, model)

    # -- errors: handles -------------------------------------------------

    def test_unknown_handles(self, stored):
        pool, model = stored
        for bad in self._unused_handles(model):
            assert bad not in model
            _assert_handle_refused(pool, bad)
        assert_pool_matches(pool, model)

    def test_non_int_handles(self, stored):
        pool, model = stored
        h = next(iter(model))
        for bad in (float(h), str(h), None, (h,), b"\x01"):
            _assert_handle_refused(pool, bad)
        assert_pool_matches(pool, model)

    def test_freed_handle(self, stored):
        pool, model = stored
        victims = list(model)[::4]
        for h in victims:
            pool.free(h)
            del model[h]
        for h in victims:
            _assert_handle_refused(pool, h)
        assert_pool_matches(pool, model)

    def test_double_free(self, stored):
        pool, model = stored
        h = next(iter(model))
        pool.free(h)
        del model[h]
        with pytest.raises(DoubleFreeError) as exc:
            pool.free(h)
        assert isinstance(exc.value, InvalidHandleError) and isinstance(exc.value, KeyError)
        with pytest.raises(InvalidHandleError):
            pool.free_many([h])
        assert_pool_matches(pool, model)

    def test_never_issued_handle_is_not_a_double_free(self, stored):
        # DoubleFreeError says "this handle was freed already"; for a handle
        # the pool never returned that diagnosis is wrong.
        pool, model = stored
        for bad in self._unused_handles(model):
            with pytest.raises(InvalidHandleError) as exc:
                pool.free(bad)
            assert not isinstance(exc.value, DoubleFreeError), (hex(bad), str(exc.value))
        assert_pool_matches(pool, model)

    def test_stale_handle_after_reuse(self, stored):
        # A freed handle must not come back as a new object's handle at once:
        # a holder of the old one would read (or free) someone else's data.
        pool, model = stored
        old = list(model)[:5]
        sizes = [len(model[h]) for h in old]
        pool.free_many(old)
        for h in old:
            del model[h]
        for i, size in enumerate(sizes * 2):
            data = payload(777 + i, size)
            h = pool.store(data)
            assert h not in old, f"freed handle {h:#x} handed out again"
            model[h] = data
        for h in old:
            with pytest.raises(InvalidHandleError):
                pool.read(h)
            with pytest.raises(InvalidHandleError):
                pool.free(h)
        assert_pool_matches(pool, model)

    def test_free_many_is_all_or_nothing(self, stored):
        pool, model = stored
        good = list(model)[:10]
        for bad_batch, err in ((good + [0], InvalidHandleError),
                               (good[:3] + [good[1]], DoubleFreeError),
                               ([good[0], "x"], InvalidHandleError)):
            with pytest.raises(err):
                pool.free_many(bad_batch)
            assert_pool_matches(pool, model)
        pool.free_many(good)
        for h in good:
            del model[h]
        assert_pool_matches(pool, model)

    def test_every_error_in_sequence(self, stored):
        # All the refusals back to back, then one full check: no refused call
        # may have left a trace that only shows up later.
        pool, model = stored
        h = next(iter(model))
        n = len(model[h])
        freed = list(model)[-1]
        pool.free(freed)
        del model[freed]
        calls = [
            (lambda: pool.malloc(0), InvalidSizeError),
            (lambda: pool.malloc(pool.max_alloc_size + 1), ObjectTooLargeError),
            (lambda: pool.write(h, bytes(n + 1)), WriteTooLargeError),
            (lambda: pool.read(freed), InvalidHandleError),
            (lambda: pool.free(freed), InvalidHandleError),
            (lambda: pool.write(freed, b"x"), InvalidHandleError),
            (lambda: pool.free(0), InvalidHandleError),
            (lambda: pool.free_many([h, freed]), InvalidHandleError),
            (lambda: pool.store_many([b"x", b""]), InvalidSizeError),
        ]
        for _ in range(3):
            for call, err in calls:
                with pytest.raises(err):
                    call()
        assert_pool_matches(pool, model)
        data = payload(4242, n)
        model[pool.store(data)] = data
        assert_pool_matches(pool, model)


# ----------------------------------------------------------------------
# the state machine


def _pick(data, model: dict[int, bytes], label: str = "handle") -> int:
    return data.draw(st.sampled_from(sorted(model)), label=label)


class PoolStateMachine(RuleBasedStateMachine):
    """Random operations on a pool and on a dict model, checked after each step.

    Subclass with ``make_pool`` set (a callable returning a fresh pool), or
    let :func:`make_pool_state_machine` do it.  Rules that need a capability
    (``compact`` with ``supports_compaction``, ``migrate_page``) only run on
    pools that have it.
    """

    make_pool: Callable[[], PoolBase] = None  # type: ignore[assignment]
    #: Run the ``migrate_page`` rule on pools that have the method.
    migrate = True
    #: Optional ``pages(pool) -> iterable of pfns``: the pages the pool holds
    #: now, so that migration picks real pages instead of probing.
    pages: Callable[[PoolBase], list[int]] | None = None
    #: Most objects the model keeps; past it, rules that add objects stop.
    max_objects = 300

    def __init__(self) -> None:
        super().__init__()
        self.pool = type(self).make_pool()
        self.model: dict[int, bytes] = {}
        self.freed: list[int] = []
        self.seed = 0
        m = self.pool.max_alloc_size
        huge = getattr(self.pool, "huge_class_size", m)
        # Mostly a few sizes, so objects share classes and zspages fill and
        # empty (compaction has work); sometimes any size at all.
        dense = sorted({s for s in (8, 200, 1000, 2040, 3000, 3600, huge - 1, huge, m) if 1 <= s <= m})
        self.sizes = st.one_of(st.sampled_from(dense), st.integers(1, m), st.just(1))

    def teardown(self) -> None:
        self.pool.close()

    # -- helpers ---------------------------------------------------------

    def _content(self, size: int) -> bytes:
        self.seed += 1
        return payload(self.seed, size)

    def _room(self) -> bool:
        return len(self.model) < self.max_objects

    # -- rules: adding objects -------------------------------------------

    @initialize()
    def start(self) -> None:
        assert self.pool.total_pages == 0

    @precondition(lambda self: self._room())
    @rule(data=st.data())
    def malloc_write(self, data) -> None:
        size = data.draw(self.sizes, label="size")
        h = self.pool.malloc(size)
        content = self._content(size)
        self.pool.write(h, content)
        assert h not in self.model
        self.model[h] = content

    @precondition(lambda self: self._room())
    @rule(data=st.data())
    def store(self, data) -> None:
        size = data.draw(self.sizes, label="size")
        content = self._content(size)
        h = self.pool.store(content)
        assert h not in self.model
        self.model[h] = content

    @precondition(lambda self: self._room())
    @rule(data=st.data())
    def store_many(self, data) -> None:
        sizes = data.draw(st.lists(self.sizes, min_size=1, max_size=12), label="sizes")
        items = [self._content(s) for s in sizes]
        hs = self.pool.store_many(items)
        assert len(hs) == len(items)
        for h, content in zip(hs, items):
            assert h not in self.model
            self.model[h] = content
        assert len(set(hs)) == len(hs)

    @precondition(lambda self: self._room())
    @rule(data=st.data())
    def store_bulk_free_some(self, data) -> None:
        # Many objects of one size at once, then a share of them freed:
        # enough pages for the allocator's caches and free lists to recycle
        # frames that still hold old bytes.
        size = data.draw(self.sizes, label="size")
        count = data.draw(st.integers(16, 160), label="count")
        keep = data.draw(st.integers(0, 100), label="percent kept")
        items = [self._content(size) for _ in range(count)]
        hs = self.pool.store_many(items)
        gone = hs[keep * count // 100:]
        self.pool.free_many(gone)
        self.freed.extend(gone)
        for h, content in zip(hs, items):
            if h not in gone:
                self.model[h] = content

    # -- rules: using objects ----------------------------------------------

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def read(self, data) -> None:
        h = _pick(data, self.model)
        want = self.model[h]
        n = data.draw(st.integers(0, len(want)), label="length")
        assert self.pool.read(h) == want
        assert self.pool.read(h, n) == want[:n]
        buf = bytearray(len(want) + 3)
        assert self.pool.read_into(h, buf) == len(want)
        assert buf[: len(want)] == want

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def overwrite(self, data) -> None:
        h = _pick(data, self.model)
        old = self.model[h]
        n = data.draw(st.one_of(st.just(len(old)), st.integers(0, len(old))), label="length")
        new = self._content(n)
        self.pool.write(h, new)
        self.model[h] = new + old[n:]

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free(self, data) -> None:
        h = _pick(data, self.model)
        self.pool.free(h)
        del self.model[h]
        self.freed.append(h)

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def free_many(self, data) -> None:
        hs = data.draw(st.lists(st.sampled_from(sorted(self.model)), min_size=1,
                                max_size=max(1, len(self.model)), unique=True), label="handles")
        self.pool.free_many(hs)
        for h in hs:
            del self.model[h]
        self.freed.extend(hs)

    # -- rules: operations that must fail and change nothing -------------------

    @precondition(lambda self: self.freed)
    @rule(data=st.data())
    def use_freed_handle(self, data) -> None:
        h = data.draw(st.sampled_from(self.freed), label="freed handle")
        if h in self.model:  # the pool handed the same value out again
            raise AssertionError(f"freed handle {h:#x} was reused while a holder may keep it")
        op = data.draw(st.sampled_from(["read", "free", "write", "read_into", "free_many"]), label="op")
        with pytest.raises(InvalidHandleError):
            if op == "read":
                self.pool.read(h)
            elif op == "free":
                self.pool.free(h)
            elif op == "write":
                self.pool.write(h, b"z")
            elif op == "read_into":
                self.pool.read_into(h, bytearray(PAGE_SIZE))
            else:
                live = sorted(self.model)[:2]
                self.pool.free_many(live + [h])

    @precondition(lambda self: self.model)
    @rule(data=st.data())
    def bad_size_or_write(self, data) -> None:
        h = _pick(data, self.model)
        n = len(self.model[h])
        op = data.draw(st.sampled_from(["zero", "too_large", "write_too_large", "store_many_bad"]), label="op")
        if op == "zero":
            with pytest.raises(InvalidSizeError):
                self.pool.malloc(0)
        elif op == "too_large":
            with pytest.raises(ObjectTooLargeError):
                self.pool.malloc(self.pool.max_alloc_size + 1)
        elif op == "write_too_large":
            with pytest.raises(WriteTooLargeError):
                self.pool.write(h, b"\xff" * (n + 1))
        else:
            with pytest.raises(ObjectTooLargeError):
                self.pool.store_many([b"fine", bytes(self.pool.max_alloc_size + 1)])

    # -- rules: moving objects -------------------------------------------

    @precondition(lambda self: self.pool.supports_compaction)
    @rule()
    def compact(self) -> None:
        before = self.pool.total_pages
        compacted = self.pool.pages_compacted
        freed = self.pool.compact()
        note(f"compact() freed {freed} of {before} pages")
        assert freed >= 0
        assert self.pool.pages_compacted == compacted + freed
        assert self.pool.total_pages == before - freed
        count = getattr(self.pool, "shrinker_count", None)
        if count is not None:
            # Nothing left that a perfect packing of any class would free.
            assert count() == 0

    @precondition(lambda self: self.migrate and hasattr(self.pool, "migrate_page")
                  and self.pool.total_pages)
    @rule(data=st.data())
    def migrate_page(self, data) -> None:
        # With a ``pages`` hook the machine picks one of the pool's pages;
        # without one it probes pfns, and a pfn the pool does not own must be
        # refused with ValueError, which must change nothing either.
        pages = type(self).pages
        if pages is not None:
            pfn = data.draw(st.sampled_from(sorted(pages(self.pool))), label="pfn")
        else:
            pfn = data.draw(st.integers(0, 2 * self.pool.total_pages + 8), label="pfn")
        before = self.pool.total_pages
        try:
            new = self.pool.migrate_page(pfn)
        except ValueError:
            assert pages is None, f"migrate_page refused pfn {pfn}, a page of the pool"
            note(f"pfn {pfn} is not a page of the pool")
            return
        note(f"migrated pfn {pfn} -> {new}")
        assert new != pfn
        assert self.pool.total_pages == before
        if pages is not None:
            now = set(pages(self.pool))
            assert new in now and pfn not in now
        with pytest.raises(ValueError):
            self.pool.migrate_page(pfn)  # the old frame left the pool

    # -- the check after every step --------------------------------------

    @invariant()
    def matches_model(self) -> None:
        assert_pool_matches(self.pool, self.model)


def make_pool_state_machine(make_pool: Callable[[], PoolBase], *,
                            name: str = "PoolStateMachine", settings=None,
                            migrate: bool = True,
                            pages: Callable[[PoolBase], list[int]] | None = None) -> type:
    """A ``unittest.TestCase`` class running :class:`PoolStateMachine` on ``make_pool()`` pools.

    Assign the result to a ``Test*`` name in a test module; pass Hypothesis
    ``settings`` here or set ``.settings`` on the result.  ``migrate=False``
    leaves out the page-migration rule; ``pages(pool)``, if given, lists the
    pfns the pool holds so that migration targets them.
    """
    machine = type(name, (PoolStateMachine,), {
        "make_pool": staticmethod(make_pool), "migrate": migrate,
        "pages": staticmethod(pages) if pages is not None else None})
    case = machine.TestCase
    if settings is not None:
        case.settings = settings
    return case
