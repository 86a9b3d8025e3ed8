"""zsmalloc: size classes, zspages of real frames, transparent handles, compaction.

This is Linux 6.18's ``mm/zsmalloc.c`` on an :class:`~zmem._arena.Arena`, with
the kernel's orders kept exactly, because they decide which zspages empty out
and therefore ``mem_used_total`` after frees:

* per zspage a LIFO free list threaded through the free slots' first word
  (``next << 1``, bit 0 clear); an allocated slot's first word is the handle
  tagged with bit 0 (``handle << 1 | 1``; huge objects carry no header);
* 12 fullness groups per class (0, 10%..90%, 99%, 100%), zspages always
  inserted at the list head; ``malloc`` takes the head of the first non-empty
  group from "99" down to "0";
* compaction per class, largest class first: destination = head of the
  fullest non-full group, source = head of the emptiest non-empty one; objects
  move in slot order until the source is empty or the destination full.

Where the kernel's structures are pointers, zmem keeps typed arrays indexed by
small ints; no Python object exists per object, handle or zspage.

Handle table (per handle slot; a handle is ``generation << 32 | slot``):
  ``_hobj[slot]``   location ``pfn << OBJ_INDEX_BITS | obj_idx`` (the kernel's
                    ``obj``), or -1 when the slot is free
  ``_hgen[slot]``   8-bit generation, bumped on free, so a stale handle is refused
zspage descriptor (per zspage id; ids are recycled LIFO):
  ``_zs_class``, ``_zs_inuse``, ``_zs_freeobj`` (head of the free list, -1 =
  end), ``_zs_bump`` (see below), ``_zs_fg`` (fullness group), ``_zs_next`` /
  ``_zs_prev`` (fullness list links), ``_zs_pbase`` (where the zspage's
  ``pages_per_zspage`` pfns start in ``_pagelist``)
page descriptor (per pfn):
  ``_frame_zspage`` (owning zspage, or -1), ``_frame_next`` (next page of the
  chain, -1 for the last; the kernel's ``page->index``)

Lazy free-list initialisation.  The kernel threads a new zspage's free list
0 -> 1 -> ... -> N-1 through every slot at creation.  Because allocation pops
and free pushes only at the head, that list is always "pushed slots (LIFO)"
followed by an untouched suffix ``bump .. N-1`` of the initial chain.  zmem
writes no links at creation and keeps ``bump`` instead: a popped index >=
``bump`` comes from the suffix.  The allocation order is identical, and fresh
frames (zero-filled) read as "not allocated" to compaction's header scan.

Locking.  One pool lock (``threading.Lock``) guards all of the above and the
object bytes.  Readers copy an object out under it and decompress after
releasing it, so no reader can see a half-moved object.  Compaction takes the
lock for one source zspage at a time and drops it in between, as the kernel
drops ``pool->lock`` when it is contended; with no contender that is the same
sequence of moves, because the put-back destination is again the head of the
fullest non-full group.  Python's GIL makes finer locks (class, zspage) buy
nothing; the codecs, which release the GIL, run outside the lock.
"""

from __future__ import annotations

import threading
from array import array
from dataclasses import dataclass
from struct import Struct

import numpy as np

from ._arena import PAGE_SHIFT, Arena
from ._classes import PAGE_SIZE, ZS_HANDLE_SIZE, Geometry, SizeClassInfo
from ._errors import (
    DoubleFreeError,
    InvalidHandleError,
    InvalidSizeError,
    ObjectTooLargeError,
    PoolExhaustedError,
    WriteTooLargeError,
)
from ._pool import PoolBase

__all__ = ["Pool", "ClassStats", "NR_FULLNESS_GROUPS", "ZS_INUSE_RATIO_100"]

OBJ_INDEX_BITS = 24
OBJ_INDEX_MASK = (1 << OBJ_INDEX_BITS) - 1
PAGE_MASK = PAGE_SIZE - 1
#: Groups: 0 = empty, 1..10 = "10%".."99%", 11 = full ("100%").
NR_FULLNESS_GROUPS = 12
ZS_INUSE_RATIO_0 = 0
ZS_INUSE_RATIO_10 = 1
ZS_INUSE_RATIO_99 = 10
ZS_INUSE_RATIO_100 = 11
#: Mask of the groups malloc may take from (0..99, not 100).
_ALLOC_GROUPS = (1 << ZS_INUSE_RATIO_100) - 1
_SLOT_MASK = 0xFFFFFFFF
#: A handle is ``generation << 32 | slot``: 40 bits.  The object header word
#: is ``(size << 40 | handle) << 1 | 1``: the kernel's tagged handle, with the
#: allocation size in bits the kernel leaves unused (its handles are pointers).
_HANDLE_BITS = 40
_HANDLE_MASK = (1 << _HANDLE_BITS) - 1
#: 8 generation bits: a stale handle is refused unless its slot was reused
#: exactly a multiple of 256 times since
_GEN_MASK = 0xFF

#: highest set bit of a group mask: the fullest non-empty group malloc may use
_HIGHEST_GROUP = [-1] + [m.bit_length() - 1 for m in range(1, 1 << ZS_INUSE_RATIO_100)]

_word = Struct("<q")
_unpack_word = _word.unpack_from
_pack_word = _word.pack_into


def _flat(data) -> memoryview:
    """``data`` as a flat byte view (so ``len`` counts bytes), or TypeError."""
    try:
        mv = memoryview(data)
    except TypeError:
        raise TypeError(f"data must be a bytes-like object, not {type(data).__name__}") from None
    if mv.ndim != 1 or mv.itemsize != 1 or mv.format not in ("B", "b", "c"):
        try:
            mv = mv.cast("B")
        except (TypeError, ValueError):  # not C-contiguous
            mv = memoryview(mv.tobytes())
    return mv


