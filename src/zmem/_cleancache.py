"""cleancache: an ephemeral compressed cache of clean file pages (zcache's role, 2012-2013).

This module owns :class:`Cleancache`.  Pages are keyed by ``(pool_id,
inode, index)`` as the kernel's cleancache keyed them by (filesystem pool,
inode, page index).  The pages are clean, so the cache may lose any of them
at any time: ``get`` may miss, but it never returns wrong data, and under
memory pressure the cache *discards* instead of writing back ("sometimes just
discarding is better").  As zcache's ephemeral tmem pools did, a ``get``
that hits is exclusive by default (``exclusive_gets``): the page is in the
page cache again, a second copy here would be waste.

Reclaim.  The cache holds ``budget_bytes`` of pool pages.  A put that takes
the pool over it evicts until it is back under (the put itself may overshoot
by one zspage).  Victims come from the shared second-chance LRU; with
``reclaim="zspage"`` (default) the whole zspage of the coldest entry goes,
every object in it (read from the pool at that moment: compaction may have
moved objects in or out), so that each eviction really returns pages;
``reclaim="object_lru"`` discards one entry at a time, which with
fragmentation can discard many pages' worth of entries before a single
page comes free.  Discards need no I/O, so picking the zspage by its coldest
object (rather than zswap's allocation order) costs nothing extra.

Index, without a Python object per page.  Entries are rows of typed arrays
(the base's 19 bytes: handle, length, flags, LRU links) plus, here:

  ``_kfs`` H, ``_kino`` Q, ``_kidx`` Q  the key (18 bytes)
  ``_iprev``, ``_inext`` i              the inode's list of entries (8 bytes)

Lookup is an :class:`~zmem._zswap.IdHash` (open addressing, 4-byte slots,
load factor 1/4..1/2) whose slots hold entry ids and compare the key columns.
Each inode has a list head in ``_inodes[pool_id][inode]`` (a Python dict
entry per *inode*, not per page), so ``invalidate_inode`` costs the inode's
pages and ``invalidate_fs`` its inodes.  Entry ids are recycled LIFO.

Locking: as zswap (see :mod:`zmem._zswap`): one front-end lock over the
arrays, the index and the LRU; compression, allocation and frees of
unlinked objects outside it; the pool lock inside it.
"""

from __future__ import annotations

import sys
from array import array
from dataclasses import dataclass, fields

from ._classes import PAGE_SIZE
from ._compress import Codec
from ._errors import DecompressionError, ZmemError
from ._pool import PoolBase
from ._frontend import _F_POOL, _F_REF, _M64, CompressedCache, IdHash, _hash64

__all__ = ["Cleancache", "CleancacheStats", "MAX_POOL_ID"]

#: Pool ids are 16 bits (the kernel had at most MAX_INITIALIZABLE_FS = 32 filesystems).
MAX_POOL_ID = 0xFFFF
_MAX_KEY = (1 << 64) - 1


def _key_hash(fs: int, ino: int, idx: int) -> int:
    return _hash64((ino * 0x9E3779B97F4A7C15 + idx * 0xC2B2AE3D27D4EB4F + (fs << 17)) & _M64)


@dataclass(frozen=True, slots=True)
class CleancacheStats:
    """Counters (cumulative) and sizes (current)."""

    puts: int
    gets: int
    hits: int
    misses: int
    evictions: int
    """Pages discarded under memory pressure (budget or ``shrink``)."""
    invalidates: int
    """Pages dropped by ``invalidate_*`` (and by a put that replaced or was refused)."""
    put_rejects: int
    """Puts not cached: did not compress below ``max_compressed_size``, or no memory."""
    decompress_fail: int
    pool_total_size: int
    """Bytes of pool pages (fragmentation included)."""
    stored_pages: int
    compressed_bytes: int

    @property
    def succ_gets(self) -> int:
        """The kernel's debugfs name for hits."""
        return self.hits

    @property
    def failed_gets(self) -> int:
        """The kernel's debugfs name for misses."""
        return self.misses

    @property
    def hit_rate(self) -> float:
        return self.hits / self.gets if self.gets else 0.0

    def as_dict(self) -> dict[str, int]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


