"""zram: a compressed RAM block device on a zsmalloc pool (``drivers/block/zram``, Linux 6.18).

The device is an array of 4 KiB slots.  Each slot's state lives in two typed
arrays, as the kernel's ``zram_table_entry``:

  ``_handle[i]``  the pool handle, or the fill word of a same-filled page, or
                  the backing-file block of a written-back page; 0 = empty
  ``_flags[i]``   low ``ZRAM_FLAG_SHIFT`` (13) bits: stored object size;
                  above them the flags of :class:`SlotFlag` and two bits of
                  compression priority
  ``_actime[i]``  last access time (only with ``track_access_time``, the
                  kernel's ``CONFIG_ZRAM_TRACK_ENTRY_ACTIME``)

Write path per page (``zram_write_page``): a page of one repeated 8-byte word
is stored as that word with no allocation; otherwise it is compressed, and a
result of ``huge_class_size`` bytes or more is stored raw (a *huge* page).  The
new object is allocated and the ``mem_limit`` checked *before* the slot's old
content is freed: that order decides which zspages empty out, and so
``mem_used_total``.  A write refused by the limit leaves the slot as it was.

Locking: the device uses its pool's lock for the slot table too (the pool
belongs to the device, as in the kernel).  Compression runs outside it, and
a batch of compressed pages is committed under one hold.  Reads hold it for
a window of pages, locate every object in one numpy pass and decompress
them in place, as ``zram_read_page`` decompresses under the slot lock.
"""

from __future__ import annotations

import contextlib
import enum
import os
import re
import threading
import time
import warnings
from array import array
from collections.abc import Callable, Mapping

import numpy as np

from ._classes import PAGE_SIZE
from ._compress import Codec, get_codec
from ._errors import (
    BackingDeviceError,
    DecompressionError,
    DeviceBusyError,
    MemLimitError,
    OutOfRangeError,
    UnsupportedAlgorithmError,
    ZmemError,
)
from ._zram_stats import BdStat, DebugStat, IoStat, MmStat
from ._zsmalloc import Pool

__all__ = ["Zram", "SlotFlag", "parse_size", "parse_algorithm_params"]

PAGE_SHIFT = 12
ZRAM_FLAG_SHIFT = PAGE_SHIFT + 1
_SIZE_MASK = (1 << ZRAM_FLAG_SHIFT) - 1
ZRAM_MAX_COMPS = 4
_PRIO_SHIFT = ZRAM_FLAG_SHIFT + 6
_PRIO_MASK = 3 << _PRIO_SHIFT


class SlotFlag(enum.IntFlag):
    """Slot flags above the size bits, in the kernel's order (ENTRY_LOCK has no bit here:
    zmem's slot lock is the device lock)."""

    SAME = 1 << ZRAM_FLAG_SHIFT  # same-filled page: handle holds the word
    WB = 1 << (ZRAM_FLAG_SHIFT + 1)  # written back: handle holds the block
    PP_SLOT = 1 << (ZRAM_FLAG_SHIFT + 2)  # picked for post-processing
    HUGE = 1 << (ZRAM_FLAG_SHIFT + 3)  # stored uncompressed
    IDLE = 1 << (ZRAM_FLAG_SHIFT + 4)
    INCOMPRESSIBLE = 1 << (ZRAM_FLAG_SHIFT + 5)  # recompression gave up on it


_SAME, _WB, _PP, _HUGE, _IDLE, _INCOMP = (int(f) for f in SlotFlag)
#: a slot with any of these is not a plain object of the primary codec
_NOT_PLAIN = _SAME | _WB | _HUGE | _PRIO_MASK
# zram_free_page clears these whatever the slot held
_CLEAR_ON_FREE = _IDLE | _INCOMP | _PP | _PRIO_MASK

_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)\s*$")


def parse_size(value: int | str) -> int:
    """Bytes from an int or a string with the kernel's K/M/G/T suffixes (``memparse``)."""
    if isinstance(value, bool):
        raise ValueError("size must be an int or a string like '512M'")
    if isinstance(value, int):
        return value
    m = _SIZE_RE.match(str(value))
    if not m:
        raise ValueError(f"cannot parse size {value!r}: use bytes or a K/M/G/T suffix")
    shift = {"": 0, "k": 10, "m": 20, "g": 30, "t": 40}[m.group(2).lower()]
    return int(m.group(1)) << shift


def parse_algorithm_params(text: str) -> dict:
    """``algorithm_params`` syntax: ``[priority=N|algo=NAME] level=L dict=PATH deflate.winbits=W``."""
    out: dict = {}
    for tok in text.split():
        key, sep, val = tok.partition("=")
        if not sep:
            raise ValueError(f"algorithm_params: expected key=value, got {tok!r}")
        if key in ("priority", "level", "deflate.winbits"):
            try:
                out[key] = int(val)
            except ValueError:
                raise ValueError(f"algorithm_params: {key} must be an integer, got {val!r}") from None
        elif key in ("algo", "dict"):
            out[key] = val
        else:
            raise ValueError(f"algorithm_params: unknown parameter {key!r}")
    return out


