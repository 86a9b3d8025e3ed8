"""zswap: a compressed write-back cache in front of a swap store (``mm/zswap.c``, Linux 6.18).

This module owns zswap; the base it shares with cleancache
(:class:`~zmem._frontend.CompressedCache`: a pool, a codec, per-entry typed
arrays, the LRU with second chance, the accounting, and the one overridable
victim-picking method ``_pick_victims``) lives in :mod:`zmem._frontend`.

Theory of operation
-------------------
zswap is keyed by swap offset.  Each offset is in one of three states
(:class:`EntryState`); every transition is in :data:`TRANSITIONS`:

* ``EMPTY``: zswap and the store hold nothing for it;
* ``POOL``: a compressed copy (or the raw page, length 4096, when it did not
  compress) is in the pool, on the LRU;
* ``STORE``: the page was written back (or written through after a reject)
  and lives only in the backing :class:`~zmem._swapstore.SwapStore`.

``POOL`` and ``STORE`` never coexist: a store at an offset drops any older
copy in both places (the kernel erases stale entries so that writeback can
never overwrite newer data).  Writeback of an entry writes the page to the
store *before* the entry leaves the table and before its object is freed,
so a page handed to ``store`` is at every moment in the pool or in the
store, never neither.

``load`` is one-device: it returns the page from the pool, or reads it back
from the store for a written-back offset (the kernel's ``zswap_load`` says
"not found" and the swap core reads the disk; :meth:`Zswap.load_cached` is
that kernel view).  With ``exclusive_loads`` (default, as the kernel when the
folio is in the swap cache) a load hands the page over: the offset becomes
``EMPTY``.

Limit and reclaim (6.18): ``max_pages = memory_pages * max_pool_percent //
100`` and ``accept_pages = max_pages * accept_threshold_percent // 100``.  A
store that finds the pool at ``max_pages`` or more counts ``pool_limit_hit``
and sets "reached full"; while full, every store is rejected and queues the
shrink worker, which writes back LRU-coldest entries one at a time until the
pool is at ``accept_pages`` or less, giving up after
``MAX_RECLAIM_RETRIES`` (16) walk steps that wrote nothing (a rotation of a
referenced entry is such a step, as in the kernel).  New entries are
appended to the LRU tail with the referenced bit set; the walk starts at the
head: a referenced entry has its bit cleared and is rotated to the tail
(second chance), an unreferenced one is rotated and written back.  The
check precedes the allocation, so an accepted store may take the pool past
``max_pages`` by one zspage, as in the kernel.  The worker runs inline in
the rejected store (``shrink_worker="inline"``, deterministic) or on a
thread (``"thread"``, the kernel's workqueue; :meth:`Zswap.drain` waits for
it).  :meth:`Zswap.shrink` is the memory-pressure shrinker (gated by
``shrinker_enabled``), :meth:`Zswap.writeback` the same walk ungated.

Named policies (zmem's additions, the kernel behaviour is the default):

* ``limit_policy="compact_then_writeback"``: on hitting the limit, compact
  the pool first; only if it is still at the limit go "full"; the worker
  compacts, writes back as many entries as the current density says are
  needed to reach ``accept_pages``, compacts again, and so on.
* ``reclaim="zspage"``: the pre-6.5 allocator-level reclaim
  (``zs_reclaim_page``): a zspage LRU in allocation order (a zspage moves
  to the MRU end whenever a store allocates into it); reclaim takes the
  least recently allocated-into zspage and writes back *every* object in it
  (membership is read from the pool at that moment, since compaction may have
  moved objects), so its pages come free.  A handle -> entry map (an
  :class:`IdHash`) finds the entries of the handles the pool reports; the
  old kernels kept a ``zswap_header`` in each object for that instead.

Per-entry state, in typed arrays indexed by entry id (zswap: the offset):

  ``_handle`` q  pool handle (valid when ``_F_POOL``)
  ``_clen``   H  stored length; 4096 = stored as-is (incompressible)
  ``_flags``  B  ``_F_POOL`` | ``_F_REF`` (referenced) | ``_F_STORE``
  ``_prev``,``_next`` i  LRU links (-1 = none); head = coldest

That is 19 bytes per offset (the kernel's ``zswap_entry`` is ~56 bytes plus
an xarray slot).  ``reclaim="zspage"`` adds the handle map (4 bytes per
table slot, load factor 1/4..1/2) and 13 bytes per zspage id.

Locking: one front-end lock guards the arrays, the LRU, the accounting and
the backing-store I/O; pool calls made under it take the pool lock inside
(order: front-end lock -> pool lock).  Compression, pool allocation of a new
object, decompression after an exclusive load and frees of unlinked objects
run outside it.  Compaction (``pool.compact()``, any thread, any time) takes
only the pool lock; handles stay valid across moves, so nothing here is
walked or fixed up.  Event counters are updated without a lock where the
kernel's are (approximate under concurrency); ``stored_pages``,
``stored_incompressible_pages`` and the sizes are exact.
"""

