"""What zswap and cleancache share: pool, codec, per-entry typed arrays, LRU, accounting.

:class:`CompressedCache` is the base both compressed caches build on (the
cachetools shape: accounting in the base, the eviction policy in one
overridable method, ``_pick_victims``); :class:`IdHash` is the open-addressing
table of entry ids they index keys with.  Entry state lives in typed arrays
indexed by entry id; the LRU is an intrusive doubly linked list in two int
arrays, head = coldest.
"""

from __future__ import annotations

import threading
from array import array

from ._classes import PAGE_SIZE
from ._compress import Codec, get_codec
from ._pool import PoolBase
from ._zsmalloc import Pool

__all__ = ["CompressedCache", "IdHash", "MAX_RECLAIM_RETRIES", "ZSPAGE_RECLAIM_RETRIES",
           "LIMIT_POLICIES", "RECLAIM_POLICIES"]

#: ``MAX_RECLAIM_RETRIES`` (mm/internal.h): the shrink worker gives up after this many empty steps.
MAX_RECLAIM_RETRIES = 16
#: ``zs_reclaim_page(pool, 8)``: zspages tried per allocator-level reclaim step (6.2-6.4).
ZSPAGE_RECLAIM_RETRIES = 8
LIMIT_POLICIES = ("writeback", "compact_then_writeback")
RECLAIM_POLICIES = ("object_lru", "zspage")

# entry flag bits
_F_POOL = 1  # the entry has an object in the pool and is on the LRU
_F_REF = 2  # referenced: the next LRU walk rotates it instead of evicting it
_F_STORE = 4  # the backing store holds this offset's page (zswap only)

_M64 = (1 << 64) - 1
_PHI = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: Fibonacci hashing multiplier


def _hash64(x: int) -> int:
    """A 64-bit mix of an int key (handles are ``gen << 32 | slot``: the low bits alone cluster)."""
    x = (x ^ (x >> 31)) * 0xBF58476D1CE4E5B9 & _M64
    return x ^ (x >> 29)


class IdHash:
    """Open-addressing hash table of entry ids (``array('i')``, -1 = empty slot).

    Keys are not stored here: they live in the caller's per-entry arrays, so a
    table slot is 4 bytes.  Linear probing; deletion by backward shift (no
    tombstones, so probe chains never rot).  The table doubles at load 1/2.
    ``hash_of(id)`` returns an entry's 64-bit key hash; it is used to rehash
    and to find where a shifted entry belongs, and must equal the ``raw``
    passed to ``insert`` for that entry.  Not thread-safe: the owner's lock.
    """

    __slots__ = ("_t", "_shift", "_mask", "count", "_hash_of")

    def __init__(self, hash_of, bits: int = 8) -> None:
        self._hash_of = hash_of
        self._t = array("i", [-1]) * (1 << bits)
        self._shift = 64 - bits
        self._mask = (1 << bits) - 1
        self.count = 0

    def _home(self, raw: int) -> int:
        return ((raw * _PHI) & _M64) >> self._shift

    def find(self, raw: int, key: int, keys) -> int:
        """The id ``e`` with ``keys[e] == key`` in ``raw``'s probe chain, or -1."""
        t = self._t
        mask = self._mask
        i = ((raw * _PHI) & _M64) >> self._shift
        while True:
            e = t[i]
            if e < 0 or keys[e] == key:
                return e
            i = (i + 1) & mask

    def find3(self, raw: int, a: int, b: int, c: int, ka, kb, kc) -> int:
        """As :meth:`find` for a key of three columns."""
        t = self._t
        mask = self._mask
        i = ((raw * _PHI) & _M64) >> self._shift
        while True:
            e = t[i]
            if e < 0 or (kc[e] == c and kb[e] == b and ka[e] == a):
                return e
            i = (i + 1) & mask

    def insert(self, raw: int, e: int) -> None:
        """Add id ``e`` (not already present) under key hash ``raw``."""
        if (self.count + 1) * 2 > len(self._t):
            self._resize(len(self._t) * 2)
        t = self._t
        mask = self._mask
        i = ((raw * _PHI) & _M64) >> self._shift
        while t[i] >= 0:
            i = (i + 1) & mask
        t[i] = e
        self.count += 1

    def remove(self, raw: int, e: int) -> None:
        """Remove id ``e`` (present, under key hash ``raw``)."""
        t = self._t
        mask = self._mask
        i = ((raw * _PHI) & _M64) >> self._shift
        while t[i] != e:
            if t[i] < 0:
                raise KeyError(f"id {e} is not in the table")
            i = (i + 1) & mask
        # Backward shift: pull later members of the cluster into the hole when
        # their home slot is not cyclically in (hole, their slot].
        j = i
        hash_of = self._hash_of
        home = self._home
        while True:
            j = (j + 1) & mask
            x = t[j]
            if x < 0:
                break
            k = home(hash_of(x))
            if (i <= j and (k <= i or k > j)) or (i > j and k <= i and k > j):
                t[i] = x
                i = j
        t[i] = -1
        self.count -= 1

    def _resize(self, size: int) -> None:
        old = self._t
        self._t = array("i", [-1]) * size
        self._shift = 64 - (size.bit_length() - 1)
        self._mask = size - 1
        self.count = 0
        hash_of = self._hash_of
        for e in old:
            if e >= 0:
                self.insert(hash_of(e), e)

    def ids(self) -> list[int]:
        """Every id in the table (for invariant checks)."""
        return [e for e in self._t if e >= 0]

    def metadata_bytes(self) -> int:
        return len(self._t) * self._t.itemsize