def _codec_from(spec) -> Codec:
    """A Codec from a name, a Codec, or (name, params-dict-or-string)."""
    if isinstance(spec, Codec):
        return spec
    if isinstance(spec, str):
        return get_codec(spec)
    name, params = spec
    if isinstance(params, str):
        params = parse_algorithm_params(params)
    params = dict(params or {})
    dictionary = params.pop("dict", None)
    if isinstance(dictionary, (str, os.PathLike)):
        with open(dictionary, "rb") as f:
            dictionary = f.read()
    level = params.pop("level", None)
    winbits = params.pop("deflate.winbits", params.pop("winbits", None))
    params.pop("algo", None)
    params.pop("priority", None)
    if params:
        raise UnsupportedAlgorithmError(f"unknown algorithm parameters: {sorted(params)}")
    return get_codec(name, level=level, dictionary=dictionary, winbits=winbits)


def compress_pages(compress, data, first: int, count: int) -> list:
    """zram's per-page preparation for ``count`` pages from page ``first`` of ``data``:
    the fill word (an int) of a same-filled page — one 8-byte word repeated,
    checked first against the last word as ``page_same_filled`` does — else
    the compressed bytes."""
    out: list = []
    pos = first * PAGE_SIZE
    for _ in range(count):
        p = data[pos:pos + PAGE_SIZE]
        if type(p) is not bytes:  # a view of the caller's buffer
            p = bytes(p)
        pos += PAGE_SIZE
        w = p[:8]
        if w == p[4088:] and p == w * 512:
            out.append(int.from_bytes(w, "little"))
        else:
            out.append(compress(p))
    return out


class _BackingFile:
    """The backing device: a file of 4 KiB blocks with a bitmap; block 0 is never used."""

    def __init__(self, path: str | os.PathLike, nr_blocks: int) -> None:
        self.path = os.fspath(path)
        self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(self.fd).st_size
        if size < nr_blocks * PAGE_SIZE:
            os.ftruncate(self.fd, nr_blocks * PAGE_SIZE)
            size = nr_blocks * PAGE_SIZE
        self.nr_blocks = size // PAGE_SIZE
        self._used = bytearray(self.nr_blocks)
        self._used[0] = 1  # so a WB handle is never 0
        self._hint = 1

    def alloc(self) -> int:
        i = self._used.find(0, self._hint)
        if i < 0:
            i = self._used.find(0, 1)
            if i < 0:
                return 0
        self._used[i] = 1
        self._hint = i + 1
        return i

    def free(self, block: int) -> None:
        self._used[block] = 0
        if block < self._hint:
            self._hint = block

    def write(self, block: int, page: bytes) -> None:
        if os.pwrite(self.fd, page, block * PAGE_SIZE) != PAGE_SIZE:
            raise BackingDeviceError(f"short write to {self.path} block {block}")

    def read(self, block: int) -> bytes:
        data = os.pread(self.fd, PAGE_SIZE, block * PAGE_SIZE)
        if len(data) != PAGE_SIZE:
            raise BackingDeviceError(f"short read from {self.path} block {block}")
        return data

    def flush(self) -> None:
        os.fsync(self.fd)

    def close(self) -> None:
        os.close(self.fd)


class _Window:
    """Slots located for reading under one lock hold (``Zram._locate``): per
    slot whether it is a plain object and its index among those, per object
    its location and size; and a view of the arena, released with the lock."""

    __slots__ = ("index", "plain", "jof", "a", "n1", "b", "n", "mm", "view")

    def __init__(self, index, plain, jof, a, n1, b, n, mm) -> None:
        self.index, self.plain, self.jof = index, plain, jof
        self.a, self.n1, self.b, self.n = a, n1, b, n
        self.mm = mm
        self.view = memoryview(mm)

    def release(self) -> None:
        self.view.release()