from __future__ import annotations

import enum
import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, fields

from ._classes import PAGE_SIZE
from ._compress import Codec
from ._errors import DecompressionError, ObjectTooLargeError, OutOfRangeError, ZmemError
from ._frontend import (
    _F_POOL,
    _F_REF,
    _F_STORE,
    LIMIT_POLICIES,
    MAX_RECLAIM_RETRIES,
    RECLAIM_POLICIES,
    ZSPAGE_RECLAIM_RETRIES,
    CompressedCache,
    IdHash,
)
from ._pool import PoolBase
from ._swapstore import MAX_OFFSET, FileSwapStore, SwapStore

__all__ = [
    "Zswap",
    "ZswapStats",
    "EntryState",
    "TRANSITIONS",
    "CompressedCache",
    "IdHash",
    "MAX_RECLAIM_RETRIES",
    "LIMIT_POLICIES",
    "RECLAIM_POLICIES",
    "DEBUGFS_FIELDS",
]

class EntryState(enum.IntEnum):
    """Where a swap offset's page is."""

    EMPTY = 0
    POOL = 1
    STORE = 2


#: (state, event) -> next state, for every event zswap handles.  Events:
#: ``store`` (accepted), ``reject`` (store refused: stale copies dropped),
#: ``write_through`` (``swap_out`` after a reject), ``writeback``,
#: ``load`` (exclusive), ``load_keep`` (non-exclusive), ``invalidate``.
TRANSITIONS: dict[tuple[EntryState, str], EntryState] = {}
for _s in EntryState:
    TRANSITIONS[(_s, "store")] = EntryState.POOL
    TRANSITIONS[(_s, "reject")] = EntryState.EMPTY
    TRANSITIONS[(_s, "write_through")] = EntryState.STORE
    TRANSITIONS[(_s, "invalidate")] = EntryState.EMPTY
    TRANSITIONS[(_s, "load")] = EntryState.EMPTY
    TRANSITIONS[(_s, "load_keep")] = _s
TRANSITIONS[(EntryState.POOL, "writeback")] = EntryState.STORE
del _s


#: The files of ``/sys/kernel/debug/zswap/`` in 6.18, in the kernel's creation order.
DEBUGFS_FIELDS = (
    "pool_limit_hit", "reject_reclaim_fail", "reject_alloc_fail", "reject_kmemcache_fail",
    "reject_compress_fail", "reject_compress_poor", "decompress_fail", "written_back_pages",
    "pool_total_size", "stored_pages", "stored_incompressible_pages",
)