def _codec(spec) -> Codec:
    return spec if isinstance(spec, Codec) else get_codec(spec)


class CompressedCache:
    """The part zswap and cleancache share: pool, codec, entry arrays, LRU, accounting.

    A subclass decides what an entry id means (zswap: the swap offset;
    cleancache: an allocated id found through a key index), and what
    eviction does (:meth:`_evict_locked`: zswap writes back, cleancache
    discards).  Which entries go is decided in one place,
    :meth:`_pick_victims`; override it to change the policy.
    """

    def __init__(self, pool: PoolBase | None, compressor, reclaim: str) -> None:
        if reclaim not in RECLAIM_POLICIES:
            raise ValueError(f"reclaim must be one of {RECLAIM_POLICIES}, got {reclaim!r}")
        self._own_pool = pool is None
        self.pool: PoolBase = Pool() if pool is None else pool
        if reclaim == "zspage" and not all(hasattr(self.pool, m) for m in (
                "zspage_of", "zspage_objects", "zspage_siblings")):
            raise ValueError(f"reclaim='zspage' needs a pool with zspage introspection "
                             f"(zspage_of, zspage_objects, zspage_siblings); {self.pool.name} has none")
        self.codec = _codec(compressor)
        self.reclaim = reclaim
        self._lock = threading.Lock()
        #: ``huge_class_size``: an object this long or longer has a zspage to itself.
        self._huge_size = getattr(self.pool, "huge_class_size", PAGE_SIZE + 1)
        self._cap = 0
        self._handle = array("q")
        self._clen = array("H")
        self._flags = array("B")
        self._prev = array("i")
        self._next = array("i")
        # (array, fill) of every per-entry column, grown together
        self._columns: list[tuple[array, int]] = [
            (self._handle, 0), (self._clen, 0), (self._flags, 0), (self._prev, -1), (self._next, -1)]
        self._head = -1  # coldest
        self._tail = -1  # most recently added or rotated
        self._lru_len = 0
        self._stored = 0
        self._incompressible = 0
        self._compressed_bytes = 0
        self._decompress_fail = 0
        self._reclaim_pages_freed = 0
        handle = self._handle
        self._revmap = IdHash(lambda e: _hash64(handle[e])) if reclaim == "zspage" else None

    # -- entry table -------------------------------------------------------

    def _grow(self, need: int) -> None:
        """Make ids ``0 .. need-1`` addressable (lock held)."""
        new = max(need, 2 * self._cap, 64)
        for col, fill in self._columns:
            col.extend(array(col.typecode, [fill]) * (new - len(col)))
        self._cap = new

    def _lru_unlink(self, e: int) -> None:
        prev, nxt = self._prev, self._next
        p, n = prev[e], nxt[e]
        if p >= 0:
            nxt[p] = n
        else:
            self._head = n
        if n >= 0:
            prev[n] = p
        else:
            self._tail = p
        prev[e] = nxt[e] = -1

    def _lru_add_tail(self, e: int) -> None:
        t = self._tail
        self._prev[e] = t
        self._next[e] = -1
        if t >= 0:
            self._next[t] = e
        else:
            self._head = e
        self._tail = e

    def _install(self, e: int, handle: int, n: int) -> None:
        """Make ``e`` a pool entry at the LRU tail, referenced (lock held)."""
        self._handle[e] = handle
        self._clen[e] = n
        self._flags[e] = (self._flags[e] & ~_F_STORE) | _F_POOL | _F_REF
        self._lru_add_tail(e)
        self._lru_len += 1
        self._stored += 1
        self._compressed_bytes += n
        if n == PAGE_SIZE:
            self._incompressible += 1
        if self._revmap is not None:
            self._revmap.insert(_hash64(handle), e)

    def _uninstall(self, e: int) -> int:
        """Take ``e`` out of the pool's table and the LRU; return its handle, not freed (lock held)."""
        h = self._handle[e]
        if self._revmap is not None:
            self._revmap.remove(_hash64(h), e)
        self._lru_unlink(e)
        self._lru_len -= 1
        self._flags[e] &= ~(_F_POOL | _F_REF)
        n = self._clen[e]
        self._stored -= 1
        self._compressed_bytes -= n
        if n == PAGE_SIZE:
            self._incompressible -= 1
        return h

    # -- compression -------------------------------------------------------

    def _compress(self, page) -> tuple[bytes | None, int, str | None]:
        """``(data, length, None)``, or ``(None, length, why)`` for a page that does not fit.

        ``why`` follows ``zswap_compress``'s counters: "poor" when the output
        did not fit the PAGE_SIZE destination (the compressor's -ENOSPC,
        counted as ``reject_compress_poor``); "fail" when the compressor
        failed, produced nothing, or exactly PAGE_SIZE bytes (-EINVAL,
        ``reject_compress_fail``).
        """
        try:
            c = self.codec.compress(page)
        except Exception:  # noqa: BLE001 - any codec failure is a compression failure
            return None, 0, "fail"
        n = len(c)
        if n > PAGE_SIZE:
            return None, n, "poor"
        if n == 0 or n == PAGE_SIZE:
            return None, n, "fail"
        return c, n, None

    def _decompress(self, raw: bytes, n: int) -> bytes:
        """The page of a stored object (length 4096: stored as-is)."""
        if n == PAGE_SIZE:
            return raw
        return self.codec.decompress(raw)

    # -- victim selection --------------------------------------------------

    def _lru_step(self) -> int:
        """One step of the LRU walk (lock held).

        Returns the coldest unreferenced entry (rotated to the tail first, as
        the kernel does before it drops the LRU lock), -1 if the head was
        referenced (its bit is cleared and it is rotated: second chance), or
        -2 if the LRU is empty.
        """
        e = self._head
        if e < 0:
            return -2
        if e != self._tail:
            self._lru_unlink(e)
            self._lru_add_tail(e)
        f = self._flags[e]
        if f & _F_REF:
            self._flags[e] = f & ~_F_REF
            return -1
        return e

    def _entries_of(self, handles: list[int]) -> list[int]:
        """Our live entries among ``handles`` (lock held)."""
        out = []
        rev = self._revmap
        handle, flags = self._handle, self._flags
        for h in handles:
            e = rev.find(_hash64(h), h, handle)  # type: ignore[union-attr]
            if e >= 0 and flags[e] & _F_POOL:
                out.append(e)
        return out

    def _zspage_members(self, z: int) -> list[int]:
        """Our entries whose objects are in zspage ``z`` now (lock held; takes the pool lock)."""
        try:
            handles = self.pool.zspage_objects(z)  # type: ignore[attr-defined]
        except ValueError:
            return []  # freed since we noted it
        return self._entries_of(handles)

    def _entry_zspage_members(self, e: int) -> list[int]:
        """Entries sharing ``e``'s zspage, ``e`` first (lock held)."""
        if self._clen[e] >= self._huge_size:
            return [e]  # a huge object has its zspage to itself
        # one pool call: compaction cannot move e between finding and listing
        members = self._entries_of(self.pool.zspage_siblings(self._handle[e]))  # type: ignore[attr-defined]
        return [e] + [m for m in members if m != e]

    def _pick_victims(self) -> list[int] | None:
        """The entries to evict next (lock held): the policy, in one overridable method.

        Returns None when there is nothing left to evict, ``[]`` when this
        step found no victim (a second-chance rotation), else entry ids.
        Default: one LRU step; with ``reclaim="zspage"`` the victim's whole
        zspage.
        """
        e = self._lru_step()
        if e < 0:
            return None if e == -2 else []
        if self.reclaim == "zspage":
            return self._entry_zspage_members(e)
        return [e]

    def _evict_locked(self, ids: list[int]) -> tuple[int, list[int]]:
        """Evict entries (lock held); return (entries evicted, handles to free after unlocking)."""
        raise NotImplementedError

    def _reclaim_step(self) -> int:
        """Pick and evict once; entries evicted, 0 for an empty step, -1 if nothing is left."""
        pool = self.pool
        with self._lock:
            ids = self._pick_victims()
            if ids is None:
                return -1
            if not ids:
                return 0
            n, handles = self._evict_locked(ids)
        if handles:
            before = pool.total_pages
            pool.free_many(handles)
            self._reclaim_pages_freed += max(0, before - pool.total_pages)
        return n

    # -- introspection -----------------------------------------------------

    def _metadata_columns(self) -> list[array]:
        return [col for col, _ in self._columns]

    def metadata_bytes(self) -> int:
        """Bytes of the front-end's own bookkeeping (entry arrays, indexes), pool excluded."""
        total = sum(a.buffer_info()[1] * a.itemsize for a in self._metadata_columns())
        if self._revmap is not None:
            total += self._revmap.metadata_bytes()
        return total

    def _check_base_invariants(self) -> set[int]:
        """Cross-check the LRU, the counters and the handle map; return the pool entries (lock held)."""
        seen = []
        e, prev = self._head, -1
        while e >= 0:
            assert self._prev[e] == prev, (e, self._prev[e], prev)
            assert self._flags[e] & _F_POOL, e
            seen.append(e)
            prev, e = e, self._next[e]
            assert len(seen) <= self._lru_len, "LRU cycle"
        assert prev == self._tail
        assert len(seen) == self._lru_len == self._stored, (len(seen), self._lru_len, self._stored)
        ids = set(seen)
        assert len(ids) == len(seen)
        in_pool = {i for i in range(self._cap) if self._flags[i] & _F_POOL}
        assert in_pool == ids
        assert sum(self._clen[i] for i in ids) == self._compressed_bytes
        assert sum(1 for i in ids if self._clen[i] == PAGE_SIZE) == self._incompressible
        if self._revmap is not None:
            assert sorted(self._revmap.ids()) == sorted(ids)
            for i in ids:
                h = self._handle[i]
                assert self._revmap.find(_hash64(h), h, self._handle) == i
        return ids

    def close(self) -> None:
        """Release the pool if this cache created it."""
        if self._own_pool:
            self.pool.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