class Zram:
    """A zram device in userspace: ``disksize`` bytes of compressed RAM.

    >>> z = Zram("16M", comp_algorithm="lz4")
    >>> z.write(0, bytes(4096) + b"x" * 4096)
    >>> z.read(4096, 4) == b"xxxx"
    True
    >>> str(z.mm_stat()).split()[5]   # same_pages: the zero page
    '1'

    Parameters, with the sysfs attribute each stands for: ``disksize`` (bytes
    or "512M"), ``comp_algorithm``, ``algorithm_params`` (a dict or the
    kernel's "level=3 dict=/path" text), ``recomp_algorithms`` ({priority:
    name or (name, params)}, ``recomp_algorithm``), ``mem_limit``,
    ``backing_dev`` (a file path), ``chain_size``
    (``CONFIG_ZSMALLOC_CHAIN_SIZE``), ``track_access_time``
    (``CONFIG_ZRAM_TRACK_ENTRY_ACTIME``: needed by ``mark_idle(older_than)``;
    costs 4 bytes per slot), ``timer`` (the clock, for tests).

    ``workers=N`` starts N codec processes: writes of 64 pages or more are
    compressed there (and reads decompressed, except with lz4, which is faster
    in place).  The device's own process still allocates and commits every
    page in page order, so the device behaves exactly as without workers.
    Close the device (or use ``with``) to stop them.
    """

    def __init__(self, disksize: int | str, comp_algorithm: str = "lzo", *,
                 algorithm_params: Mapping | str | None = None,
                 recomp_algorithms: Mapping[int, object] | None = None,
                 mem_limit: int | str = 0, chain_size: int = 8,
                 backing_dev: str | os.PathLike | None = None,
                 track_access_time: bool = False,
                 timer: Callable[[], float] = time.monotonic,
                 workers: int = 0,
                 name: str = "zram") -> None:
        size = parse_size(disksize)
        if size <= 0:
            raise ValueError(f"disksize must be positive, got {disksize!r}")
        self.disksize = -(-size // PAGE_SIZE) * PAGE_SIZE
        self.name = name
        self.nr_pages = self.disksize >> PAGE_SHIFT
        params = algorithm_params
        if isinstance(params, str):
            params = parse_algorithm_params(params)
        comps: list[Codec | None] = [_codec_from((comp_algorithm, params))] + [None] * (ZRAM_MAX_COMPS - 1)
        for prio, spec in (recomp_algorithms or {}).items():
            if not 1 <= prio < ZRAM_MAX_COMPS:
                raise ValueError(f"recompression priority must be 1..{ZRAM_MAX_COMPS - 1}, got {prio}")
            comps[prio] = _codec_from(spec)
        self._comps = comps
        self._codec_errors = tuple({e for c in comps if c is not None for e in c.errors})
        self.pool = Pool(chain_size)
        self.huge_class_size = self.pool.huge_class_size
        self._lock = self.pool.lock
        self._store = self.pool._store_locked
        self._free_obj = self.pool._free_locked
        self._workers = None
        self._pp_lock = threading.Lock()  # one writeback/recompress at a time
        self._timer = timer
        self._t0 = timer()
        self._handle = array("Q", bytes(8 * self.nr_pages))
        self._flags = array("I", bytes(4 * self.nr_pages))
        self._actime = array("f", bytes(4 * self.nr_pages)) if track_access_time else None
        self.track_access_time = track_access_time
        self._bd = _BackingFile(backing_dev, self.nr_pages + 1) if backing_dev is not None else None
        self.writeback_limit = 0
        self.writeback_limit_enable = False
        self._limit_pages = 0
        self.mem_limit = mem_limit
        self._zero_stats()
        if workers:
            from ._workers import CodecWorkers

            self._workers = CodecWorkers(workers, self._comps)

    def _zero_stats(self) -> None:
        self._pages_stored = 0
        self._compr_data_size = 0
        self._same_pages = 0
        self._huge_pages = 0
        self._huge_pages_since = 0
        self._max_used_pages = 0
        self._failed_reads = 0
        self._failed_writes = 0
        self._notify_free = 0
        self._miss_free = 0
        self._bd_count = 0
        self._bd_reads = 0
        self._bd_writes = 0

    # ------------------------------------------------------------------
    # attributes a sysfs user knows

    @property
    def comp_algorithm(self) -> str:
        return self._comps[0].name

    @property
    def algorithms(self) -> list[Codec | None]:
        """Configured codecs by priority (0 = primary, 1..3 = recompression)."""
        return list(self._comps)

    @property
    def mem_limit(self) -> int:
        """The limit in bytes (page-aligned; 0 = none)."""
        return self._limit_pages << PAGE_SHIFT

    @mem_limit.setter
    def mem_limit(self, value: int | str) -> None:
        b = parse_size(value)
        if b < 0:
            raise ValueError(f"mem_limit must be >= 0, got {value!r}")
        self._limit_pages = -(-b // PAGE_SIZE)

    @property
    def backing_dev(self) -> str | None:
        return self._bd.path if self._bd else None

    def reset_mem_used_max(self) -> None:
        """``echo 0 > mem_used_max``: the high-water mark restarts at the *current* usage."""
        with self._lock:
            self._max_used_pages = self.pool.total_pages

    # ------------------------------------------------------------------
    # I/O

    def _check_range(self, offset: int, length: int) -> None:
        if not isinstance(offset, int) or not isinstance(length, int):
            raise TypeError("offset and length must be ints")
        if offset < 0 or length < 0:
            raise OutOfRangeError(f"negative offset or length ({offset}, {length})")
        if offset + length > self.disksize:
            raise OutOfRangeError(
                f"range {offset}..{offset + length} is beyond the device ({self.disksize} bytes)")

    def write(self, offset: int, data) -> None:
        """Write ``data`` (any bytes-like object) at byte ``offset``; partial
        pages by read-modify-write.  A buffer is read in place, not copied
        first, as the kernel reads an O_DIRECT writer's pages: do not change
        it until the call returns."""
        if type(data) is not bytes:
            data = memoryview(data).cast("B")
        n = len(data)
        self._check_range(offset, n)
        if not n:
            return
        head = offset & (PAGE_SIZE - 1)
        index = offset >> PAGE_SHIFT
        pos = 0
        if head:
            take = min(PAGE_SIZE - head, n)
            self._write_partial(index, head, data[:take])
            pos = take
            index += 1
        whole = (n - pos) >> PAGE_SHIFT
        if whole:
            end = pos + (whole << PAGE_SHIFT)
            self._write_pages(index, data if pos == 0 and end == n else data[pos:end], whole)
            pos = end
            index += whole
        if pos < n:
            self._write_partial(index, 0, data[pos:])

    def write_pages(self, index: int, data) -> None:
        """Write whole pages starting at page ``index`` (``len(data)`` a multiple of 4096)."""
        if len(data) & (PAGE_SIZE - 1):
            raise ValueError(f"write_pages needs whole pages, got {len(data)} bytes")
        self.write(index << PAGE_SHIFT, data)

    def read(self, offset: int, length: int) -> bytes:
        """Read ``length`` bytes at byte ``offset``; unwritten ranges read as zeros."""
        self._check_range(offset, length)
        if not length:
            return b""
        first = offset >> PAGE_SHIFT
        last = (offset + length - 1) >> PAGE_SHIFT
        data = self._read_pages(first, last - first + 1)
        head = offset & (PAGE_SIZE - 1)
        if head == 0 and length == len(data):
            return data
        return data[head:head + length]

    def read_into(self, offset: int, buf) -> int:
        """Read ``len(buf)`` bytes at ``offset`` into a writable buffer."""
        mv = memoryview(buf).cast("B")
        n = len(mv)
        if not (offset | n) & (PAGE_SIZE - 1) and n:
            # whole pages: decompressed straight into the caller's buffer
            self._check_range(offset, n)
            self._read_pages(offset >> PAGE_SHIFT, n >> PAGE_SHIFT, mv)
        else:
            mv[:] = self.read(offset, n)
        return n

    def discard(self, offset: int, length: int) -> None:
        """``REQ_OP_DISCARD``: free every whole page in the range.

        As the kernel, a leading partial page is skipped (never partially
        zeroed: a discard is meant to save memory) and so is a trailing one;
        each freed page counts in ``notify_free``.
        """
        self._check_range(offset, length)
        index = offset >> PAGE_SHIFT
        head = offset & (PAGE_SIZE - 1)
        n = length
        if head:
            if n <= PAGE_SIZE - head:
                return
            n -= PAGE_SIZE - head
            index += 1
        with self._lock:
            while n >= PAGE_SIZE:
                self._free_slot(index)
                self._notify_free += 1
                index += 1
                n -= PAGE_SIZE

    def write_zeroes(self, offset: int, length: int) -> None:
        """``REQ_OP_WRITE_ZEROES``: the range reads as zeros afterwards.

        Whole pages are freed as by discard (the kernel handles both ops in
        ``zram_bio_discard``); partial pages at the ends, which a 4 KiB block
        device never sees, are zeroed by read-modify-write.
        """
        self._check_range(offset, length)
        if not length:
            return
        end = offset + length
        a = -(-offset // PAGE_SIZE) * PAGE_SIZE
        b = end & ~(PAGE_SIZE - 1)
        if a >= b:  # within one page
            self.write(offset, bytes(length))
            return
        if offset < a:
            self.write(offset, bytes(a - offset))
        self.discard(a, b - a)
        if b < end:
            self.write(b, bytes(end - b))

    def flush(self) -> None:
        """``REQ_OP_FLUSH``: data is in memory; a backing file is fsync'd."""
        if self._bd is not None:
            self._bd.flush()

    def slot_free_notify(self, index: int) -> bool:
        """``swap_slot_free_notify``: free a slot if its lock is free right now.

        Returns whether it was freed; a busy lock counts in ``miss_free``.
        """
        if not 0 <= index < self.nr_pages:
            raise OutOfRangeError(f"slot {index} is beyond the device ({self.nr_pages} slots)")
        self._notify_free += 1
        if not self._lock.acquire(blocking=False):
            self._miss_free += 1
            return False
        try:
            self._free_slot(index)
        finally:
            self._lock.release()
        return True

    # ------------------------------------------------------------------
    # the page paths

    def _write_pages(self, index: int, data: bytes, npages: int) -> None:
        workers = self._workers
        if workers is not None and npages >= workers.min_pages and workers.try_acquire():
            from ._workers import WorkerDiedError

            try:
                workers.write_pages(self, index, data, npages)
                return
            except WorkerDiedError as exc:
                died = exc
            finally:
                workers.release()
            # the pages committed so far hold this write's data already;
            # writing them again in process leaves the device as one write
            self._lose_workers(workers, died)
        self._write_pages_local(index, data, npages)

    def _lose_workers(self, workers, exc: BaseException) -> None:
        """A codec worker died: warn, stop the rest, go on in process."""
        if self._workers is not workers:
            return  # another thread did it
        self._workers = None
        warnings.warn(f"{self.name}: {exc}; continuing without codec workers",
                      RuntimeWarning, stacklevel=4)
        workers.close()

    #: pages compressed and then committed together by the in-process write path
    _WRITE_BATCH = 32

    def _write_pages_local(self, index: int, data, npages: int) -> None:
        """Compress and commit whole pages in this process, a batch at a time."""
        compress = self._comps[0].compress
        B = self._WRITE_BATCH
        for first in range(0, npages, B):
            count = min(B, npages - first)
            self._commit_batch(index + first, compress_pages(compress, data, first, count),
                               data, first * PAGE_SIZE)

    def _commit_batch(self, index: int, objs: list, data, base: int) -> None:
        """Store a batch of prepared pages into slots ``index...`` under one lock hold.

        ``objs[k]`` is an int (a same-filled page's word), a bytes-like
        compressed object, or None (did not compress: stored raw); the raw
        page is ``data[base + k*4096:][:4096]``.  Per page, as
        ``zram_write_page``: the new object is allocated and the limit checked
        before the old content is freed; a page refused by the limit raises
        and leaves its slot, and every later one, as it was.  A batch is a few
        dozen pages, so readers wait at most that long (the kernel locks per
        slot; one lock per page here cost more than the store itself).
        """
        huge = self.huge_class_size
        store, free_slot = self._store, self._free_slot
        pool = self.pool
        th, tf = self._handle, self._flags
        ac = self._actime
        now = self._timer() - self._t0 if ac is not None else 0.0
        limit = self._limit_pages
        stored = compr = same = nhuge = 0
        with self._lock:
            max_used = self._max_used_pages
            try:
                for k, c in enumerate(objs):
                    idx = index + k
                    if type(c) is int:  # write_same_filled_page: no allocation
                        if th[idx] or tf[idx]:
                            free_slot(idx)
                        th[idx] = c
                        tf[idx] = _SAME
                        same += 1
                        stored += 1
                    else:
                        n = PAGE_SIZE if c is None else len(c)
                        if n >= huge:
                            p = base + k * PAGE_SIZE
                            h = store(data[p:p + PAGE_SIZE], PAGE_SIZE)
                            n = PAGE_SIZE
                            flags = _HUGE | PAGE_SIZE
                        else:
                            h = store(c, n)
                            flags = n
                        total = pool._pages_allocated
                        if total > max_used:
                            max_used = total
                        if limit and total > limit:
                            self._free_obj(h)
                            self._failed_writes += 1
                            raise MemLimitError(
                                f"{self.name}: writing page {idx} would exceed mem_limit "
                                f"({limit} pages; the pool would hold {total})")
                        if flags & _HUGE:
                            nhuge += 1
                        if th[idx] or tf[idx]:
                            free_slot(idx)
                        th[idx] = h
                        tf[idx] = flags
                        stored += 1
                        compr += n
                    if ac is not None:
                        ac[idx] = now
            finally:
                # counters gathered in the loop and added once; free_slot
                # subtracted from them directly, so the sums stay exact
                self._pages_stored += stored
                self._compr_data_size += compr
                self._same_pages += same
                self._huge_pages += nhuge
                self._huge_pages_since += nhuge
                if max_used > self._max_used_pages:
                    self._max_used_pages = max_used

    #: pages read under one lock hold: locating objects is one numpy pass
    #: per window, which costs about as much as 8 pages' Python, so windows
    #: are large; readers hold the lock about a millisecond per window
    _READ_WINDOW = 256

    def _read_pages(self, index: int, npages: int, out=None) -> bytes | None:
        """Whole pages, a window at a time under the lock.

        Returns the bytes, or writes them into ``out`` (a writable byte view
        of ``npages`` pages) and returns None.
        """
        workers = self._workers
        # large reads go through the workers: 1.4x in-process reads with lzo,
        # 1.15x with lz4 (which decompresses a page in 1.5 us, and was slower
        # through workers while their messages were pickled)
        if workers is not None and npages >= workers.min_pages and workers.try_acquire():
            from ._workers import WorkerDiedError

            died = None
            try:
                pages = workers.read_pages(self, index, npages, out)
            except WorkerDiedError as exc:
                died = exc
            finally:
                workers.release()
            if died is None:
                return None if out is not None else b"".join(pages)
            self._lose_workers(workers, died)  # and read it all again here
        parts = []
        W = self._READ_WINDOW
        for first in range(0, npages, W):
            count = min(W, npages - first)
            with self._located(index + first, count) as win:
                chunk = self._read_located(win, 0, count)
            if out is None:
                parts += chunk
            else:  # one copy per window: cheaper than a view per page
                pos = first * PAGE_SIZE
                out[pos:pos + count * PAGE_SIZE] = b"".join(chunk)
        if out is not None:
            return None
        return parts[0] if npages == 1 else b"".join(parts)

    @contextlib.contextmanager
    def _located(self, index: int, count: int):
        """Hold the lock over a window of slots located by ``_locate``."""
        with self._lock:
            win = self._locate(index, count)
            try:
                yield win
            finally:
                win.release()

    def _locate(self, index: int, count: int) -> _Window:
        """The read side of ``zram_read_page`` for slots ``index..index+count``
        in one numpy pass (lock held, until the window is released): clears
        their idle and post-processing marks, stamps their access time, and
        finds where each object of the primary codec is
        (``Pool._locate_locked``).  Other slots (same-filled, huge, written
        back, recompressed, empty) are read one by one later."""
        f = np.frombuffer(self._flags, dtype=np.uint32, count=count, offset=index * 4)
        h = np.frombuffer(self._handle, dtype=np.uint64, count=count, offset=index * 8)
        plain = ((f & _NOT_PLAIN) == 0) & (h != 0)
        n = (f[plain] & _SIZE_MASK).astype(np.int64)
        a, n1, b = self.pool._locate_locked(h[plain], n)
        if self._actime is not None:
            ac = np.frombuffer(self._actime, dtype=np.float32, count=count, offset=index * 4)
            ac[(f != 0) | (h != 0)] = self._timer() - self._t0
        if (f & (_IDLE | _PP)).any():
            f &= ~np.uint32(_IDLE | _PP)
        jof = np.cumsum(plain) - plain
        return _Window(index, plain.tolist(), jof.tolist(), a.tolist(), n1.tolist(), b.tolist(),
                       n.tolist(), self.pool._mm)

    def _read_located(self, win: _Window, k0: int, k1: int) -> list:
        """Pages ``k0..k1`` of a located window, decompressed (lock held,
        as ``zram_read_page`` decompresses under the slot lock): straight
        from the arena where the codec takes a buffer (lz4, zstd, deflate),
        from one copy where it does not (lzo)."""
        codec = self._comps[0]
        dec = codec.decompress_page
        src = win.view if codec.takes_views else win.mm
        mm = win.mm
        plain, al, n1l, bl, nl = win.plain, win.a, win.n1, win.b, win.n
        j = win.jof[k0] if k0 < len(win.jof) else 0
        pages: list = []
        append = pages.append
        for k in range(k0, k1):
            if not plain[k]:
                append(self._read_slot_page(win.index + k, counted=True))
                continue
            a = al[j]
            n = nl[j]
            n1 = n1l[j]
            try:
                if n1 == n:
                    page = dec(src[a:a + n])
                else:
                    b = bl[j]
                    page = dec(mm[a:a + n1] + mm[b:b + n - n1])
            except self._codec_errors as exc:
                self._failed_reads += 1
                raise DecompressionError(f"{self.name}: a page does not decompress: {exc}") from exc
            j += 1
            if len(page) != PAGE_SIZE:
                self._failed_reads += 1
                raise DecompressionError(f"{self.name}: a page decompressed to {len(page)} bytes, "
                                         f"expected {PAGE_SIZE}")
            append(page)
        return pages

    def _objects_into(self, win: _Window, k0: int, k1: int, buf, meta) -> tuple[list, int]:
        """For a codec worker: pages ``k0..k1`` of a located window, each
        object copied straight into ``buf`` (back to back; ``meta[2i]`` its
        offset, ``meta[2i + 1]`` its length), where the parts have None;
        other slots are read here (their page in the parts).  Lock held.
        Returns the parts and the number of objects."""
        view = win.view
        plain, al, n1l, bl, nl = win.plain, win.a, win.n1, win.b, win.n
        j = win.jof[k0] if k0 < len(win.jof) else 0
        parts: list = []
        append = parts.append
        off = i = 0
        for k in range(k0, k1):
            if not plain[k]:
                append(self._read_slot_page(win.index + k, counted=True))
                continue
            a = al[j]
            n = nl[j]
            n1 = n1l[j]
            if n1 == n:
                buf[off:off + n] = view[a:a + n]
            else:
                b = bl[j]
                buf[off:off + n1] = view[a:a + n1]
                buf[off + n1:off + n] = view[b:b + n - n1]
            meta[2 * i] = off
            meta[2 * i + 1] = n
            off += n
            i += 1
            j += 1
            append(None)
        return parts, i

    def _read_special(self, idx: int, f: int, h: int) -> bytes:
        """A same-filled, huge, written-back or empty slot (lock held)."""
        if f & _SAME or not (h or f & _WB):
            return h.to_bytes(8, "little") * 512
        if f & _WB:
            self._bd_reads += 1
            try:
                return self._bd.read(h)  # type: ignore[union-attr]
            except OSError:
                self._failed_reads += 1
                raise
        return self.pool._read_sized_locked(h, PAGE_SIZE)

    def _read_slot_page(self, idx: int, counted: bool = False) -> bytes:
        """Decompressed content of one slot (lock held; used by partial I/O,
        post-processing and, with ``counted`` (a failure is a failed read),
        the read paths' uncommon slots)."""
        f = self._flags[idx]
        h = self._handle[idx]
        if f & (_SAME | _WB | _HUGE) or not h:
            return self._read_special(idx, f, h)
        raw = self.pool._read_sized_locked(h, f & _SIZE_MASK)
        try:
            return self._comps[(f & _PRIO_MASK) >> _PRIO_SHIFT].decompress(raw)
        except DecompressionError:
            if counted:
                self._failed_reads += 1
            raise

    def _write_partial(self, index: int, head: int, data: bytes) -> None:
        """Read-modify-write of part of one page (zram's partial I/O)."""
        with self._lock:
            try:
                old = self._read_slot_page(index)
            except ZmemError:
                # zram_bvec_write_partial: the bio is a write, and fails as one
                self._failed_writes += 1
                raise
        page = b"".join((old[:head], data, old[head + len(data):]))
        self._write_pages(index, page, 1)

    def _free_slot(self, idx: int) -> None:
        """``zram_free_page`` (lock held)."""
        f = self._flags[idx]
        h = self._handle[idx]
        if f & _HUGE:
            self._huge_pages -= 1
        if f & _WB:
            self._bd.free(h)  # type: ignore[union-attr]
            self._bd_count -= 1
        elif f & _SAME:
            self._same_pages -= 1
        elif h:
            self.pool._free_locked(h)
            self._compr_data_size -= f & _SIZE_MASK
        else:
            self._flags[idx] = 0
            return
        self._pages_stored -= 1
        self._handle[idx] = 0
        self._flags[idx] = 0

    # ------------------------------------------------------------------
    # housekeeping

    def compact(self) -> int:
        """``echo 1 > compact``: compact the pool; return pages freed."""
        return self.pool.compact()

    def reset(self) -> None:
        """Free every slot and clear the statistics and the limit.

        The kernel's ``reset`` also forgets disksize and the algorithms; a
        zmem device keeps them (make a new :class:`Zram` to change them).
        """
        with self._pp_lock, self._lock:
            for idx in range(self.nr_pages):
                if self._handle[idx] or self._flags[idx]:
                    self._free_slot(idx)
            self._zero_stats()
            self._limit_pages = 0
            self.writeback_limit = 0
            self.writeback_limit_enable = False
            self.pool._pages_compacted = 0
            self.pool._arena.trim()

    def mark_idle(self, older_than: float | None = None) -> int:
        """``echo all > idle`` (``older_than=None``) or ``echo N > idle``.

        Marks allocated slots that are neither same-filled nor written back
        IDLE; with ``older_than`` only those not accessed in that many seconds
        (and clears IDLE on the others).  Returns the number of idle slots.
        """
        if older_than is not None:
            if self._actime is None:
                raise ZmemError("idle by age needs track_access_time=True "
                                "(the kernel's CONFIG_ZRAM_TRACK_ENTRY_ACTIME)")
            cutoff = self._timer() - self._t0 - older_than
        th, tf, ac = self._handle, self._flags, self._actime
        marked = 0
        with self._lock:
            for idx in range(self.nr_pages):
                f = tf[idx]
                if not (th[idx] or f & _SIZE_MASK) or f & (_WB | _SAME):
                    continue
                if older_than is None or ac[idx] < cutoff:  # type: ignore[index]
                    tf[idx] = f | _IDLE
                    marked += 1
                else:
                    tf[idx] = f & ~_IDLE
        return marked

    @contextlib.contextmanager
    def _post_processing(self):
        """One writeback or recompression at a time (-EAGAIN otherwise); on the
        way out, PP_SLOT is cleared from every slot that was picked and not done."""
        if not self._pp_lock.acquire(blocking=False):
            raise DeviceBusyError(f"{self.name}: writeback or recompression already running")
        try:
            yield
        finally:
            with self._lock:
                tf = self._flags
                for idx in range(self.nr_pages):
                    if tf[idx] & _PP:
                        tf[idx] &= ~_PP
            self._pp_lock.release()

    def _candidates(self, want: int, page_indexes, skip: int) -> list[int]:
        """Slots for post-processing, largest stored size first (64-byte buckets)."""
        th, tf = self._handle, self._flags
        rng = range(self.nr_pages) if page_indexes is None else page_indexes
        picked = []
        for idx in rng:
            if not 0 <= idx < self.nr_pages:
                raise OutOfRangeError(f"page index {idx} is beyond the device ({self.nr_pages} pages)")
            f = tf[idx]
            if not th[idx] or f & skip:
                continue
            if want and f & want != want:
                continue
            tf[idx] = f | _PP
            picked.append(idx)
        # pp_ctl buckets: PAGE_SIZE / 64 + 1 of them, taken from the largest
        picked.sort(key=lambda i: -((tf[i] & _SIZE_MASK) // 64))
        return picked

    def writeback(self, mode: str | None = "idle", page_indexes=None) -> int:
        """``echo <mode> > writeback``: move pages to the backing file; return pages written.

        ``mode`` is ``idle``, ``huge``, ``huge_idle`` or ``incompressible``;
        with ``page_indexes`` (an iterable of slot numbers, the kernel's
        ``page_index=``/``page_indexes=``) and ``mode=None`` the given slots are
        written whatever their flags.  With ``writeback_limit_enable`` each page
        uses one unit of ``writeback_limit`` and an exhausted budget raises.
        """
        if self._bd is None:
            raise BackingDeviceError(f"{self.name}: no backing_dev for writeback")
        want = {None: 0, "idle": _IDLE, "huge": _HUGE, "huge_idle": _HUGE | _IDLE,
                "incompressible": _INCOMP}.get(mode, -1)
        if want < 0:
            raise ValueError(f"writeback mode must be idle, huge, huge_idle or incompressible, got {mode!r}")
        if want == 0 and page_indexes is None:
            raise ValueError("writeback needs a mode or page_indexes")
        written = 0
        with self._post_processing():
            with self._lock:
                cands = self._candidates(want, page_indexes, _WB | _SAME)
            for idx in cands:
                with self._lock:
                    if not self._flags[idx] & _PP:
                        continue  # accessed or freed since it was picked
                    if self.writeback_limit_enable and self.writeback_limit == 0:
                        raise BackingDeviceError(f"{self.name}: writeback_limit exhausted")
                    block = self._bd.alloc()
                    if not block:
                        raise BackingDeviceError(f"{self.name}: backing device is full")
                    try:
                        page = self._read_slot_page(idx)
                        self._bd.write(block, page)
                    except BaseException:
                        self._bd.free(block)
                        raise
                    self._free_slot(idx)
                    self._flags[idx] = _WB
                    self._handle[idx] = block
                    self._pages_stored += 1
                    self._bd_count += 1
                    self._bd_writes += 1
                    if self.writeback_limit_enable:
                        self.writeback_limit -= 1
                    written += 1
        return written

    def recompress(self, type: str | None = None, threshold: int = 0, max_pages: int | None = None,
                   algo: str | None = None, priority: int | None = None) -> int:
        """``echo ... > recompress``: try the secondary algorithms on stored pages.

        A page is replaced when a secondary algorithm puts it in a strictly
        smaller size class (and, with ``threshold``, below that many bytes).
        A page the last algorithm could not shrink is flagged INCOMPRESSIBLE.
        Returns the number of pages recompressed.
        """
        want = {None: 0, "idle": _IDLE, "huge": _HUGE, "huge_idle": _HUGE | _IDLE}.get(type, -1)
        if want < 0:
            raise ValueError(f"recompress type must be idle, huge or huge_idle, got {type!r}")
        if threshold and threshold >= self.huge_class_size:
            raise ValueError(f"threshold must be below huge_class_size ({self.huge_class_size})")
        # prio .. prio_max-1 is the range of secondary algorithms to try, as in
        # recompress_store: all of them, or just the one named by algo/priority
        active = max(p for p in range(ZRAM_MAX_COMPS) if self._comps[p] is not None) + 1
        if active == 1:
            raise UnsupportedAlgorithmError(f"{self.name}: no recompression algorithm configured")
        prio, prio_max = 1, active
        if algo is not None:
            named = [p for p in range(1, active) if self._comps[p] is not None
                     and self._comps[p].name == algo]  # type: ignore[union-attr]
            if not named:
                raise UnsupportedAlgorithmError(f"{algo!r} is not a configured recompression algorithm")
            prio, prio_max = named[0], named[0] + 1
        if priority is not None:
            prio = max(priority, 1)
            if prio >= active or self._comps[prio] is None:
                raise UnsupportedAlgorithmError(f"no recompression algorithm at priority {prio}")
            prio_max = prio + 1
        done = 0
        budget = max_pages
        with self._post_processing():
            with self._lock:
                cands = self._candidates(want, None, _WB | _SAME | _INCOMP)
            for idx in cands:
                if budget is not None and budget <= 0:
                    break
                with self._lock:
                    f = self._flags[idx]
                    if not f & _PP:
                        continue
                    cur = (f & _PRIO_MASK) >> _PRIO_SHIFT
                    if cur + 1 >= prio_max:
                        continue  # already compressed at this priority or above
                    old_len = f & _SIZE_MASK
                    if threshold and old_len < threshold:
                        continue  # small enough; costs no budget (recompress_slot)
                    page = self._read_slot_page(idx)
                    self._flags[idx] = f & ~_IDLE
                    old_class = self.pool.lookup_class_index(old_len)
                    result = None
                    for p in range(max(prio, cur + 1), prio_max):
                        codec = self._comps[p]
                        if codec is None:
                            continue
                        c = codec.compress(page)
                        if self.pool.lookup_class_index(len(c)) >= old_class or (
                                threshold and len(c) >= threshold):
                            continue
                        result = (p, c)
                        break
                    # an attempt costs budget whether or not it saved memory
                    if budget is not None:
                        budget -= 1
                    if result is None:
                        if prio_max == active:  # the strongest algorithm gave up too
                            self._flags[idx] |= _INCOMP
                        continue
                    p, c = result
                    try:
                        h = self.pool._store_locked(c, len(c))
                    except ZmemError:
                        continue  # not fatal: the old object stays
                    self._free_slot(idx)
                    self._handle[idx] = h
                    self._flags[idx] = len(c) | (p << _PRIO_SHIFT)
                    self._compr_data_size += len(c)
                    self._pages_stored += 1
                    done += 1
        return done

    # ------------------------------------------------------------------
    # statistics

    def mm_stat(self) -> MmStat:
        with self._lock:
            return MmStat(
                orig_data_size=self._pages_stored << PAGE_SHIFT,
                compr_data_size=self._compr_data_size,
                mem_used_total=self.pool.total_pages << PAGE_SHIFT,
                mem_limit=self._limit_pages << PAGE_SHIFT,
                mem_used_max=self._max_used_pages << PAGE_SHIFT,
                same_pages=self._same_pages,
                pages_compacted=self.pool.pages_compacted,
                huge_pages=self._huge_pages,
                huge_pages_since=self._huge_pages_since)

    def io_stat(self) -> IoStat:
        return IoStat(self._failed_reads, self._failed_writes, 0, self._notify_free)

    def bd_stat(self) -> BdStat:
        return BdStat(self._bd_count, self._bd_reads, self._bd_writes)

    def debug_stat(self) -> DebugStat:
        return DebugStat(1, self._miss_free)

    def slot_info(self, index: int) -> dict:
        """One slot's state (size, flags, priority) for tools and tests."""
        with self._lock:
            f = self._flags[index]
            return {"size": f & _SIZE_MASK,
                    "flags": SlotFlag(f & ~(_SIZE_MASK | _PRIO_MASK)),
                    "priority": (f & _PRIO_MASK) >> _PRIO_SHIFT,
                    "allocated": bool(self._handle[index] or f & (_SAME | _WB))}

    def metadata_bytes(self) -> int:
        """Slot table plus the pool's bookkeeping."""
        total = self.pool.metadata_bytes()
        for a in (self._handle, self._flags, self._actime):
            if a is not None:
                total += a.buffer_info()[1] * a.itemsize
        return total

    def close(self) -> None:
        """Release the pool, the worker processes and the backing file."""
        if self._workers is not None:
            self._workers.close()
            self._workers = None
        if self._bd is not None:
            self._bd.close()
            self._bd = None
        self.pool.close()

    def __enter__(self) -> "Zram":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<zmem.Zram {self.name} disksize={self.disksize} algorithm={self.comp_algorithm}>"