@dataclass(frozen=True, slots=True)
class ZswapStats:
    """zswap's debugfs counters (kernel names) and zmem's extras."""

    pool_limit_hit: int
    reject_reclaim_fail: int
    reject_alloc_fail: int
    reject_kmemcache_fail: int
    reject_compress_fail: int
    reject_compress_poor: int
    decompress_fail: int
    written_back_pages: int
    pool_total_size: int
    """Bytes: pool pages x 4096 (fragmentation included, entry metadata not)."""
    stored_pages: int
    stored_incompressible_pages: int
    # -- /proc/vmstat and /proc/meminfo names
    zswpout: int
    """Pages stored (successful ``store`` calls)."""
    zswpin: int
    """Pages loaded from the pool."""
    zswpwb: int
    """Pages written back (= written_back_pages)."""
    compressed_bytes: int
    """Sum of stored lengths (what ``Zswap:`` would be with no fragmentation)."""
    # -- zmem's extras
    disk_swapins: int
    """Loads served by the backing store."""
    limit_compactions: int
    """Compactions run by ``limit_policy="compact_then_writeback"``."""
    limit_compacted_pages: int
    """Pages those compactions freed."""
    reclaim_pages_freed: int
    """Pool pages that came free when written-back objects were freed."""
    shrink_worker_ns: int
    """Time spent in the global shrink worker (compactions it ran included)."""
    limit_compact_ns: int
    """Time spent in the policy's compactions (in stores and in the worker)."""

    @property
    def hit_rate(self) -> float:
        """Loads served by the pool / all loads that found the page (pool or store)."""
        n = self.zswpin + self.disk_swapins
        return self.zswpin / n if n else 0.0

    @property
    def compression_ratio(self) -> float:
        """Uncompressed bytes stored per pool byte (0 when the pool is empty)."""
        return self.stored_pages * PAGE_SIZE / self.pool_total_size if self.pool_total_size else 0.0

    def debugfs(self) -> dict[str, int]:
        """Exactly the kernel's debugfs files, name -> value."""
        return {name: getattr(self, name) for name in DEBUGFS_FIELDS}

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Zswap(CompressedCache):
    """A compressed swap cache over a backing :class:`~zmem._swapstore.SwapStore`.

    >>> zs = Zswap(64 << 20)
    >>> zs.store(7, b"zswap!" * 682 + b"....")
    True
    >>> zs.load(7)[:6], zs.load(7)          # exclusive: the first load takes it
    (b'zswap!', None)
    """

    def __init__(self, memory_bytes: int | str, *, compressor: str | Codec = "lzo",
                 max_pool_percent: int = 20, accept_threshold_percent: int = 90,
                 shrinker_enabled: bool = False, enabled: bool = True,
                 exclusive_loads: bool = True, writeback_enabled: bool = True,
                 limit_policy: str = "writeback", reclaim: str = "object_lru",
                 pool: PoolBase | None = None, backing_store: SwapStore | None = None,
                 shrink_worker: str = "inline",
                 timer: Callable[[], int] = time.perf_counter_ns) -> None:
        """Create a zswap over a memory budget of ``memory_bytes`` (the kernel's totalram).

        ``compressor``, ``max_pool_percent``, ``accept_threshold_percent``,
        ``shrinker_enabled`` and ``enabled`` are the module parameters (the
        defaults are the kernel's, ``shrinker_enabled`` as on the 6.18 target:
        off).  ``writeback_enabled`` is the cgroup's ``memory.zswap.writeback``.
        ``pool`` defaults to a new zsmalloc :class:`~zmem.Pool`,
        ``backing_store`` to an anonymous :class:`FileSwapStore`.
        ``shrink_worker`` is where the global shrink worker runs when a store
        is rejected at the limit: ``"inline"`` (in the rejected store's call,
        deterministic) or ``"thread"`` (a background thread, as the kernel's
        workqueue).  ``timer`` (nanoseconds) times the worker and the
        policy's compactions, so a driver can tell a store's own cost from the
        reclaim it triggered (``shrink_worker_ns``, ``limit_compact_ns``).
        """
        from ._zram import parse_size

        mem = parse_size(memory_bytes)
        if mem < PAGE_SIZE:
            raise ValueError(f"memory_bytes must be at least one page, got {memory_bytes!r}")
        if limit_policy not in LIMIT_POLICIES:
            raise ValueError(f"limit_policy must be one of {LIMIT_POLICIES}, got {limit_policy!r}")
        if shrink_worker not in ("inline", "thread"):
            raise ValueError(f"shrink_worker must be 'inline' or 'thread', got {shrink_worker!r}")
        for name, v in (("max_pool_percent", max_pool_percent),
                        ("accept_threshold_percent", accept_threshold_percent)):
            if not isinstance(v, int) or not 0 <= v <= 100:
                raise ValueError(f"{name} must be 0..100, got {v!r}")
        super().__init__(pool, compressor, reclaim)
        self._timer = timer
        self.memory_pages = mem // PAGE_SIZE
        self.max_pool_percent = max_pool_percent
        self.accept_threshold_percent = accept_threshold_percent
        self.shrinker_enabled = bool(shrinker_enabled)
        self.enabled = bool(enabled)
        self.exclusive_loads = bool(exclusive_loads)
        self.writeback_enabled = bool(writeback_enabled)
        self.limit_policy = limit_policy
        self._own_store = backing_store is None
        self.backing_store: SwapStore = FileSwapStore() if backing_store is None else backing_store
        self._max_offset = (self.backing_store.nr_slots - 1 if self.backing_store.nr_slots
                            else MAX_OFFSET)
        self._reached_full = False
        # debugfs counters
        self._pool_limit_hit = 0
        self._reject_reclaim_fail = 0
        self._reject_alloc_fail = 0
        self._reject_compress_fail = 0
        self._reject_compress_poor = 0
        self._written_back = 0
        # vmstat and extras
        self._zswpout = 0
        self._zswpin = 0
        self._disk_swapins = 0
        self._nr_disk_swapins = 0  # consumed by shrinker_count, as the kernel's
        self._limit_compactions = 0
        self._limit_compacted_pages = 0
        self._limit_compact_ns = 0
        self._shrink_worker_ns = 0
        # zspage LRU for reclaim="zspage", indexed by zspage id; head = least
        # recently allocated-into.  _zhuge[z] = the entry owning huge zspage z.
        self._zprev = array("i")
        self._znext = array("i")
        self._zon = array("B")
        self._zhuge = array("i")
        self._zhead = -1
        self._ztail = -1
        self._worker_lock = threading.Lock()  # one shrink worker at a time
        self._wq_event: threading.Event | None = None
        self._wq_thread: threading.Thread | None = None
        self._wq_cond = threading.Condition()
        self._wq_busy = False
        self._wq_stop = False
        if shrink_worker == "thread":
            self._wq_event = threading.Event()
            self._wq_thread = threading.Thread(target=self._wq_loop, name="zswap-shrink", daemon=True)
            self._wq_thread.start()

    # -- parameters ----------------------------------------------------------

    @property
    def max_pool_percent(self) -> int:
        return self._max_pool_percent

    @max_pool_percent.setter
    def max_pool_percent(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= 100:
            raise ValueError(f"max_pool_percent must be 0..100, got {value!r}")
        self._max_pool_percent = value
        self._update_limits()

    @property
    def accept_threshold_percent(self) -> int:
        return self._accept_threshold_percent

    @accept_threshold_percent.setter
    def accept_threshold_percent(self, value: int) -> None:
        if not isinstance(value, int) or not 0 <= value <= 100:
            raise ValueError(f"accept_threshold_percent must be 0..100, got {value!r}")
        self._accept_threshold_percent = value
        self._update_limits()

    def _update_limits(self) -> None:
        # cached: the store path reads them once per page
        pct = getattr(self, "_max_pool_percent", 0)
        self._max_pages = self.memory_pages * pct // 100
        self._accept_pages = self._max_pages * getattr(self, "_accept_threshold_percent", 0) // 100

    @property
    def max_pages(self) -> int:
        """``zswap_max_pages()``: the pool ceiling in pages."""
        return self._max_pages

    @property
    def accept_pages(self) -> int:
        """``zswap_accept_thr_pages()``: the pool must drop to this to accept again."""
        return self._accept_pages

    @property
    def compressor(self) -> str:
        return self.codec.name

    @property
    def reached_full(self) -> bool:
        """``zswap_pool_reached_full``: stores are refused until the pool drops to ``accept_pages``."""
        return self._reached_full

    # -- limit -------------------------------------------------------------

    def _check_limits(self) -> bool:
        """``zswap_check_limits``: True when the store must be rejected."""
        cur = self.pool.total_pages
        max_pages = self._max_pages
        if cur >= max_pages:
            self._pool_limit_hit += 1
            if self.limit_policy == "compact_then_writeback" and not self._reached_full:
                self._compact_for_limit()
                if self.pool.total_pages < max_pages:
                    return False
            self._reached_full = True
        elif self._reached_full and cur <= self._accept_pages:
            self._reached_full = False
        return self._reached_full

    def _compact_for_limit(self) -> int:
        t0 = self._timer()
        freed = self.pool.compact()
        self._limit_compact_ns += self._timer() - t0
        self._limit_compactions += 1
        self._limit_compacted_pages += freed
        return freed

    # -- the swap hooks ----------------------------------------------------

    def _check_offset(self, offset: int) -> None:
        if type(offset) is not int:
            raise TypeError(f"offset must be an int, not {type(offset).__name__}")
        if not 0 <= offset <= self._max_offset:
            raise OutOfRangeError(f"swap offset {offset} is outside 0..{self._max_offset}")

    def store(self, offset: int, page) -> bool:
        """``zswap_store``: keep ``page`` for ``offset``; False if rejected.

        A rejected store leaves the offset EMPTY (older copies in the pool or
        the store are dropped); the caller then owns the page and writes it
        to swap itself (or calls :meth:`swap_out`, which does both).
        """
        if type(offset) is not int or not 0 <= offset <= self._max_offset:
            self._check_offset(offset)
        if len(page) != PAGE_SIZE:
            raise ValueError(f"zswap stores {PAGE_SIZE}-byte pages, got {len(page)} bytes")
        handle = None
        n = 0
        pool = self.pool
        if self.enabled and not (
                (pool.total_pages >= self._max_pages or self._reached_full) and self._check_limits()):
            data, n, why = self._compress(page)
            if why is not None:
                # 6.18: a page that does not compress is stored as-is where
                # writeback is allowed (keeps LRU order; writeback frees it
                # later), else rejected.
                if self.writeback_enabled:
                    data, n = page, PAGE_SIZE
                elif why == "fail":
                    self._reject_compress_fail += 1
                else:
                    self._reject_compress_poor += 1
            if data is not None:
                try:
                    handle = pool.store(data)
                except ObjectTooLargeError:  # zs_malloc -ENOSPC
                    self._reject_compress_poor += 1
                except MemoryError:
                    self._reject_alloc_fail += 1
        old = None
        with self._lock:
            if offset >= self._cap:
                self._grow(offset + 1)
            f = self._flags[offset]
            if f & _F_POOL:
                old = self._uninstall(offset)
            if f & _F_STORE:
                self._drop_store_copy(offset)
            if handle is not None:
                self._install(offset, handle, n)
                if self._revmap is not None:
                    self._zspage_touch(offset, handle, n)
                self._zswpout += 1
        if old is not None:
            pool.free(old)
        if handle is None and self._reached_full:
            self._queue_shrink()
        return handle is not None

    def swap_out(self, offset: int, page) -> bool:
        """Swap a page out through zswap: store it, or write it to the backing store if rejected.

        Returns True if zswap kept it, False if it went to the store.  Either
        way :meth:`load` returns it afterwards: zswap and its store act as
        one device.  If the store's write fails, the error propagates and the
        offset is EMPTY (the caller still holds the page).
        """
        if self.store(offset, page):
            return True
        old = None
        with self._lock:
            if offset >= self._cap:
                self._grow(offset + 1)
            if self._flags[offset] & _F_POOL:  # a racing store: the later write wins
                old = self._uninstall(offset)
            self.backing_store.write_page(offset, page)
            self._flags[offset] |= _F_STORE
        if old is not None:
            self.pool.free(old)
        return False

    def load(self, offset: int) -> bytes | None:
        """The page of ``offset`` from the pool or, if written back, from the store; None if EMPTY.

        With ``exclusive_loads`` the offset is EMPTY afterwards; otherwise
        the entry stays and is marked referenced (a load is an access; the
        kernel's non-exclusive path does not set the bit, zmem's cache does).
        """
        return self._load(offset, True)

    def load_cached(self, offset: int) -> bytes | None:
        """The kernel's ``zswap_load``: the page if zswap holds it, else None (the store is not read)."""
        return self._load(offset, False)

    def _load(self, offset: int, from_store: bool) -> bytes | None:
        if type(offset) is not int or not 0 <= offset <= self._max_offset:
            self._check_offset(offset)
        exclusive = self.exclusive_loads
        raw = None
        with self._lock:
            if offset >= self._cap:
                return None
            f = self._flags[offset]
            if f & _F_POOL:
                h = self._handle[offset]
                n = self._clen[offset]
                if exclusive:
                    self._uninstall(offset)  # ours now: read and free it unlocked
                else:
                    raw = self.pool.read(h, n)
                    self._flags[offset] = f | _F_REF
            elif f & _F_STORE and from_store:
                page = self.backing_store.read_page(offset)
                if exclusive:
                    self._drop_store_copy(offset)
                self._disk_swapins += 1
                self._nr_disk_swapins += 1
                return page
            else:
                return None
        if raw is None:  # exclusive: the entry is ours, its object goes with the read
            raw = self.pool.take(h)
        try:
            page = self._decompress(raw, n)
        except DecompressionError:
            self._decompress_fail += 1
            if exclusive:
                self._reinstate_raw(offset, raw, n)
            raise
        self._zswpin += 1
        return page

    def _reinstate_raw(self, offset: int, raw: bytes, n: int) -> None:
        """Put back an entry an exclusive load took but could not decompress (the
        kernel keeps it): its bytes go back into the pool under a new handle."""
        try:
            h = self.pool.store(raw)
        except ZmemError:
            return  # no room: the page is lost either way, and counted in decompress_fail
        with self._lock:
            if not self._flags[offset] & (_F_POOL | _F_STORE):
                self._install(offset, h, n)
                if self._revmap is not None:
                    self._zspage_touch(offset, h, n)
                return
        self.pool.free(h)  # a newer page took the offset meanwhile

    def invalidate(self, offset: int) -> bool:
        """``zswap_invalidate`` (swap slot freed): drop the pool entry and the store's copy.

        Returns whether the offset held anything.
        """
        self._check_offset(offset)
        h = None
        with self._lock:
            if offset >= self._cap:
                return False
            f = self._flags[offset]
            if f & _F_POOL:
                h = self._uninstall(offset)
            if f & _F_STORE:
                self._drop_store_copy(offset)
        if h is not None:
            self.pool.free(h)
        return bool(f & (_F_POOL | _F_STORE))

    def state(self, offset: int) -> EntryState:
        """Where ``offset``'s page is now."""
        with self._lock:
            if offset >= self._cap:
                return EntryState.EMPTY
            f = self._flags[offset]
        if f & _F_POOL:
            return EntryState.POOL
        if f & _F_STORE:
            return EntryState.STORE
        return EntryState.EMPTY

    def is_referenced(self, offset: int) -> bool:
        """The entry's referenced bit (False when not in the pool)."""
        with self._lock:
            return offset < self._cap and self._flags[offset] & (_F_POOL | _F_REF) == _F_POOL | _F_REF

    def lru_order(self) -> list[int]:
        """Offsets on the LRU, coldest first (for tests and tools; O(n))."""
        with self._lock:
            out = []
            e = self._head
            while e >= 0:
                out.append(e)
                e = self._next[e]
            return out

    def _drop_store_copy(self, offset: int) -> None:
        self.backing_store.discard(offset)
        self._flags[offset] &= ~_F_STORE

    # -- writeback ---------------------------------------------------------

    def _evict_locked(self, ids: list[int]) -> tuple[int, list[int]]:
        """``zswap_writeback_entry`` for each id: page to the store first, then out of the table."""
        pool = self.pool
        store = self.backing_store
        flags = self._flags
        written = 0
        handles = []
        for e in ids:
            if not flags[e] & _F_POOL:
                continue
            h = self._handle[e]
            n = self._clen[e]
            try:
                page = self._decompress(pool.read(h, n), n)
            except DecompressionError:
                self._decompress_fail += 1
                self._reject_reclaim_fail += 1
                continue
            try:
                store.write_page(e, page)
            except (OSError, ZmemError):
                self._reject_reclaim_fail += 1
                continue
            # The store has the page: only now may the object go.
            handles.append(self._uninstall(e))
            flags[e] |= _F_STORE
            written += 1
        self._written_back += written
        return written, handles

    def _pick_victims(self) -> list[int] | None:
        if self.reclaim != "zspage":
            return super()._pick_victims()
        # zs_reclaim_page: the least recently allocated-into zspage, up to 8 tries
        for _ in range(ZSPAGE_RECLAIM_RETRIES):
            z = self._zhead
            if z < 0:
                return None
            self._zlru_unlink(z)
            members = self._zspage_victims(z)
            if members:
                # rotated, as the kernel's LRU rotation: if the writeback
                # fails the zspage is tried again later; if it succeeds the
                # zspage is freed and its id found dead when it comes round
                self._zlru_add_tail(z)
                return members
        return []

    def _zspage_victims(self, z: int) -> list[int]:
        e = self._zhuge[z]
        if e >= 0 and self._flags[e] & _F_POOL and self._clen[e] >= self._huge_size:
            try:
                if self.pool.zspage_of(self._handle[e]) == z:  # type: ignore[attr-defined]
                    return [e]
            except ZmemError:
                pass
        return self._zspage_members(z)

    def _zspage_touch(self, e: int, handle: int, n: int) -> None:
        """A store allocated into ``handle``'s zspage: move it to the MRU end (lock held)."""
        z = self.pool.zspage_of(handle)  # type: ignore[attr-defined]
        if z >= len(self._zon):
            grow = max(z + 1 - len(self._zon), len(self._zon), 64)
            self._zprev.extend(array("i", [-1]) * grow)
            self._znext.extend(array("i", [-1]) * grow)
            self._zon.extend(bytes(grow))
            self._zhuge.extend(array("i", [-1]) * grow)
        if self._zon[z]:
            if z == self._ztail:
                self._zhuge[z] = e if n >= self._huge_size else -1
                return
            self._zlru_unlink(z)
        self._zlru_add_tail(z)
        self._zhuge[z] = e if n >= self._huge_size else -1

    def _zlru_unlink(self, z: int) -> None:
        p, n = self._zprev[z], self._znext[z]
        if p >= 0:
            self._znext[p] = n
        else:
            self._zhead = n
        if n >= 0:
            self._zprev[n] = p
        else:
            self._ztail = p
        self._zprev[z] = self._znext[z] = -1
        self._zon[z] = 0

    def _zlru_add_tail(self, z: int) -> None:
        t = self._ztail
        self._zprev[z] = t
        self._znext[z] = -1
        if t >= 0:
            self._znext[t] = z
        else:
            self._zhead = z
        self._ztail = z
        self._zon[z] = 1

    def writeback(self, nr_to_scan: int) -> int:
        """Walk the LRU ``nr_to_scan`` steps writing back cold entries; return pages written back.

        The shrinker's scan without its ``shrinker_enabled`` gate (what the
        driver or a test calls to force writeback).  With ``reclaim="zspage"``
        whole zspages are written back until at least ``nr_to_scan`` pages
        are.
        """
        if not self.writeback_enabled or nr_to_scan <= 0:
            return 0
        written = 0
        if self.reclaim == "zspage":
            empty = 0
            while written < nr_to_scan:
                n = self._reclaim_step()
                if n < 0:
                    break
                if n == 0:
                    empty += 1
                    if empty == MAX_RECLAIM_RETRIES:
                        break
                written += n
            return written
        for _ in range(nr_to_scan):
            n = self._reclaim_step()
            if n < 0:
                break
            written += n
        return written

    def shrinker_count(self) -> int:
        """``zswap_shrinker_count``: LRU length less one recent disk swap-in, scaled by compression."""
        if not (self.shrinker_enabled and self.writeback_enabled):
            return 0
        stored = self._stored
        if not stored:
            return 0
        freeable = self._lru_len
        if self._nr_disk_swapins:
            self._nr_disk_swapins -= 1  # protects against thrashing: consume one
            freeable -= 1
        if freeable <= 0:
            return 0
        backing = self._compressed_bytes >> 12
        return freeable * backing // stored

    def shrink(self, nr_to_scan: int) -> int:
        """``zswap_shrinker_scan``: the memory-pressure shrinker; pages written back.

        Does nothing unless ``shrinker_enabled`` (and writeback is allowed).
        """
        if not self.shrinker_enabled:
            return 0
        return self.writeback(nr_to_scan)

    def shrink_worker(self) -> int:
        """The global shrink worker: write back until the pool is at ``accept_pages``.

        Returns pages written back.  Gives up after ``MAX_RECLAIM_RETRIES``
        steps that wrote nothing.  With ``compact_then_writeback`` it
        compacts first and between batches sized to what is still missing.
        A second worker call while one runs returns 0 at once (the kernel's
        work item is queued once).
        """
        if not self._worker_lock.acquire(blocking=False):
            return 0
        t0 = self._timer()
        try:
            if not self.writeback_enabled:
                return 0
            pool = self.pool
            thr = self.accept_pages
            compact = self.limit_policy == "compact_then_writeback"
            failures = 0
            written = 0
            batch = 0
            while pool.total_pages > thr:
                if compact and batch <= 0:
                    self._compact_for_limit()
                    total = pool.total_pages
                    if total <= thr:
                        break
                    # entries needed at the current density, rounded up
                    batch = max(1, -(-(total - thr) * self._stored // total))
                n = self._reclaim_step()
                if n < 0:
                    break  # nothing left to write back
                if n == 0:
                    failures += 1
                    if failures == MAX_RECLAIM_RETRIES:
                        break
                written += n
                batch -= max(n, 1)
            return written
        finally:
            self._shrink_worker_ns += self._timer() - t0
            self._worker_lock.release()

    def _queue_shrink(self) -> None:
        if self._wq_event is not None:
            self._wq_event.set()
        else:
            self.shrink_worker()

    def _wq_loop(self) -> None:
        ev = self._wq_event
        assert ev is not None
        cond = self._wq_cond
        while True:
            ev.wait()
            with cond:
                ev.clear()
                self._wq_busy = True
            try:
                if self._wq_stop:
                    return
                self.shrink_worker()
            finally:
                with cond:
                    self._wq_busy = False
                    cond.notify_all()

    def drain(self, timeout: float | None = None) -> bool:
        """Wait until no shrink-worker run is queued or running; False on timeout.

        (``flush_work``.)  With the inline worker there is never one pending.
        """
        ev = self._wq_event
        if ev is None:
            return True
        with self._wq_cond:
            return self._wq_cond.wait_for(lambda: not ev.is_set() and not self._wq_busy, timeout)

    # -- statistics --------------------------------------------------------

    def stats(self) -> ZswapStats:
        with self._lock:
            return ZswapStats(
                pool_limit_hit=self._pool_limit_hit,
                reject_reclaim_fail=self._reject_reclaim_fail,
                reject_alloc_fail=self._reject_alloc_fail,
                reject_kmemcache_fail=0,  # entries are array rows: no slab to fail
                reject_compress_fail=self._reject_compress_fail,
                reject_compress_poor=self._reject_compress_poor,
                decompress_fail=self._decompress_fail,
                written_back_pages=self._written_back,
                pool_total_size=self.pool.total_pages * PAGE_SIZE,
                stored_pages=self._stored,
                stored_incompressible_pages=self._incompressible,
                zswpout=self._zswpout,
                zswpin=self._zswpin,
                zswpwb=self._written_back,
                compressed_bytes=self._compressed_bytes,
                disk_swapins=self._disk_swapins,
                limit_compactions=self._limit_compactions,
                limit_compacted_pages=self._limit_compacted_pages,
                reclaim_pages_freed=self._reclaim_pages_freed,
                shrink_worker_ns=self._shrink_worker_ns,
                limit_compact_ns=self._limit_compact_ns)

    def _metadata_columns(self) -> list[array]:
        return super()._metadata_columns() + [self._zprev, self._znext, self._zon, self._zhuge]

    def _check_invariants(self) -> None:
        """Cross-check the table, LRU, counters, store occupancy and zspage LRU (for tests)."""
        with self._lock:
            ids = self._check_base_invariants()
            for off in range(self._cap):
                f = self._flags[off]
                assert not (f & _F_POOL and f & _F_STORE), f"offset {off} in pool and store"
                assert bool(f & _F_STORE) == self.backing_store.contains(off), off
            assert self.backing_store.stored_pages == sum(
                1 for off in range(self._cap) if self._flags[off] & _F_STORE)
            if self.reclaim == "zspage":
                seen = 0
                z, prev = self._zhead, -1
                while z >= 0:
                    assert self._zprev[z] == prev and self._zon[z]
                    seen += 1
                    prev, z = z, self._znext[z]
                assert prev == self._ztail and seen == sum(self._zon)
                # every live pool entry's zspage is on the zspage LRU (true
                # when the pool is zswap's alone and nothing runs concurrently)
                for e in ids:
                    assert self._zon[self.pool.zspage_of(self._handle[e])], e  # type: ignore[attr-defined]

    def close(self) -> None:
        """Stop the worker thread; release the pool and store if zswap created them."""
        if self._wq_thread is not None:
            self._wq_stop = True
            self._wq_event.set()  # type: ignore[union-attr]
            self._wq_thread.join()
            self._wq_thread = None
        if self._own_store:
            self.backing_store.close()
        super().close()

    def __repr__(self) -> str:
        return (f"<zmem.Zswap {self.compressor} max_pool_percent={self._max_pool_percent} "
                f"stored={self._stored} pool_pages={self.pool.total_pages} reclaim={self.reclaim} "
                f"limit_policy={self.limit_policy}>")