def _fullness_table(objs: int) -> bytes:
    """Fullness group for each inuse count 0..objs (``get_fullness_group``)."""
    groups = [ZS_INUSE_RATIO_0]
    for inuse in range(1, objs):
        # Integer division would put 1 of 127 objects at 0%; the +1 keeps such
        # a zspage out of the empty group.
        groups.append(100 * inuse // objs // 10 + 1)
    groups.append(ZS_INUSE_RATIO_100)
    if objs == 1:
        groups = [ZS_INUSE_RATIO_0, ZS_INUSE_RATIO_100]
    return bytes(groups)


class _SizeClass:
    """Per-class state: fullness lists and the two object counters."""

    __slots__ = ("info", "index", "size", "pages_per_zspage", "objs_per_zspage",
                 "huge", "heads", "counts", "mask", "obj_allocated", "obj_used",
                 "group_of_inuse")

    def __init__(self, info: SizeClassInfo) -> None:
        self.info = info
        self.index = info.index
        self.size = info.size
        self.pages_per_zspage = info.pages_per_zspage
        self.objs_per_zspage = info.objs_per_zspage
        self.huge = info.huge
        self.heads = [-1] * NR_FULLNESS_GROUPS  # list head zspage id per group
        self.counts = [0] * NR_FULLNESS_GROUPS  # zspages per group (class stats)
        self.mask = 0  # bit g set <=> group g is non-empty
        self.obj_allocated = 0  # ZS_OBJS_ALLOCATED: capacity of all zspages
        self.obj_used = 0  # ZS_OBJS_INUSE
        self.group_of_inuse = _fullness_table(info.objs_per_zspage)

    def can_compact(self) -> int:
        """``zs_can_compact``: pages a perfect packing would free."""
        wasted = self.obj_allocated - self.obj_used
        if wasted <= 0:
            return 0
        return wasted // self.objs_per_zspage * self.pages_per_zspage


@dataclass(frozen=True, slots=True)
class ClassStats:
    """One row of debugfs ``zsmalloc/<pool>/classes``."""

    index: int
    size: int
    fullness: tuple[int, ...]
    """zspages in the groups 10%, 20%, ..., 90%, 99%, 100% (11 values)."""
    obj_allocated: int
    obj_used: int
    pages_used: int
    pages_per_zspage: int
    objs_per_zspage: int
    freeable: int
    zspages: int
    """All zspages of the class, the empty group included."""

    @property
    def free_slots(self) -> int:
        return self.obj_allocated - self.obj_used


class Pool(PoolBase):
    """zsmalloc on real memory (``zs_create_pool``).

    ``malloc`` returns an opaque int handle that stays valid until ``free``,
    whatever compaction or page migration does to the object.
    """

    name = "zsmalloc"
    supports_compaction = True

    def __init__(self, chain_size: int = 8, *, max_pages: int | None = None,
                 auto_compact: bool = False, compact_threshold: int = 256,
                 shrinker_interval: int = 1024) -> None:
        """Create a pool.

        ``chain_size`` is ``CONFIG_ZSMALLOC_CHAIN_SIZE`` (1..16, Linux default 8).
        ``max_pages`` caps the frames the pool may hold (None: unlimited).
        ``auto_compact`` turns on the shrinker-style trigger: every
        ``shrinker_interval`` frees the pool counts its freeable pages (the
        shrinker's *count*) and compacts when they reach ``compact_threshold``.
        """
        geo = Geometry(chain_size)
        self.geometry = geo
        self.chain_size = chain_size
        self.max_alloc_size = geo.max_alloc_size
        self.huge_class_size = geo.huge_class_size
        self._classes = [_SizeClass(info) for info in geo.classes]
        by_index = {c.index: c for c in self._classes}
        self._class_by_index = [by_index[info.index] for info in geo.class_of_index]
        # payload size -> class, the handle header added as zs_malloc does
        self._cls_of_size: list[_SizeClass] = [self._class_by_index[0]] + [
            self._class_by_index[geo.class_index(n + ZS_HANDLE_SIZE)]
            for n in range(1, geo.max_alloc_size + 1)]

        # the same, as tables for _locate_locked: class size, payload offset
        self._np_class_size = np.array([c.size for c in self._cls_of_size], dtype=np.int64)
        self._np_hdr = np.array([0 if c.huge else ZS_HANDLE_SIZE for c in self._cls_of_size],
                                dtype=np.int64)

        self._arena = Arena(max_frames=max_pages)
        self._mm = self._arena.mm
        self._lock = threading.Lock()
        self._compacting = threading.Lock()  # compaction_in_progress

        self._hobj = array("q", [-1])  # slot 0 is never used: no handle is 0
        self._hgen = array("B", [0])
        self._hfree = array("i")

        self._zs_class = array("H")
        self._zs_inuse = array("h")
        self._zs_freeobj = array("h")
        self._zs_bump = array("h")
        self._zs_fg = array("b")
        self._zs_next = array("i")
        self._zs_prev = array("i")
        # the page chains: zspage z's pfns are _pagelist[_zs_pbase[z]:][:pages];
        # freed runs are reused by length (1..chain_size pages)
        self._zs_pbase = array("i")
        self._pagelist = array("i")
        self._pagelist_free = [array("i") for _ in range(chain_size + 1)]
        # A huge object has no header; its header word lives in the descriptor
        # (the kernel keeps the handle in page->index).
        self._zs_huge_hdr = array("q")
        self._zs_free_ids = array("i")

        self._frame_zspage = array("i")
        self._frame_next = array("i")

        self._pages_allocated = 0
        self._pages_compacted = 0
        #: zmem's own counters (the kernel has none): objects and bytes compaction moved
        self.objects_moved = 0
        self.bytes_moved = 0
        self._build_fastpaths()

        self.auto_compact = auto_compact
        self.compact_threshold = compact_threshold
        self.shrinker_interval = max(1, shrinker_interval)
        self._shrinker_countdown = self.shrinker_interval

    # ------------------------------------------------------------------
    # public API

    @property
    def size_classes(self) -> tuple[SizeClassInfo, ...]:
        """The distinct classes, ascending (``.index .size .pages_per_zspage .objs_per_zspage``)."""
        return self.geometry.classes

    @property
    def total_pages(self) -> int:
        """``zs_get_total_pages``: pages in all zspages, fragmentation included."""
        return self._pages_allocated

    @property
    def pages_compacted(self) -> int:
        """``zs_pool_stats().pages_compacted``: cumulative pages freed by compaction."""
        return self._pages_compacted

    @property
    def objects(self) -> int:
        """Objects currently allocated."""
        return sum(c.obj_used for c in self._classes)

    @property
    def lock(self) -> threading.Lock:
        """The pool lock.  A front-end that owns the pool (zram) holds it around
        its own table updates and calls the ``*_locked`` entry points."""
        return self._lock

    def lookup_class_index(self, size: int) -> int:
        """``zs_lookup_class_index``: the resolved class for ``size`` (no header added)."""
        return self.geometry.lookup_class_index(size)

    def class_size_for(self, size: int) -> int:
        """Slot size an allocation of ``size`` bytes occupies."""
        self._check_size(size)
        return self._cls_of_size[size].size

    def malloc(self, size: int) -> int:
        """``zs_malloc``: allocate ``size`` bytes (1..4096); return the handle."""
        self._check_size(size)
        with self._lock:
            return self._store_locked(None, size)

    def free(self, handle: int) -> None:
        """``zs_free``: release the object; the handle becomes invalid."""
        with self._lock:
            self._free_locked(handle)
        if self.auto_compact:
            self._shrinker_tick(1)

    def take(self, handle: int) -> bytes:
        """Read the whole object and free it, under one lock hold."""
        with self._lock:
            data = self._read_locked(handle)
            self._free_locked(handle)
        if self.auto_compact:
            self._shrinker_tick(1)
        return data

    def write(self, handle: int, data) -> None:
        """``zs_obj_write``: copy ``data`` to the start of the object."""
        if type(data) is not bytes:
            data = _flat(data)
        with self._lock:
            slot = self._slot(handle)
            n = len(data)
            size, c = self._size_class(slot)
            if n > size:
                raise WriteTooLargeError(
                    f"write of {n} bytes to handle {handle:#x} allocated with {size} bytes")
            self._write_obj(self._hobj[slot], c, data, n)

    def read(self, handle: int, length: int | None = None) -> bytes:
        """A copy of the object (its allocated size, or its first ``length`` bytes)."""
        if length is not None and (type(length) is not int or length < 0):
            raise ValueError(f"length must be a non-negative int, got {length!r}")
        with self._lock:
            return self._read_locked(handle, -1 if length is None else length)

    def read_into(self, handle: int, buf, length: int | None = None) -> int:
        """Copy the object into ``buf`` (a writable buffer) without an intermediate copy."""
        out = memoryview(buf).cast("B")
        with self._lock:
            slot = self._slot(handle)
            size, c = self._size_class(slot)
            n = size if length is None else self._check_length(length, size, handle)
            if len(out) < n:
                raise ValueError(f"buffer of {len(out)} bytes is too small for {n} bytes")
            pfn, off, a = self._payload(self._hobj[slot], c)
            view = memoryview(self._mm)
            try:
                if off + n <= PAGE_SIZE:
                    out[:n] = view[a:a + n]
                else:
                    n1 = PAGE_SIZE - off
                    b = self._frame_next[pfn] << PAGE_SHIFT
                    out[:n1] = view[a:a + n1]
                    out[n1:n] = view[b:b + n - n1]
            finally:
                view.release()
            return n

    def size_of(self, handle: int) -> int:
        """The size the object was allocated with."""
        with self._lock:
            return self._size_class(self._slot(handle))[0]

    def store(self, data) -> int:
        """``malloc`` and ``write`` of a bytes-like object under one lock hold."""
        if type(data) is not bytes:
            data = _flat(data)
        n = len(data)
        if not 0 < n <= self.max_alloc_size:
            self._check_size(n)  # raises the precise error
        with self._lock:
            return self._store_locked(data, n)

    def store_many(self, items) -> list[int]:
        """``store`` each item; one lock hold for the whole batch."""
        items = [d if type(d) is bytes else _flat(d) for d in items]
        for d in items:
            self._check_size(len(d))
        out: list[int] = []
        store = self._store_locked
        with self._lock:
            try:
                for d in items:
                    out.append(store(d, len(d)))
            except BaseException:
                # all or nothing: a batch that fails midway (pool limit) frees
                # what it stored, so no handle is lost
                for h in out:
                    self._free_locked(h)
                raise
        return out

    def free_many(self, handles) -> None:
        """``free`` each handle; one lock hold for the batch.

        Every handle is validated before any is freed, so a bad handle in the
        batch frees nothing.
        """
        handles = list(handles)
        with self._lock:
            seen = set()
            for h in handles:
                self._slot(h, True)
                if h in seen:
                    raise DoubleFreeError(f"handle {h:#x} appears twice in one free_many")
                seen.add(h)
            for h in handles:
                self._free_locked(h)
        if self.auto_compact:
            self._shrinker_tick(len(handles))

    def compact(self) -> int:
        """``zs_compact``: compact every class, largest first; return pages freed.

        Returns 0 at once if another compaction is running, as the kernel does.
        """
        if not self._compacting.acquire(blocking=False):
            return 0
        try:
            freed = 0
            for c in reversed(self._classes):
                freed += self._compact_class(c)
            with self._lock:
                self._pages_compacted += freed
            return freed
        finally:
            self._compacting.release()

    def shrinker_count(self) -> int:
        """The shrinker's *count*: pages compaction could free (sum of ``freeable``)."""
        with self._lock:
            return sum(c.can_compact() for c in self._classes)

    def migrate_page(self, pfn: int) -> int:
        """Move one page of a zspage to a new frame, as page migration does.

        Handles of objects that start in the page are rewritten; handle holders
        see nothing.  Returns the new pfn.
        """
        with self._lock:
            if not 0 <= pfn < len(self._frame_zspage) or self._frame_zspage[pfn] < 0:
                raise ValueError(f"pfn {pfn} is not a page of this pool")
            z = self._frame_zspage[pfn]
            c = self._class_by_index[self._zs_class[z]]
            base = self._zs_pbase[z]
            pages = self._pagelist
            k = next(i for i in range(c.pages_per_zspage) if pages[base + i] == pfn)
            # the huge object's owner is found by its location, so before it moves
            huge_owner = self._huge_owner(z) if c.huge and self._zs_inuse[z] else -1
            new = self._alloc_frames(1)[0]
            mm = self._mm
            mm[new << PAGE_SHIFT:(new + 1) << PAGE_SHIFT] = mm[pfn << PAGE_SHIFT:(pfn + 1) << PAGE_SHIFT]
            pages[base + k] = new
            self._frame_zspage[new] = z
            self._frame_next[new] = self._frame_next[pfn]
            if k > 0:
                self._frame_next[pages[base + k - 1]] = new
            # Objects starting in this page carry its pfn in their location.
            size = c.size
            first = -(-(k << PAGE_SHIFT) // size)
            idx = first
            hobj = self._hobj
            # slots at or above bump were never allocated; their bytes are stale
            while idx < self._zs_bump[z] and idx * size < (k + 1) << PAGE_SHIFT:
                if c.huge:
                    owner = huge_owner
                else:
                    hdr = _unpack_word(mm, (new << PAGE_SHIFT) + ((idx * size) & PAGE_MASK))[0]
                    owner = (hdr >> 1) & _HANDLE_MASK if hdr & 1 else -1
                if owner >= 0:
                    hobj[owner & _SLOT_MASK] = (new << OBJ_INDEX_BITS) | idx
                idx += 1
            self._frame_zspage[pfn] = -1
            self._arena.free_frames([pfn])
            return new

    def class_stats(self) -> list[ClassStats]:
        """Per distinct class, the columns of debugfs ``classes``."""
        with self._lock:
            return [self._class_stat(c) for c in self._classes]

    def format_classes(self) -> str:
        """The text of debugfs ``/sys/kernel/debug/zsmalloc/<pool>/classes``."""
        rows = self.class_stats()
        heads = ["10%", "20%", "30%", "40%", "50%", "60%", "70%", "80%", "90%", "99%", "100%"]
        out = [" %5s %5s " % ("class", "size") + "".join("%9s " % h for h in heads)
               + "%13s %10s %10s %16s %8s" % ("obj_allocated", "obj_used", "pages_used",
                                              "pages_per_zspage", "freeable")]
        totals = [0] * 11
        t_alloc = t_used = t_pages = t_free = 0
        for r in rows:
            out.append(" %5u %5u " % (r.index, r.size) + "".join("%9u " % v for v in r.fullness)
                       + "%13u %10u %10u %16d %8u" % (r.obj_allocated, r.obj_used, r.pages_used,
                                                      r.pages_per_zspage, r.freeable))
            totals = [a + b for a, b in zip(totals, r.fullness)]
            t_alloc += r.obj_allocated
            t_used += r.obj_used
            t_pages += r.pages_used
            t_free += r.freeable
        out.append("")
        out.append(" %5s %5s " % ("Total", "") + "".join("%9u " % v for v in totals)
                   + "%13u %10u %10u %16s %8u" % (t_alloc, t_used, t_pages, "", t_free))
        return "\n".join(out) + "\n"

    def metadata_bytes(self) -> int:
        """Bytes of all bookkeeping arrays (allocated capacity, not just used)."""
        total = self._arena.metadata_bytes()
        for a in (self._hobj, self._zs_huge_hdr, self._hgen, self._hfree, self._zs_class,
                  self._zs_inuse, self._zs_freeobj, self._zs_bump, self._zs_fg,
                  self._zs_next, self._zs_prev, self._zs_pbase, self._pagelist, self._zs_free_ids,
                  self._frame_zspage, self._frame_next):
            total += a.buffer_info()[1] * a.itemsize
        return total

    @property
    def frames_in_use(self) -> int:
        """Frames the arena holds; equals ``total_pages``."""
        return self._arena.frames_in_use

    def close(self) -> None:
        with self._lock:
            self._arena.close()

    def __repr__(self) -> str:
        return (f"<zmem.Pool zsmalloc chain_size={self.chain_size} objects={self.objects} "
                f"pages={self._pages_allocated}>")

    # ------------------------------------------------------------------
    # validation

    def _check_size(self, size) -> None:
        if type(size) is not int:
            if not isinstance(size, int):
                raise TypeError(f"size must be an int, not {type(size).__name__}")
        if size <= 0:
            raise InvalidSizeError(f"cannot allocate {size} bytes: size must be at least 1")
        if size > self.max_alloc_size:
            raise ObjectTooLargeError(
                f"cannot allocate {size} bytes: the largest object is {self.max_alloc_size}")

    def _slot(self, handle, freeing: bool = False) -> int:
        """Validate a handle (lock held); return its table slot."""
        if type(handle) is not int:
            raise InvalidHandleError(f"handle must be an int, not {type(handle).__name__}")
        slot = handle & _SLOT_MASK
        if handle <= 0 or slot >= len(self._hobj) or slot == 0 or handle >> 32 > _GEN_MASK:
            raise InvalidHandleError(f"unknown handle {handle:#x}")
        gen = handle >> 32
        if self._hobj[slot] < 0:
            # A free slot's generation was bumped when its last handle was freed:
            # gen + 1 names exactly that handle; anything else was never issued
            # (or freed long ago).
            if self._hgen[slot] != (gen + 1) & _GEN_MASK:
                raise InvalidHandleError(f"unknown handle {handle:#x}")
            if freeing:
                raise DoubleFreeError(f"double free of handle {handle:#x}: it was already freed")
            raise InvalidHandleError(f"handle {handle:#x} was freed")
        if self._hgen[slot] != gen:
            raise InvalidHandleError(f"stale handle {handle:#x}: it was freed and its slot reused")
        return slot

    def _size_class(self, slot: int) -> tuple[int, _SizeClass]:
        """Allocation size and class of a live slot (lock held)."""
        obj = self._hobj[slot]
        pfn = obj >> OBJ_INDEX_BITS
        z = self._frame_zspage[pfn]
        c = self._class_by_index[self._zs_class[z]]
        if c.huge:
            return self._zs_huge_hdr[z] >> (_HANDLE_BITS + 1), c
        off = ((obj & OBJ_INDEX_MASK) * c.size) & PAGE_MASK
        return _unpack_word(self._mm, (pfn << PAGE_SHIFT) + off)[0] >> (_HANDLE_BITS + 1), c

    @staticmethod
    def _check_length(length: int, size: int, handle: int) -> int:
        if not 0 <= length <= size:
            raise ValueError(f"cannot read {length} bytes of handle {handle:#x} "
                             f"allocated with {size} bytes")
        return length

    # ------------------------------------------------------------------
    # fullness lists (insert_zspage / remove_zspage), lock held

    def _insert_zspage(self, c: _SizeClass, z: int, fg: int) -> None:
        head = c.heads[fg]
        self._zs_prev[z] = -1
        self._zs_next[z] = head
        if head >= 0:
            self._zs_prev[head] = z
        c.heads[fg] = z
        c.counts[fg] += 1
        c.mask |= 1 << fg
        self._zs_fg[z] = fg

    def _remove_zspage(self, c: _SizeClass, z: int) -> None:
        fg = self._zs_fg[z]
        prev = self._zs_prev[z]
        nxt = self._zs_next[z]
        if prev >= 0:
            self._zs_next[prev] = nxt
        else:
            c.heads[fg] = nxt
            if nxt < 0:
                c.mask &= ~(1 << fg)
        if nxt >= 0:
            self._zs_prev[nxt] = prev
        c.counts[fg] -= 1
        self._zs_fg[z] = -1

    # ------------------------------------------------------------------
    # zspages (alloc_zspage / free_zspage), lock held

    def _alloc_frames(self, n: int) -> list[int]:
        arena = self._arena
        try:
            pfns = arena.alloc_frames(n)
        except PoolExhaustedError as exc:
            raise PoolExhaustedError(f"pool cannot grow: {exc}") from None
        fz = self._frame_zspage
        top = arena.top
        if len(fz) < top:
            # page descriptors only for frames ever handed out, grown by 1/8
            grow = max(top - len(fz), len(fz) >> 3, 64)
            fz.extend(array("i", [-1]) * grow)
            self._frame_next.extend(array("i", [-1]) * grow)
        return pfns

    def _grow_handles(self) -> None:
        """Add a chunk of free handle slots (the kernel's handle slab grows the same way)."""
        old = len(self._hobj)
        k = max(256, old >> 3)
        self._hobj.extend(array("q", [-1]) * k)
        self._hgen.extend(array("B", bytes(k)))
        self._hfree.extend(range(old + k - 1, old - 1, -1))

    def _grow_zspage_ids(self) -> None:
        """Add a chunk of free zspage descriptors (amortises array growth)."""
        old = len(self._zs_class)
        k = max(64, old >> 3)
        self._zs_class.extend(array("H", bytes(2 * k)))
        self._zs_huge_hdr.extend(array("q", bytes(8 * k)))
        for a in (self._zs_inuse, self._zs_freeobj, self._zs_bump, self._zs_next, self._zs_prev):
            a.extend(array(a.typecode, bytes(a.itemsize * k)))
        self._zs_fg.extend(array("b", [-1]) * k)
        self._zs_pbase.extend(array("i", [-1]) * k)
        # LIFO: the lowest new id is handed out first
        self._zs_free_ids.extend(range(old + k - 1, old - 1, -1))

    def _alloc_zspage(self, c: _SizeClass) -> int:
        """``alloc_zspage``: frames chained in order, an empty free list (see bump)."""
        pfns = self._alloc_frames(c.pages_per_zspage)
        ids = self._zs_free_ids
        if not ids:
            self._grow_zspage_ids()
        z = ids.pop()
        self._zs_class[z] = c.index
        self._zs_inuse[z] = 0
        self._zs_freeobj[z] = 0
        self._zs_bump[z] = 0
        free_runs = self._pagelist_free[len(pfns)]
        if free_runs:
            base = free_runs.pop()
            self._pagelist[base:base + len(pfns)] = array("i", pfns)
        else:
            base = len(self._pagelist)
            self._pagelist.extend(pfns)
        self._zs_pbase[z] = base
        fz = self._frame_zspage
        fn = self._frame_next
        prev = -1
        for pfn in pfns:
            fz[pfn] = z
            if prev >= 0:
                fn[prev] = pfn
            prev = pfn
        fn[prev] = -1
        return z

    def _free_zspage(self, c: _SizeClass, z: int) -> None:
        """Release an empty zspage (already off its list) and its frames."""
        base = self._zs_pbase[z]
        pfns = self._pagelist[base:base + c.pages_per_zspage].tolist()
        self._pagelist_free[c.pages_per_zspage].append(base)
        fz = self._frame_zspage
        for pfn in pfns:
            fz[pfn] = -1
        self._arena.free_frames(pfns)
        self._zs_free_ids.append(z)
        c.obj_allocated -= c.objs_per_zspage
        self._pages_allocated -= c.pages_per_zspage

    # ------------------------------------------------------------------
    # objects (obj_malloc / obj_free), lock held

    def _obj_malloc(self, c: _SizeClass, z: int, hdr: int) -> int:
        """Pop the zspage's free-list head, write header word ``hdr``; return the location."""
        idx = self._zs_freeobj[z]
        off = idx * c.size
        pfn = self._pagelist[self._zs_pbase[z] + (off >> PAGE_SHIFT)]
        a = (pfn << PAGE_SHIFT) + (off & PAGE_MASK)
        if idx >= self._zs_bump[z]:
            # From the untouched suffix of the initial 0..N-1 chain.
            self._zs_bump[z] = idx + 1
            nxt = idx + 1 if idx + 1 < c.objs_per_zspage else -1
        elif c.huge:
            nxt = -1
        else:
            nxt = _unpack_word(self._mm, a)[0] >> 1
        self._zs_freeobj[z] = nxt
        if not c.huge:
            _pack_word(self._mm, a, hdr)
        self._zs_inuse[z] += 1
        return (pfn << OBJ_INDEX_BITS) | idx

    def _obj_free(self, c: _SizeClass, obj: int) -> int:
        """Push the object on its zspage's free list; return the zspage id."""
        pfn = obj >> OBJ_INDEX_BITS
        idx = obj & OBJ_INDEX_MASK
        z = self._frame_zspage[pfn]
        if not c.huge:
            _pack_word(self._mm, (pfn << PAGE_SHIFT) + ((idx * c.size) & PAGE_MASK),
                       self._zs_freeobj[z] << 1)
        self._zs_freeobj[z] = idx
        self._zs_inuse[z] -= 1
        return z

    def _build_fastpaths(self) -> None:
        """Bind the per-object paths as closures over the metadata arrays.

        malloc, free and read run once per stored page, so they are written
        for CPython: every array is a closure cell (no attribute lookups), the
        common cases are inline, the rare ones (new zspage, empty zspage) call
        the methods above.  The arrays are only ever mutated in place, so the
        cells stay valid for the pool's life.
        """
        mm = self._mm
        hobj, hgen, hfree = self._hobj, self._hgen, self._hfree
        zs_class, zs_huge_hdr = self._zs_class, self._zs_huge_hdr
        class_by_index = self._class_by_index
        zs_freeobj, zs_bump, zs_inuse = self._zs_freeobj, self._zs_bump, self._zs_inuse
        zs_fg, zs_next, zs_prev = self._zs_fg, self._zs_next, self._zs_prev
        zs_pbase, pagelist = self._zs_pbase, self._pagelist
        frame_zspage, frame_next = self._frame_zspage, self._frame_next
        cls_of_size = self._cls_of_size
        unpack, pack = _unpack_word, _pack_word
        alloc_zspage, free_zspage = self._alloc_zspage, self._free_zspage
        insert, remove = self._insert_zspage, self._remove_zspage
        check_slot = self._slot
        pool = self
        highest = _HIGHEST_GROUP
        grow_handles = self._grow_handles

        def store_locked(data, n: int) -> int:
            """zs_malloc(n) + zs_obj_write(data); ``data`` None only allocates."""
            c = cls_of_size[n]
            g = highest[c.mask & _ALLOC_GROUPS]  # find_get_zspage: "99" down to "0"
            if g >= 0:
                z = c.heads[g]
            else:
                z = alloc_zspage(c)
            if not hfree:
                grow_handles()
            slot = hfree.pop()
            handle = (hgen[slot] << 32) | slot
            # obj_malloc: pop the free-list head
            idx = zs_freeobj[z]
            size = c.size
            off = idx * size
            pfn = pagelist[zs_pbase[z] + (off >> PAGE_SHIFT)]
            off &= PAGE_MASK
            a = (pfn << PAGE_SHIFT) + off
            if idx >= zs_bump[z]:
                zs_bump[z] = idx + 1
                zs_freeobj[z] = idx + 1 if idx + 1 < c.objs_per_zspage else -1
            else:
                zs_freeobj[z] = unpack(mm, a)[0] >> 1
            inuse = zs_inuse[z] + 1
            zs_inuse[z] = inuse
            fg = c.group_of_inuse[inuse]
            if g < 0:
                insert(c, z, fg)
                pool._pages_allocated += c.pages_per_zspage
                c.obj_allocated += c.objs_per_zspage
            elif fg != g:
                # fix_fullness_group; z is the head of group g, so unlinking is O(1)
                heads = c.heads
                nxt = zs_next[z]
                heads[g] = nxt
                if nxt >= 0:
                    zs_prev[nxt] = -1
                else:
                    c.mask &= ~(1 << g)
                counts = c.counts
                counts[g] -= 1
                head = heads[fg]
                zs_next[z] = head
                if head >= 0:
                    zs_prev[head] = z
                heads[fg] = z
                counts[fg] += 1
                c.mask |= 1 << fg
                zs_fg[z] = fg
            hobj[slot] = (pfn << OBJ_INDEX_BITS) | idx
            c.obj_used += 1
            if c.huge:
                zs_huge_hdr[z] = (((n << _HANDLE_BITS) | handle) << 1) | 1
                if data is not None:
                    mm[a:a + n] = data
                return handle
            pack(mm, a, (((n << _HANDLE_BITS) | handle) << 1) | 1)
            if data is not None:
                a += ZS_HANDLE_SIZE
                off += ZS_HANDLE_SIZE
                if off + n <= PAGE_SIZE:
                    mm[a:a + n] = data
                else:
                    n1 = PAGE_SIZE - off
                    b = frame_next[pfn] << PAGE_SHIFT
                    mv = memoryview(data)
                    mm[a:a + n1] = mv[:n1]
                    mm[b:b + n - n1] = mv[n1:]
            return handle

        def free_locked(handle: int) -> None:
            """zs_free(handle), validating it first."""
            if type(handle) is not int:
                check_slot(handle, True)
            slot = handle & _SLOT_MASK
            if handle <= 0 or slot >= len(hobj) or hgen[slot] != handle >> 32 or hobj[slot] < 0:
                check_slot(handle, True)  # raises the precise error
            obj = hobj[slot]
            pfn = obj >> OBJ_INDEX_BITS
            idx = obj & OBJ_INDEX_MASK
            z = frame_zspage[pfn]
            c = class_by_index[zs_class[z]]
            if not c.huge:
                pack(mm, (pfn << PAGE_SHIFT) + ((idx * c.size) & PAGE_MASK), zs_freeobj[z] << 1)
            zs_freeobj[z] = idx
            inuse = zs_inuse[z] - 1
            zs_inuse[z] = inuse
            c.obj_used -= 1
            fg = c.group_of_inuse[inuse]
            if fg != zs_fg[z]:
                remove(c, z)
                if fg == ZS_INUSE_RATIO_0:
                    free_zspage(c, z)
                else:
                    insert(c, z, fg)
            hobj[slot] = -1
            hgen[slot] = (hgen[slot] + 1) & _GEN_MASK
            hfree.append(slot)

        def read_locked(handle: int, length: int = -1) -> bytes:
            """A copy of the object (or its first ``length`` bytes), validating the handle."""
            if type(handle) is not int:
                check_slot(handle)
            slot = handle & _SLOT_MASK
            if handle <= 0 or slot >= len(hobj) or hgen[slot] != handle >> 32 or hobj[slot] < 0:
                check_slot(handle)
            obj = hobj[slot]
            pfn = obj >> OBJ_INDEX_BITS
            z = frame_zspage[pfn]
            c = class_by_index[zs_class[z]]
            if c.huge:
                n = zs_huge_hdr[z] >> (_HANDLE_BITS + 1)
            else:
                n = unpack(mm, (pfn << PAGE_SHIFT) + (((obj & OBJ_INDEX_MASK) * c.size) & PAGE_MASK))[0]
                n >>= _HANDLE_BITS + 1
            if length < 0 or length == n:
                return read_sized_locked(handle, n)
            if length > n:
                raise ValueError(f"cannot read {length} bytes of handle {handle:#x} "
                                 f"allocated with {n} bytes")
            return read_sized_locked(handle, n)[:length]

        def read_sized_locked(handle: int, n: int) -> bytes:
            """The object of a live ``handle`` allocated with ``n`` bytes, unchecked.

            For a front-end that owns the pool and keeps each object's size
            (zram): the class comes from the size, no validation is done.
            """
            obj = hobj[handle & _SLOT_MASK]
            c = cls_of_size[n]
            pfn = obj >> OBJ_INDEX_BITS
            off = ((obj & OBJ_INDEX_MASK) * c.size) & PAGE_MASK
            if not c.huge:
                off += ZS_HANDLE_SIZE
            a = (pfn << PAGE_SHIFT) + off
            if off + n <= PAGE_SIZE:
                return mm[a:a + n]
            n1 = PAGE_SIZE - off
            b = frame_next[pfn] << PAGE_SHIFT
            return mm[a:a + n1] + mm[b:b + n - n1]

        self._store_locked = store_locked
        self._free_locked = free_locked
        self._read_locked = read_locked
        self._read_sized_locked = read_sized_locked

    def _locate_locked(self, handles, sizes) -> tuple:
        """Where live objects' payloads are, for many at once (lock held).

        ``handles`` (uint64) and ``sizes`` (their allocated sizes, as a
        front-end that keeps sizes knows them) are numpy arrays; returns int64
        arrays ``(a, n1, b)``: the first ``n1`` bytes are at arena address
        ``a``, the rest of a straddling object at ``b``.  No validation: for a
        front-end that owns the pool, as ``read_sized_locked``.  One numpy
        pass instead of a Python call per object: reads of many pages are
        then a loop of slices and decompressions.
        """
        slots = (handles & _SLOT_MASK).astype(np.intp)
        obj = np.frombuffer(self._hobj, dtype=np.int64)[slots]
        pfn = obj >> OBJ_INDEX_BITS
        off = ((obj & OBJ_INDEX_MASK) * self._np_class_size[sizes]) & PAGE_MASK
        off += self._np_hdr[sizes]
        a = (pfn << PAGE_SHIFT) + off
        n1 = np.minimum(sizes, PAGE_SIZE - off)
        b = np.zeros_like(a)
        over = n1 < sizes
        if over.any():
            nxt = np.frombuffer(self._frame_next, dtype=np.int32)
            b[over] = nxt[pfn[over]].astype(np.int64) << PAGE_SHIFT
        return a, n1, b

    @staticmethod
    def _payload(obj: int, c: _SizeClass) -> tuple[int, int, int]:
        """(pfn, in-page offset, arena address) of an object's payload."""
        pfn = obj >> OBJ_INDEX_BITS
        off = ((obj & OBJ_INDEX_MASK) * c.size) & PAGE_MASK
        if not c.huge:
            off += ZS_HANDLE_SIZE
        return pfn, off, (pfn << PAGE_SHIFT) + off

    def _write_obj(self, obj: int, c: _SizeClass, data, n: int) -> None:
        pfn, off, a = self._payload(obj, c)
        mm = self._mm
        if off + n <= PAGE_SIZE:
            mm[a:a + n] = data
        else:
            n1 = PAGE_SIZE - off
            b = self._frame_next[pfn] << PAGE_SHIFT
            mv = memoryview(data)
            mm[a:a + n1] = mv[:n1]
            mm[b:b + n - n1] = mv[n1:n]

    # ------------------------------------------------------------------
    # compaction

    def _compact_class(self, c: _SizeClass) -> int:
        freed = 0
        while True:
            with self._lock:
                step = self._compact_step(c)
            if step < 0:
                return freed
            freed += step

    def _compact_step(self, c: _SizeClass) -> int:
        """One source zspage of ``__zs_compact``; -1 when the class is done."""
        if not c.can_compact():
            return -1
        dst = self._isolate_dst(c)
        if dst < 0:
            return -1
        src = self._isolate_src(c)
        if src < 0:
            self._putback(c, dst)
            return -1
        self._migrate_zspage(c, src, dst)
        freed = 0
        if self._putback(c, src) == ZS_INUSE_RATIO_0:
            self._remove_zspage(c, src)
            self._free_zspage(c, src)
            freed = c.pages_per_zspage
        # The kernel keeps dst isolated while it is not full and drops the
        # lock only after putting it back; putting it back every step yields
        # the same moves: dst is the head of the fullest non-full group again.
        self._putback(c, dst)
        return freed

    def _isolate_dst(self, c: _SizeClass) -> int:
        for fg in range(ZS_INUSE_RATIO_99, ZS_INUSE_RATIO_0, -1):
            z = c.heads[fg]
            if z >= 0:
                self._remove_zspage(c, z)
                return z
        return -1

    def _isolate_src(self, c: _SizeClass) -> int:
        for fg in range(ZS_INUSE_RATIO_10, ZS_INUSE_RATIO_100):
            z = c.heads[fg]
            if z >= 0:
                self._remove_zspage(c, z)
                return z
        return -1

    def _putback(self, c: _SizeClass, z: int) -> int:
        fg = c.group_of_inuse[self._zs_inuse[z]]
        self._insert_zspage(c, z, fg)
        return fg

    def _migrate_zspage(self, c: _SizeClass, src: int, dst: int) -> None:
        """Move allocated objects of ``src`` into ``dst`` in slot order."""
        mm = self._mm
        size = c.size
        objs = c.objs_per_zspage
        pages = self._pagelist
        base = self._zs_pbase[src]
        hobj = self._hobj
        inuse = self._zs_inuse
        for idx in range(self._zs_bump[src]):
            off = idx * size
            pfn = pages[base + (off >> PAGE_SHIFT)]
            a = (pfn << PAGE_SHIFT) + (off & PAGE_MASK)
            hdr = _unpack_word(mm, a)[0]
            if not hdr & 1:
                continue
            slot = (hdr >> 1) & _SLOT_MASK
            used = hobj[slot]
            new = self._obj_malloc(c, dst, hdr)
            self._copy_slot(c, used, new)
            hobj[slot] = new
            self._obj_free(c, used)
            self.objects_moved += 1
            self.bytes_moved += size
            if inuse[dst] == objs or inuse[src] == 0:
                break

    def _copy_slot(self, c: _SizeClass, src_obj: int, dst_obj: int) -> None:
        """``zs_object_copy``: the whole slot, header included, either side may straddle."""
        size = c.size
        mm = self._mm
        fnext = self._frame_next
        spfn = src_obj >> OBJ_INDEX_BITS
        soff = ((src_obj & OBJ_INDEX_MASK) * size) & PAGE_MASK
        sa = (spfn << PAGE_SHIFT) + soff
        if soff + size <= PAGE_SIZE:
            data = mm[sa:sa + size]
        else:
            n1 = PAGE_SIZE - soff
            sb = fnext[spfn] << PAGE_SHIFT
            data = mm[sa:sa + n1] + mm[sb:sb + size - n1]
        dpfn = dst_obj >> OBJ_INDEX_BITS
        doff = ((dst_obj & OBJ_INDEX_MASK) * size) & PAGE_MASK
        da = (dpfn << PAGE_SHIFT) + doff
        if doff + size <= PAGE_SIZE:
            mm[da:da + size] = data
        else:
            n1 = PAGE_SIZE - doff
            db = fnext[dpfn] << PAGE_SHIFT
            mm[da:da + n1] = data[:n1]
            mm[db:db + size - n1] = data[n1:]

    def _shrinker_tick(self, n: int) -> None:
        self._shrinker_countdown -= n
        if self._shrinker_countdown > 0:
            return
        self._shrinker_countdown = self.shrinker_interval
        if self.shrinker_count() >= self.compact_threshold:
            self.compact()

    # ------------------------------------------------------------------
    # introspection

    def _huge_owner(self, z: int) -> int:
        """Handle of the one object of a huge zspage, or -1."""
        hdr = self._zs_huge_hdr[z]
        return (hdr >> 1) & _HANDLE_MASK if hdr & 1 else -1

    def _live(self, z: int) -> bool:
        """Whether ``z`` names a zspage in use (lock held): every live zspage is on
        a fullness list outside a compaction step, and a freed one on none."""
        return 0 <= z < len(self._zs_class) and self._zs_fg[z] >= 0

    def _class_stat(self, c: _SizeClass) -> ClassStats:
        return ClassStats(
            index=c.index, size=c.size, fullness=tuple(c.counts[1:]),
            obj_allocated=c.obj_allocated, obj_used=c.obj_used,
            pages_used=c.obj_allocated // c.objs_per_zspage * c.pages_per_zspage,
            pages_per_zspage=c.pages_per_zspage, objs_per_zspage=c.objs_per_zspage,
            freeable=c.can_compact(), zspages=sum(c.counts))

    def zspage_of(self, handle: int) -> int:
        """Id of the zspage holding the object now (changes when compaction moves it)."""
        with self._lock:
            obj = self._hobj[self._slot(handle)]
            return self._frame_zspage[obj >> OBJ_INDEX_BITS]

    def zspage_info(self, z: int) -> dict:
        """Class index, pages, objects in use and capacity of zspage ``z``."""
        with self._lock:
            if not self._live(z):
                raise ValueError(f"no live zspage {z}")
            c = self._class_by_index[self._zs_class[z]]
            return {"class": c.index, "size": c.size, "pages": c.pages_per_zspage,
                    "inuse": self._zs_inuse[z], "objs_per_zspage": c.objs_per_zspage,
                    "fullness": self._zs_fg[z]}

    def zspage_pfns(self, z: int) -> list[int]:
        """The frames of zspage ``z`` in chain order."""
        with self._lock:
            if not self._live(z):
                raise ValueError(f"no live zspage {z}")
            base = self._zs_pbase[z]
            n = self._class_by_index[self._zs_class[z]].pages_per_zspage
            return self._pagelist[base:base + n].tolist()

    def zspage_siblings(self, handle: int) -> list[int]:
        """Handles of every object in ``handle``'s zspage, in slot order, taken
        atomically (compaction cannot move anything in between)."""
        with self._lock:
            obj = self._hobj[self._slot(handle)]
            return self._zspage_objects(self._frame_zspage[obj >> OBJ_INDEX_BITS])

    def zspage_objects(self, z: int) -> list[int]:
        """Handles of the objects in zspage ``z`` in slot order (for tests and tools)."""
        with self._lock:
            if not self._live(z):
                raise ValueError(f"no live zspage {z}")
            return self._zspage_objects(z)

    def _zspage_objects(self, z: int) -> list[int]:
        """Handles in a live zspage by scanning slot headers (lock held)."""
        c = self._class_by_index[self._zs_class[z]]
        if c.huge:
            return [self._huge_owner(z)] if self._zs_inuse[z] else []
        out = []
        for idx in range(self._zs_bump[z]):
            off = idx * c.size
            pfn = self._pagelist[self._zs_pbase[z] + (off >> PAGE_SHIFT)]
            hdr = _unpack_word(self._mm, (pfn << PAGE_SHIFT) + (off & PAGE_MASK))[0]
            if hdr & 1:
                out.append((hdr >> 1) & _HANDLE_MASK)
        return out

    def _check_invariants(self) -> None:
        """Cross-check every structure (the kernel's VM_BUG_ONs); for tests."""
        with self._lock:
            total_pages = 0
            live = 0
            for c in self._classes:
                zspages = 0
                inuse_sum = 0
                for fg in range(NR_FULLNESS_GROUPS):
                    z = self._class_heads_walk(c, fg)
                    assert (c.mask >> fg) & 1 == (len(z) > 0), (c.index, fg)
                    assert len(z) == c.counts[fg], (c.index, fg, len(z), c.counts[fg])
                    for zz in z:
                        assert self._zs_fg[zz] == fg
                        assert self._zs_class[zz] == c.index
                        assert c.group_of_inuse[self._zs_inuse[zz]] == fg
                        assert fg != ZS_INUSE_RATIO_0, "empty zspage left on a list"
                        inuse_sum += self._zs_inuse[zz]
                        if not c.huge:
                            assert len(self.__scan(c, zz)) == self._zs_inuse[zz]
                    zspages += len(z)
                assert c.obj_allocated == zspages * c.objs_per_zspage
                assert c.obj_used == inuse_sum
                total_pages += zspages * c.pages_per_zspage
                live += inuse_sum
            assert total_pages == self._pages_allocated == self._arena.frames_in_use
            for slot in range(1, len(self._hobj)):
                obj = self._hobj[slot]
                if obj < 0:
                    continue
                pfn = obj >> OBJ_INDEX_BITS
                z = self._frame_zspage[pfn]
                assert z >= 0
                size, c = self._size_class(slot)
                assert self._zs_class[z] == c.index
                assert self._cls_of_size[size] is c
                if not c.huge:
                    off = ((obj & OBJ_INDEX_MASK) * c.size) & PAGE_MASK
                    hdr = _unpack_word(self._mm, (pfn << PAGE_SHIFT) + off)[0]
                    assert hdr == ((((size << _HANDLE_BITS) | (self._hgen[slot] << 32) | slot) << 1) | 1), slot

    def _class_heads_walk(self, c: _SizeClass, fg: int) -> list[int]:
        out = []
        z = c.heads[fg]
        prev = -1
        while z >= 0:
            assert self._zs_prev[z] == prev
            out.append(z)
            prev = z
            z = self._zs_next[z]
        return out

    def __scan(self, c: _SizeClass, z: int) -> list[int]:
        out = []
        for idx in range(self._zs_bump[z]):
            off = idx * c.size
            pfn = self._pagelist[self._zs_pbase[z] + (off >> PAGE_SHIFT)]
            if _unpack_word(self._mm, (pfn << PAGE_SHIFT) + (off & PAGE_MASK))[0] & 1:
                out.append(idx)
        return out