class Cleancache(CompressedCache):
    """An ephemeral compressed page cache of ``budget_bytes`` of pool memory.

    >>> cc = Cleancache(1 << 20)
    >>> fs = cc.init_fs()
    >>> cc.put(fs, 12, 0, b"clean" * 819 + b"!")
    True
    >>> cc.get(fs, 12, 0)[:5], cc.get(fs, 12, 0)
    (b'clean', None)
    """

    def __init__(self, budget_bytes: int | str, *, compressor: str | Codec = "lzo",
                 pool: PoolBase | None = None, reclaim: str = "zspage",
                 exclusive_gets: bool = True, max_compressed_size: int | None = None) -> None:
        """``max_compressed_size``: larger compressed pages are not cached (default: below
        the pool's ``huge_class_size``, i.e. only pages that save memory)."""
        from ._zram import parse_size

        budget = parse_size(budget_bytes)
        if budget < PAGE_SIZE:
            raise ValueError(f"budget_bytes must be at least one page, got {budget_bytes!r}")
        super().__init__(pool, compressor, reclaim)
        self.budget_pages = budget // PAGE_SIZE
        self.exclusive_gets = bool(exclusive_gets)
        if max_compressed_size is None:
            max_compressed_size = min(self._huge_size, PAGE_SIZE) - 1
        if not 0 < max_compressed_size < PAGE_SIZE:
            raise ValueError(f"max_compressed_size must be 1..{PAGE_SIZE - 1}, got {max_compressed_size}")
        self.max_compressed_size = max_compressed_size
        self._kfs = array("H")
        self._kino = array("Q")
        self._kidx = array("Q")
        self._iprev = array("i")
        self._inext = array("i")
        self._columns += [(self._kfs, 0), (self._kino, 0), (self._kidx, 0),
                          (self._iprev, -1), (self._inext, -1)]
        kfs, kino, kidx = self._kfs, self._kino, self._kidx
        self._index = IdHash(lambda e: _key_hash(kfs[e], kino[e], kidx[e]))
        self._free_ids = array("i")
        self._next_id = 0
        self._inodes: dict[int, dict[int, int]] = {}  # pool_id -> {inode: first entry id}
        self._fs_ids: set[int] = set()
        self._puts = 0
        self._gets = 0
        self._hits = 0
        self._misses = 0
        self._evictions = 0
        self._invalidates = 0
        self._put_rejects = 0

    # -- filesystems ---------------------------------------------------------

    def init_fs(self) -> int:
        """``cleancache_init_fs``: a new pool id for a filesystem."""
        with self._lock:
            for i in range(MAX_POOL_ID + 1):
                if i not in self._fs_ids and i not in self._inodes:
                    self._fs_ids.add(i)
                    return i
        raise ZmemError("cleancache: no free pool id")

    @staticmethod
    def _check_key(fs: int, ino: int, idx: int) -> None:
        if not (type(fs) is int and type(ino) is int and type(idx) is int):
            raise TypeError("pool_id, inode and index must be ints")
        if not 0 <= fs <= MAX_POOL_ID:
            raise ValueError(f"pool_id must be 0..{MAX_POOL_ID}, got {fs}")
        if not (0 <= ino <= _MAX_KEY and 0 <= idx <= _MAX_KEY):
            raise ValueError("inode and index must be 0..2**64-1")

    # -- entry table (lock held) ----------------------------------------------

    def _find(self, fs: int, ino: int, idx: int) -> int:
        return self._index.find3(_key_hash(fs, ino, idx), fs, ino, idx,
                                 self._kfs, self._kino, self._kidx)

    def _new_entry(self, fs: int, ino: int, idx: int) -> int:
        if self._free_ids:
            e = self._free_ids.pop()
        else:
            e = self._next_id
            self._next_id += 1
            if e >= self._cap:
                self._grow(e + 1)
        self._kfs[e] = fs
        self._kino[e] = ino
        self._kidx[e] = idx
        self._index.insert(_key_hash(fs, ino, idx), e)
        # push on the inode's list
        inodes = self._inodes.get(fs)
        if inodes is None:
            inodes = self._inodes[fs] = {}
        head = inodes.get(ino, -1)
        self._iprev[e] = -1
        self._inext[e] = head
        if head >= 0:
            self._iprev[head] = e
        inodes[ino] = e
        return e

    def _drop(self, e: int) -> int:
        """Remove entry ``e`` from the pool table, LRU, index and inode list; return its handle."""
        h = self._uninstall(e)
        fs, ino = self._kfs[e], self._kino[e]
        self._index.remove(_key_hash(fs, ino, self._kidx[e]), e)
        p, n = self._iprev[e], self._inext[e]
        if n >= 0:
            self._iprev[n] = p
        if p >= 0:
            self._inext[p] = n
        else:
            inodes = self._inodes[fs]
            if n >= 0:
                inodes[ino] = n
            else:
                del inodes[ino]
                if not inodes and fs not in self._fs_ids:
                    del self._inodes[fs]
        self._iprev[e] = self._inext[e] = -1
        self._free_ids.append(e)
        return h

    # -- the cleancache ops --------------------------------------------------

    def put(self, pool_id: int, inode: int, index: int, page) -> bool:
        """``cleancache_put_page``: cache a clean page; False if not cached.

        A put replaces the key's older page; a put that is not cached still
        drops it (the old copy is stale: a later get must miss, not return it).
        """
        self._check_key(pool_id, inode, index)
        if len(page) != PAGE_SIZE:
            raise ValueError(f"cleancache stores {PAGE_SIZE}-byte pages, got {len(page)} bytes")
        self._puts += 1
        pool = self.pool
        data, n, why = self._compress(page)
        h = None
        if why is None and n <= self.max_compressed_size:
            try:
                h = pool.store(data)
            except (ZmemError, MemoryError):
                pass
        if h is None:
            self._put_rejects += 1
        old = None
        with self._lock:
            e = self._find(pool_id, inode, index)
            if e >= 0:
                old = self._drop(e)
                if h is None:
                    self._invalidates += 1
            if h is not None:
                self._install(self._new_entry(pool_id, inode, index), h, n)
        if old is not None:
            pool.free(old)
        if h is not None and pool.total_pages > self.budget_pages:
            self._reclaim_to(self.budget_pages)
        return h is not None

    def get(self, pool_id: int, inode: int, index: int) -> bytes | None:
        """``cleancache_get_page``: the page, or None (a miss: the caller reads the disk)."""
        self._check_key(pool_id, inode, index)
        self._gets += 1
        exclusive = self.exclusive_gets
        raw = None
        with self._lock:
            e = self._find(pool_id, inode, index)
            if e < 0:
                self._misses += 1
                return None
            h = self._handle[e]
            n = self._clen[e]
            if exclusive:
                self._drop(e)
            else:
                raw = self.pool.read(h, n)
                self._flags[e] |= _F_REF
        try:
            if raw is None:
                raw = self.pool.read(h, n)
            page = self._decompress(raw, n)
        except DecompressionError:
            # An ephemeral cache may always miss: drop the bad copy, never return it.
            self._decompress_fail += 1
            self._misses += 1
            if exclusive:
                self.pool.free(h)
            else:
                with self._lock:
                    e = self._find(pool_id, inode, index)
                    h2 = self._drop(e) if e >= 0 and self._handle[e] == h else None
                if h2 is not None:
                    self.pool.free(h2)
            return None
        if exclusive:
            self.pool.free(h)
        self._hits += 1
        return page

    def invalidate_page(self, pool_id: int, inode: int, index: int) -> bool:
        """``cleancache_invalidate_page``: forget one page; return whether it was cached."""
        self._check_key(pool_id, inode, index)
        with self._lock:
            e = self._find(pool_id, inode, index)
            if e < 0:
                return False
            h = self._drop(e)
            self._invalidates += 1
        self.pool.free(h)
        return True

    def _drop_inode_locked(self, fs: int, ino: int, handles: list[int]) -> None:
        inodes = self._inodes.get(fs)
        e = inodes.get(ino, -1) if inodes else -1
        while e >= 0:
            nxt = self._inext[e]
            handles.append(self._drop(e))
            e = nxt

    def invalidate_inode(self, pool_id: int, inode: int) -> int:
        """``cleancache_invalidate_inode`` (truncate, inode eviction): pages dropped."""
        self._check_key(pool_id, inode, 0)
        handles: list[int] = []
        with self._lock:
            self._drop_inode_locked(pool_id, inode, handles)
            self._invalidates += len(handles)
        if handles:
            self.pool.free_many(handles)
        return len(handles)

    def invalidate_fs(self, pool_id: int) -> int:
        """``cleancache_invalidate_fs`` (umount): drop every page of the pool id and release it."""
        self._check_key(pool_id, 0, 0)
        handles: list[int] = []
        with self._lock:
            self._fs_ids.discard(pool_id)
            for ino in list(self._inodes.get(pool_id, ())):
                self._drop_inode_locked(pool_id, ino, handles)
            self._inodes.pop(pool_id, None)
            self._invalidates += len(handles)
        if handles:
            self.pool.free_many(handles)
        return len(handles)

    # -- reclaim -------------------------------------------------------------

    def _evict_locked(self, ids: list[int]) -> tuple[int, list[int]]:
        """Discard: the page is clean, its owner can always read it again."""
        flags = self._flags
        handles = [self._drop(e) for e in ids if flags[e] & _F_POOL]
        self._evictions += len(handles)
        return len(handles), handles

    def _reclaim_to(self, target_pages: int) -> int:
        """Evict until the pool holds at most ``target_pages``; return pages discarded."""
        pool = self.pool
        return self._evict_while(lambda evicted: pool.total_pages > target_pages)

    def shrink(self, nr_to_scan: int) -> int:
        """Memory pressure: discard at least ``nr_to_scan`` cached pages (whole zspages
        with ``reclaim="zspage"``); return pages discarded."""
        return self._evict_while(lambda evicted: evicted < nr_to_scan)

    def _evict_while(self, more) -> int:
        """Run reclaim steps while ``more(evicted)``; stop when the LRU is empty or
        a whole turn of it (every second chance used) evicted nothing."""
        evicted = 0
        empty = 0
        while more(evicted):
            n = self._reclaim_step()
            if n < 0:
                break
            if n == 0:
                empty += 1
                if empty > self._lru_len + 1:
                    break
                continue
            empty = 0
            evicted += n
        return evicted

    # -- introspection -------------------------------------------------------

    def stats(self) -> CleancacheStats:
        with self._lock:
            return CleancacheStats(
                puts=self._puts, gets=self._gets, hits=self._hits, misses=self._misses,
                evictions=self._evictions, invalidates=self._invalidates,
                put_rejects=self._put_rejects, decompress_fail=self._decompress_fail,
                pool_total_size=self.pool.total_pages * PAGE_SIZE,
                stored_pages=self._stored, compressed_bytes=self._compressed_bytes)

    def contains(self, pool_id: int, inode: int, index: int) -> bool:
        """Whether the page is cached now (no side effect on the LRU or the stats)."""
        with self._lock:
            return self._find(pool_id, inode, index) >= 0

    def keys(self) -> list[tuple[int, int, int]]:
        """Every cached key (O(n), for tests)."""
        with self._lock:
            return [(self._kfs[e], self._kino[e], self._kidx[e])
                    for e in range(self._next_id) if self._flags[e] & _F_POOL]

    def metadata_bytes(self) -> int:
        """Entry arrays, key index, handle map, free ids, and the per-inode dicts."""
        total = super().metadata_bytes() + self._index.metadata_bytes()
        total += self._free_ids.buffer_info()[1] * self._free_ids.itemsize
        total += sys.getsizeof(self._inodes)
        for d in self._inodes.values():
            total += sys.getsizeof(d) + sum(sys.getsizeof(k) for k in d)
        return total

    def _check_invariants(self) -> None:
        """Cross-check LRU, index, inode lists and counters (for tests)."""
        with self._lock:
            ids = self._check_base_invariants()
            assert sorted(self._index.ids()) == sorted(ids)
            for e in ids:
                assert self._find(self._kfs[e], self._kino[e], self._kidx[e]) == e
            listed = []
            for fs, inodes in self._inodes.items():
                for ino, head in inodes.items():
                    assert head >= 0 and self._iprev[head] == -1
                    e = head
                    while e >= 0:
                        assert (self._kfs[e], self._kino[e]) == (fs, ino)
                        listed.append(e)
                        e = self._inext[e]
            assert sorted(listed) == sorted(ids)
            free = set(self._free_ids)
            assert len(free) == len(self._free_ids)
            assert free | ids == set(range(self._next_id)) and not free & ids

    def __repr__(self) -> str:
        return (f"<zmem.Cleancache {self.codec.name} budget_pages={self.budget_pages} "
                f"stored={self._stored} pool_pages={self.pool.total_pages} reclaim={self.reclaim}>")
