"""A swap-like workload driver: a process's real pages under a memory budget, over zswap or plain swap.

This module owns the simulated process and its measurement.  A *process* of
``N`` pages (real pages: the shared corpora, or a capture of a live child
process, replicated when ``N`` is larger) runs with ``M < N`` page frames of
RAM.  It first writes every page once (the fill), then makes ``A`` accesses
whose page is drawn from a Zipf distribution (parameter ``s``; or a hot/cold
mixture), a share of them writes.  The resident set is reclaimed as the
kernel does in spirit: CLOCK (second chance) over the frames; a page that is
not resident faults and is swapped in with ``load(offset)``; the frame it
takes is freed by swapping the CLOCK victim out with ``swap_out(offset,
page)``.  The swap offset of page ``i`` is ``i``.

Page contents are never kept for resident pages: page ``i`` at version ``v``
is the real base page ``i mod C`` with its first four bytes replaced by
``v`` (little-endian) once written (``v = 0`` is the untouched real page), so
a swap-out generates exactly the bytes the process holds, and every swap-in
is compared with them (a mismatch or a lost page is counted, and the tests
require zero).  The hot structures are typed arrays (``array('i')`` frame
table and page table, ``bytearray`` referenced bits, ``array('I')``
versions), never one Python object per page.

Swap-copy semantics, as ``do_swap_page`` while swap is under half full:

* a swap-in served by zswap's pool is exclusive (``zswap_load`` erases the
  entry and dirties the folio), so that page is written again when evicted;
* a read fault served by the swap device (plain swap, or a zswap miss: a
  written-back or rejected page) keeps the slot and the page stays clean, so
  evicting it again writes nothing (a "clean drop"); a write access makes
  the copy stale (the next eviction rewrites it) and a write fault frees
  the slot (``invalidate``).  The driver reads the device itself for a page
  zswap does not hold, as the swap core does after ``zswap_load`` says "not
  found"; ``keep_copies=False`` makes every swap-in free its slot instead.

Measured per configuration: faults (swap-ins), zswap hits (served by the
pool) against reads from the backing store, swap-outs, stores rejected and
written through, pages written back, the pool's pages and compression ratio
(stored bytes / pool bytes) sampled over the run (final and minimum), and the
time of every ``swap_out`` and ``load`` call (``perf_counter_ns``).  A
store's own cost is told from the reclaim it ran inline (shrink worker,
policy compaction) with :class:`~zmem.ZswapStats` deltas around the calls
that could trigger it: ``reclaim = max(Δshrink_worker_ns, Δlimit_compact_ns)``
(the worker's time includes its own compactions; the one case this
misattributes, a store-path compaction followed by the worker in the same
call, is counted in ``split_calls``).

:func:`run_swapsim` is the ``zmem swapsim`` command: the configurations side
by side (plain swap, zswap with an unlimited pool, the kernel's behaviour,
``compact_then_writeback``, zspage reclaim), a budget sweep, a plot, JSON,
and with ``kernel=True`` the kernel's zswap on the same workload
(:mod:`zmem._kzswap`).
"""

from __future__ import annotations

import gc
import json
import mmap
import os
import sys
import threading
import time
from array import array
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from ._classes import PAGE_SIZE
from ._swapstore import FileSwapStore, SwapIOError, SwapStore
from ._zswap import EntryState, Zswap

__all__ = [
    "CONFIGS", "DirectFileSwapStore", "PageSet", "PlainSwap", "SimConfig", "access_chunks",
    "format_sweep", "format_table", "load_base", "parse_budget", "run_configs", "run_one",
    "run_swapsim", "select_configs",
]

_POOL = EntryState.POOL


# ----------------------------------------------------------------------
# configurations


@dataclass(frozen=True)
class SimConfig:
    """One swap configuration of the comparison."""

    key: str
    label: str
    zswap: bool = True
    limit_policy: str = "writeback"
    reclaim: str = "object_lru"
    unlimited: bool = False


#: Every configuration ``zmem swapsim`` knows, in table order.
CONFIGS: dict[str, SimConfig] = {c.key: c for c in (
    SimConfig("plain", "plain swap (no zswap)", zswap=False),
    SimConfig("nolimit", "zswap, pool unlimited", unlimited=True),
    SimConfig("kernel", "(a) writeback, object LRU [kernel]"),
    SimConfig("compact", "(b) compact_then_writeback, object LRU", limit_policy="compact_then_writeback"),
    SimConfig("zspage", "(c) writeback, zspage reclaim", reclaim="zspage"),
    SimConfig("compact_zspage", "(b+c) compact_then_writeback, zspage",
              limit_policy="compact_then_writeback", reclaim="zspage"),
)}


def select_configs(policies: Sequence[str] | None = None, reclaims: Sequence[str] | None = None,
                   *, baseline: bool = True, nolimit: bool = True) -> list[SimConfig]:
    """The configurations for the given limit policies and reclaim kinds (default: all)."""
    pols = list(policies or ("writeback", "compact_then_writeback"))
    recs = list(reclaims or ("object_lru", "zspage"))
    out = []
    for c in CONFIGS.values():
        if not c.zswap:
            if baseline:
                out.append(c)
        elif c.unlimited:
            if nolimit:
                out.append(c)
        elif c.limit_policy in pols and c.reclaim in recs:
            out.append(c)
    return out


# ----------------------------------------------------------------------
# pages and accesses


class PageSet:
    """The process's pages: page ``i`` at version ``v`` is base page ``i mod C``, stamped with ``v``."""

    def __init__(self, base: bytes, npages: int, source: str = "") -> None:
        if not base or len(base) % PAGE_SIZE:
            raise ValueError("base must be a non-empty whole number of pages")
        if npages <= 0:
            raise ValueError(f"npages must be positive, got {npages}")
        self.base = base
        self.nbase = len(base) // PAGE_SIZE
        self.npages = npages
        self.source = source

    def page(self, i: int, version: int = 0) -> bytes:
        """The bytes of page ``i`` after ``version`` writes."""
        off = (i % self.nbase) * PAGE_SIZE
        if version:
            return version.to_bytes(4, "little") + self.base[off + 4:off + PAGE_SIZE]
        return self.base[off:off + PAGE_SIZE]


def load_base(corpus: str | None = None, *, capture_mb: int = 64) -> tuple[bytes, str]:
    """Real pages to build a process from: one corpus, all corpora, or a live capture."""
    from ._corpus import all_pages, corpus_names, load_corpus

    if corpus:
        if corpus not in corpus_names():
            raise ValueError(f"unknown corpus {corpus!r} (available: {', '.join(corpus_names()) or 'none'})")
        return load_corpus(corpus), f"corpus {corpus}"
    data = all_pages()
    if data:
        return data, "corpora " + "+".join(corpus_names())
    from ._capture import capture_workload

    return capture_workload(mb=capture_mb), "captured workload"


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator, np.random.Generator]:
    a, b, c = np.random.SeedSequence(seed).spawn(3)
    return (np.random.Generator(np.random.PCG64(a)), np.random.Generator(np.random.PCG64(b)),
            np.random.Generator(np.random.PCG64(c)))


def access_chunks(npages: int, accesses: int, *, zipf: float = 1.0, write_fraction: float = 0.1,
                  seed: int = 1, hot: tuple[float, float] | None = None,
                  chunk: int = 65536) -> Iterator[tuple[list[int], list[bool]]]:
    """The access sequence in chunks of ``chunk``: (pages, is_write) lists.

    Ranks are drawn by inverse CDF from Zipf(``zipf``) over ``npages`` (``zipf
    = 0``: uniform) or, with ``hot = (share, prob)``, uniformly from the hot
    ``share`` of the pages with probability ``prob`` and from the rest
    otherwise; a seeded permutation maps ranks to pages, so hot pages are
    spread over the process.  Independent generators for the permutation,
    the ranks and the writes make the sequence the same for any ``chunk``
    (the kernel workload child regenerates it in its own chunks).
    """
    if accesses < 0 or npages <= 0:
        raise ValueError("accesses must be >= 0 and npages > 0")
    if not 0.0 <= write_fraction <= 1.0:
        raise ValueError(f"write_fraction must be 0..1, got {write_fraction}")
    g_perm, g_rank, g_write = _rngs(seed)
    perm = g_perm.permutation(npages).astype(np.int64)
    cdf = None
    if hot is None:
        if zipf < 0:
            raise ValueError(f"zipf must be >= 0, got {zipf}")
        w = np.arange(1, npages + 1, dtype=np.float64) ** -float(zipf)
        cdf = np.cumsum(w)
        cdf /= cdf[-1]
        del w
    else:
        share, prob = hot
        if not (0 < share < 1 and 0 <= prob <= 1):
            raise ValueError(f"hot must be (share in (0,1), prob in [0,1]), got {hot}")
        nhot = max(1, min(npages - 1, round(share * npages)))
    done = 0
    while done < accesses:
        n = min(chunk, accesses - done)
        u = g_rank.random(n)
        if cdf is not None:
            ranks = np.searchsorted(cdf, u, side="right")
        else:
            hotp = u < prob
            ranks = np.where(hotp, (u / max(prob, 1e-300) * nhot).astype(np.int64),
                             nhot + ((u - prob) / max(1 - prob, 1e-300) * (npages - nhot)).astype(np.int64))
        np.minimum(ranks, npages - 1, out=ranks)
        pages = perm[ranks]
        writes = g_write.random(n) < write_fraction
        yield pages.tolist(), writes.tolist()
        done += n


# ----------------------------------------------------------------------
# stores and the no-zswap backend


class DirectFileSwapStore(SwapStore):
    """A swap file read and written with ``O_DIRECT``: every page costs a disk I/O, as a swap device.

    :class:`~zmem.FileSwapStore` goes through the page cache, so on a
    machine with free RAM its "disk" is a memory copy; this tier sends each
    4 KiB page to the device (one aligned bounce buffer, under a lock).
    Raises OSError at construction where the filesystem refuses ``O_DIRECT``
    (tmpfs).
    """

    name = "direct"

    def __init__(self, nr_slots: int, *, dir: str | os.PathLike | None = None) -> None:
        import tempfile

        super().__init__(nr_slots)
        fd, path = tempfile.mkstemp(prefix="zmem-swap-direct-", dir=dir)
        try:
            os.close(fd)
            self._fd = os.open(path, os.O_RDWR | os.O_DIRECT)
        finally:
            os.unlink(path)
        os.ftruncate(self._fd, nr_slots * PAGE_SIZE)
        self._buf = mmap.mmap(-1, PAGE_SIZE)  # page-aligned
        self._io_lock = threading.Lock()
        try:  # prove the filesystem takes O_DIRECT I/O before anyone relies on it
            os.pwritev(self._fd, [self._buf], 0)
        except OSError:
            self.close()
            raise

    def _write(self, offset: int, page) -> None:
        with self._io_lock:
            self._buf[:] = page
            if os.pwritev(self._fd, [self._buf], offset * PAGE_SIZE) != PAGE_SIZE:
                raise SwapIOError(f"short O_DIRECT write at offset {offset}")

    def _read(self, offset: int) -> bytes:
        with self._io_lock:
            if os.preadv(self._fd, [self._buf], offset * PAGE_SIZE) != PAGE_SIZE:
                raise SwapIOError(f"short O_DIRECT read at offset {offset}")
            return self._buf[:]

    def close(self) -> None:
        if getattr(self, "_fd", -1) >= 0:
            os.close(self._fd)
            self._fd = -1
        buf = getattr(self, "_buf", None)
        if buf is not None and not buf.closed:
            buf.close()


def make_store(kind: str, nr_slots: int, dir: str | None = None) -> tuple[SwapStore, str]:
    """A backing store of ``kind`` ("direct" or "file"); falls back to "file" where O_DIRECT fails."""
    if kind == "direct":
        try:
            return DirectFileSwapStore(nr_slots, dir=dir), "direct"
        except OSError as exc:
            print(f"zmem: note: O_DIRECT swap file refused ({exc.strerror or exc}); "
                  "using the page-cache file store", file=sys.stderr)
            kind = "file"
    if kind != "file":
        raise ValueError(f"store must be 'direct' or 'file', got {kind!r}")
    return FileSwapStore(nr_slots=nr_slots, dir=dir), "file"


class PlainSwap:
    """No zswap: every swap-out is a write to the store; a swap-in reads it (and frees it if ``exclusive``)."""

    def __init__(self, store: SwapStore, exclusive: bool = False) -> None:
        self.backing_store = store
        self.exclusive = exclusive

    def swap_out(self, offset: int, page) -> bool:
        self.backing_store.write_page(offset, page)
        return False

    def load(self, offset: int) -> bytes | None:
        store = self.backing_store
        if not store.contains(offset):
            return None
        page = store.read_page(offset)
        if self.exclusive:
            store.discard(offset)
        return page

    def invalidate(self, offset: int) -> bool:
        return self.backing_store.discard(offset)


# ----------------------------------------------------------------------
# one run


def parse_budget(text: str | float, npages: int) -> int:
    """A budget as pages: a fraction of ``npages`` (0 < x < 1) or a page count (>= 1)."""
    x = float(text)
    if 0 < x < 1:
        pages = round(x * npages)
    elif x >= 1 and x == int(x):
        pages = int(x)
    else:
        raise ValueError(f"budget must be a fraction in (0, 1) or a page count, got {text!r}")
    if not 1 <= pages < npages:
        raise ValueError(f"budget must be 1..{npages - 1} pages (fewer than the process's), got {pages}")
    return pages


def _median_us(a: array) -> float:
    return float(np.median(np.frombuffer(a, dtype=np.int64))) / 1e3 if len(a) else 0.0


def _pct_us(a: array, q: float) -> float:
    return float(np.percentile(np.frombuffer(a, dtype=np.int64), q)) / 1e3 if len(a) else 0.0


def _sum_ns(a: array) -> int:
    return int(np.frombuffer(a, dtype=np.int64).sum()) if len(a) else 0


_DELTA_FIELDS = ("pool_limit_hit", "reject_reclaim_fail", "reject_alloc_fail", "reject_compress_fail",
                 "reject_compress_poor", "decompress_fail", "written_back_pages", "zswpout", "zswpin",
                 "disk_swapins", "limit_compactions", "limit_compacted_pages", "reclaim_pages_freed",
                 "shrink_worker_ns", "limit_compact_ns")


def run_one(pages: PageSet, cfg: SimConfig, *, budget: int, accesses: int, zipf: float = 1.0,
            write_fraction: float = 0.1, seed: int = 1, hot: tuple[float, float] | None = None,
            memory_bytes: int | None = None, pool_percent: int = 10, compressor: str = "lzo",
            store: str = "direct", store_dir: str | None = None, samples: int = 200,
            keep_copies: bool = True, progress: bool = False) -> dict:
    """Run the workload once under ``cfg``; return its figures (JSON-ready).

    ``memory_bytes`` is what ``max_pool_percent`` is a percentage of (the
    kernel's totalram; default: the process's size).  The fill is one
    sequential write of every page; the access phase follows.  Figures
    without a ``fill_`` prefix are for the access phase; ``written_back``
    and the pool samples cover both.  ``keep_copies`` (default, the
    kernel's ``do_swap_page`` while swap is under half full): a read fault
    served by the swap device keeps the slot, so the clean page is dropped,
    not written, when evicted again; False: every swap-in frees the slot.
    """
    N = pages.npages
    M = budget
    if not 1 <= M < N:
        raise ValueError(f"budget must be 1..{N - 1} pages, got {M}")
    mem = memory_bytes if memory_bytes is not None else N * PAGE_SIZE
    backing, store_kind = make_store(store, N, store_dir)
    zs: Zswap | None = None
    if cfg.zswap:
        if cfg.unlimited:
            zs = Zswap(max(mem, 4 * N * PAGE_SIZE), compressor=compressor, max_pool_percent=100,
                       backing_store=backing)
        else:
            zs = Zswap(mem, compressor=compressor, max_pool_percent=pool_percent,
                       limit_policy=cfg.limit_policy, reclaim=cfg.reclaim, backing_store=backing)
        dev = zs
    else:
        dev = PlainSwap(backing, exclusive=not keep_copies)
    try:
        return _drive(pages, cfg, zs, dev, store_kind, M, accesses, zipf, write_fraction, seed, hot,
                      samples, progress, mem, pool_percent, compressor, keep_copies)
    finally:
        if zs is not None:
            zs.close()
        backing.close()


def _drive(pages: PageSet, cfg: SimConfig, zs: Zswap | None, dev, store_kind: str, M: int,
           accesses: int, zipf: float, write_fraction: float, seed: int, hot, samples: int,
           progress: bool, mem: int, pool_percent: int, compressor: str, keep_copies: bool) -> dict:
    N = pages.npages
    pc = time.perf_counter_ns
    page_of = pages.page
    store = dev.backing_store
    # page table, frame table, CLOCK state, versions, "the store holds a valid copy"
    page_frame = array("i", [-1]) * N
    frame_page = array("i", [-1]) * M
    ref = bytearray(M)
    version = array("I", [0]) * N
    has_copy = bytearray(N)
    hand = 0
    nfree = 0  # frames handed out so far (the fill takes them in order)

    # measurements: per-call ns in int64 arrays
    store_own = array("q")
    store_reclaim = array("q")
    load_hit = array("q")
    load_disk = array("q")
    ctr = {"swap_outs": 0, "clean_drops": 0, "rejected": 0, "faults": 0, "hits": 0,
           "store_reads": 0, "mismatches": 0, "lost": 0, "split_calls": 0, "reclaim_calls": 0}
    pool = zs.pool if zs is not None else None
    max_pages = zs.max_pages if zs is not None else 0
    swap_out = dev.swap_out
    load = dev.load
    stats = zs.stats if zs is not None else None
    state = zs.state if zs is not None else None

    def evict() -> int:
        """Free a frame with CLOCK; swap its page out if needed; return the frame."""
        nonlocal hand
        h = hand
        while ref[h]:
            ref[h] = 0
            h += 1
            if h == M:
                h = 0
        hand = h + 1 if h + 1 < M else 0
        victim = frame_page[h]
        page_frame[victim] = -1
        if has_copy[victim]:
            ctr["clean_drops"] += 1
            return h
        data = page_of(victim, version[victim])
        if zs is not None and (zs.reached_full or pool.total_pages >= max_pages):
            was_full = zs.reached_full
            s0 = stats()
            t0 = pc()
            kept = swap_out(victim, data)
            dt = pc() - t0
            s1 = stats()
            dw = s1.shrink_worker_ns - s0.shrink_worker_ns
            dc = s1.limit_compact_ns - s0.limit_compact_ns
            rec = min(dt, max(dw, dc))
            if rec:
                ctr["reclaim_calls"] += 1
                store_reclaim.append(rec)
                if dw and dc and not was_full:
                    ctr["split_calls"] += 1
            store_own.append(dt - rec)
        else:
            t0 = pc()
            kept = swap_out(victim, data)
            store_own.append(pc() - t0)
        ctr["swap_outs"] += 1
        if not kept and zs is not None:
            ctr["rejected"] += 1
        return h

    def fault(p: int, write: bool) -> None:
        hit = state is not None and state(p) == _POOL
        t0 = pc()
        if hit or not keep_copies:
            data = load(p)  # zswap: exclusive (the entry is freed)
        else:
            # not in the pool: the swap core reads the device and keeps the slot
            data = store.read_page(p) if store.contains(p) else None
        dt = pc() - t0
        if hit:
            load_hit.append(dt)
            ctr["hits"] += 1
        else:
            load_disk.append(dt)
            ctr["store_reads"] += 1
        ctr["faults"] += 1
        v = version[p]
        if data is None:
            ctr["lost"] += 1
        elif data != page_of(p, v):
            ctr["mismatches"] += 1
        if write:
            version[p] = v + 1
            if not hit and keep_copies and data is not None:
                dev.invalidate(p)  # a write fault frees the swap slot (do_swap_page)
        # while p is resident: does the swap device still hold a valid copy?
        has_copy[p] = 1 if (not hit and keep_copies and not write and data is not None) else 0
        f = evict()
        frame_page[f] = p
        page_frame[p] = f
        ref[f] = 1

    samples_out: list[list[float]] = []

    def sample(x: float) -> None:
        if zs is None:
            samples_out.append([x, 0, 0, 0.0])
            return
        st = stats()
        samples_out.append([x, st.pool_total_size // PAGE_SIZE, st.stored_pages,
                            round(st.compression_ratio, 4)])

    t_start = time.perf_counter()
    # -- fill: write every page once, in order (first touches are not faults)
    step = max(1, N // max(1, samples // 4))
    for p in range(N):
        if nfree < M:
            f = nfree
            nfree += 1
        else:
            f = evict()
        frame_page[f] = p
        page_frame[p] = f
        ref[f] = 1
        if p % step == 0:
            sample(p / N - 1.0)
    fill_ctr = dict(ctr)
    fill_store_ns = _sum_ns(store_own) + _sum_ns(store_reclaim)
    fill_swap_outs = ctr["swap_outs"]
    s_fill = stats() if stats else None
    for a in (store_own, store_reclaim):
        del a[:]
    t_fill = time.perf_counter() - t_start

    # -- access phase
    chunk = max(1024, accesses // max(1, samples))
    done = 0
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=accesses, desc=cfg.key, unit="acc", leave=False, file=sys.stderr)
        except ImportError:
            bar = None
    sample(0.0)
    t0_run = time.perf_counter()
    for pl, wl in access_chunks(N, accesses, zipf=zipf, write_fraction=write_fraction, seed=seed,
                                hot=hot, chunk=chunk):
        for p, w in zip(pl, wl):
            f = page_frame[p]
            if f >= 0:
                ref[f] = 1
                if w:
                    version[p] += 1
                    has_copy[p] = 0
                continue
            fault(p, w)
        done += len(pl)
        sample(done / accesses if accesses else 1.0)
        if bar is not None:
            bar.update(len(pl))
    t_run = time.perf_counter() - t0_run
    if bar is not None:
        bar.close()

    s_end = stats() if stats else None
    faults = ctr["faults"]
    run_swap_outs = ctr["swap_outs"] - fill_swap_outs
    own_ns, rec_ns = _sum_ns(store_own), _sum_ns(store_reclaim)
    lh_ns, ld_ns = _sum_ns(load_hit), _sum_ns(load_disk)
    res: dict = {
        "config": cfg.key, "label": cfg.label, "zswap": cfg.zswap,
        "limit_policy": cfg.limit_policy if cfg.zswap else None,
        "reclaim": cfg.reclaim if cfg.zswap else None, "unlimited": cfg.unlimited,
        "pages": N, "budget": M, "accesses": accesses, "zipf": zipf, "hot": list(hot) if hot else None,
        "write_fraction": write_fraction, "seed": seed, "source": pages.source,
        "keep_copies": keep_copies,
        "compressor": compressor if cfg.zswap else None, "store": store_kind,
        "memory_bytes": mem, "pool_percent": pool_percent if cfg.zswap and not cfg.unlimited else None,
        "max_pages": (zs.max_pages if zs is not None else 0),
        "faults": faults, "hits": ctr["hits"], "store_reads": ctr["store_reads"],
        "hit_rate": ctr["hits"] / faults if faults else 0.0,
        "fault_rate": faults / accesses if accesses else 0.0,
        "swap_outs": run_swap_outs, "clean_drops": ctr["clean_drops"] - fill_ctr["clean_drops"],
        "rejected": ctr["rejected"] - fill_ctr["rejected"], "fill_rejected": fill_ctr["rejected"],
        "fill_swap_outs": fill_swap_outs,
        "mismatches": ctr["mismatches"], "lost": ctr["lost"],
        "store_us_median": _median_us(store_own),
        "store_us_p99": _pct_us(store_own, 99), "load_us_p99": _pct_us(load_hit + load_disk, 99),
        "reclaim_ms_max": (max(store_reclaim) / 1e6 if store_reclaim else 0.0),
        "store_us_mean_own": own_ns / len(store_own) / 1e3 if store_own else 0.0,
        "store_us_mean": (own_ns + rec_ns) / len(store_own) / 1e3 if store_own else 0.0,
        "reclaim_us_per_store": rec_ns / len(store_own) / 1e3 if store_own else 0.0,
        "reclaim_calls": ctr["reclaim_calls"] - fill_ctr["reclaim_calls"],
        "split_calls": ctr["split_calls"],
        "load_us_median": _median_us(load_hit + load_disk),
        "load_hit_us_median": _median_us(load_hit), "load_disk_us_median": _median_us(load_disk),
        "load_us_mean": (lh_ns + ld_ns) / faults / 1e3 if faults else 0.0,
        "fault_us": (own_ns + rec_ns + lh_ns + ld_ns) / faults / 1e3 if faults else 0.0,
        "fill_store_us": fill_store_ns / fill_swap_outs / 1e3 if fill_swap_outs else 0.0,
        "fill_seconds": t_fill, "run_seconds": t_run,
        "samples": samples_out,
    }
    if s_end is not None:
        d = {k: getattr(s_end, k) - getattr(s_fill, k) for k in _DELTA_FIELDS}
        run_ratios = [s[3] for s in samples_out if s[0] >= 0 and s[1] > 0]
        wb_total = s_end.written_back_pages
        freed = s_end.reclaim_pages_freed
        res.update({
            "written_back": wb_total, "written_back_run": d["written_back_pages"],
            "written_back_fill": s_fill.written_back_pages,
            "pool_limit_hit": s_end.pool_limit_hit,
            "rejects": {k: getattr(s_end, k) for k in ("reject_reclaim_fail", "reject_alloc_fail",
                                                      "reject_compress_fail", "reject_compress_poor")},
            "decompress_fail": s_end.decompress_fail,
            "ratio_final": s_end.compression_ratio,
            "ratio_min": min(run_ratios) if run_ratios else 0.0,
            "ratio_after_fill": s_fill.compression_ratio,
            "pool_pages_final": s_end.pool_total_size // PAGE_SIZE,
            "pool_pages_max": max((s[1] for s in samples_out), default=0),
            "stored_pages_final": s_end.stored_pages,
            "incompressible_final": s_end.stored_incompressible_pages,
            "limit_compactions": s_end.limit_compactions,
            "limit_compacted_pages": s_end.limit_compacted_pages,
            "reclaim_pages_freed": freed,
            "freed_per_wb": freed / wb_total if wb_total else 0.0,
            "freed_per_wb_incl_compaction": ((freed + s_end.limit_compacted_pages) / wb_total
                                             if wb_total else 0.0),
            "shrink_worker_s": s_end.shrink_worker_ns / 1e9,
            "limit_compact_s": s_end.limit_compact_ns / 1e9,
            "run_deltas": d,
            "stats": s_end.as_dict(),
        })
    else:
        res.update({"written_back": 0, "written_back_run": 0, "written_back_fill": 0,
                    "pool_limit_hit": 0, "ratio_final": 0.0, "ratio_min": 0.0,
                    "pool_pages_final": 0, "pool_pages_max": 0, "freed_per_wb": 0.0,
                    "freed_per_wb_incl_compaction": 0.0})
    st = dev.backing_store.stats()
    res["store_stats"] = st.as_dict()
    return res


def run_configs(pages: PageSet, configs: Sequence[SimConfig], *, repeat: int = 1,
                progress: bool = False, **kw) -> list[dict]:
    """:func:`run_one` for each configuration; with ``repeat`` > 1 the timings are the best run's.

    Counters do not depend on the repeat (the runs are deterministic); each
    timing field is the minimum over the repeats (best of N).
    """
    out = []
    for cfg in configs:
        best = None
        for _ in range(max(1, repeat)):
            gc.collect()
            r = run_one(pages, cfg, progress=progress, **kw)
            if best is None:
                best = r
            else:
                for k in ("store_us_median", "store_us_mean_own", "store_us_mean",
                          "reclaim_us_per_store", "load_us_median", "load_hit_us_median",
                          "load_disk_us_median", "load_us_mean", "fault_us", "fill_store_us"):
                    if r[k]:
                        best[k] = min(best[k], r[k]) if best[k] else r[k]
        out.append(best)
    return out


# ----------------------------------------------------------------------
# report


def _fmt_int(n: int) -> str:
    return f"{n:,}".replace(",", " ") if n >= 10000 else str(n)


def format_header(r: dict) -> str:
    mib = r["pages"] * PAGE_SIZE / (1 << 20)
    what = (f"zipf {r['zipf']:g}" if not r.get("hot") else
            f"hot/cold {r['hot'][0]:g} of pages get {r['hot'][1]:g} of accesses")
    return (f"swapsim: {r['pages']} pages ({mib:.0f} MiB, {r['source']}), budget {r['budget']} "
            f"frames ({100 * r['budget'] / r['pages']:.0f}%), {r['accesses']} accesses, {what}, "
            f"writes {100 * r['write_fraction']:.0f}%, seed {r['seed']}\n"
            f"         backing store: {r['store']}; zswap pool limit "
            f"{r.get('pool_percent') or '?'}% of {r['memory_bytes'] / (1 << 20):.0f} MiB")


def format_table(results: Sequence[dict]) -> str:
    """The comparison table (one row per configuration)."""
    plain = next((r for r in results if not r["zswap"]), None)
    lim = next((r for r in results if r["zswap"] and not r["unlimited"]), None)
    lines = [format_header(lim or results[0])]
    if lim:
        lines[-1] += f" = {lim['max_pages']} pages, {lim['compressor']}"
    hdr = (f"{'configuration':40} {'faults':>8} {'hit%':>6} {'wb':>8} {'ratio':>5} {'min':>5} "
           f"{'st µs':>6} {'+recl':>6} {'ld µs':>6} {'flt µs':>7} {'vs plain':>8} {'freed/wb':>8}")
    lines += [hdr, "-" * len(hdr)]
    for r in results:
        z = r["zswap"]
        speed = (plain["fault_us"] / r["fault_us"]) if plain and r["fault_us"] else 0.0
        lines.append(
            f"{r['label'][:40]:40} {_fmt_int(r['faults']):>8} "
            f"{(100 * r['hit_rate'] if z else 0):6.1f} {_fmt_int(r['written_back']) if z else '-':>8} "
            + (f"{r['ratio_final']:5.2f} {r['ratio_min']:5.2f} " if z else f"{'-':>5} {'-':>5} ")
            + f"{r['store_us_median']:6.1f} {r['reclaim_us_per_store']:6.1f} {r['load_us_median']:6.1f} "
            f"{r['fault_us']:7.1f} {speed:7.2f}x "
            + (f"{r['freed_per_wb']:8.3f}" if z and r["written_back"] else f"{'-':>8}"))
    lines.append("")
    lines.append("hit% = swap-ins served by the pool; wb = pages written back (fill + run); ratio = "
                 "stored bytes / pool bytes at the end, min = lowest during the run; st µs = median "
                 "swap_out own cost, +recl = inline reclaim (shrink worker, compaction) per swap_out; "
                 "ld µs = median load; flt µs = all swap_out + load time per fault; vs plain = plain "
                 "swap's flt µs / this one's; freed/wb = pool pages freed by writeback per page "
                 "written back.")
    extra = []
    for r in results:
        if r["zswap"] and not r["unlimited"]:
            extra.append(
                f"  {r['config']:15} limit hits {r['pool_limit_hit']}, rejected stores "
                f"{r['fill_rejected']}+{r['rejected']} (fill+run), written back {r['written_back_fill']}"
                f"+{r['written_back_run']}, compactions {r['limit_compactions']} freeing "
                f"{r['limit_compacted_pages']} pages, (writeback+compaction freed)/wb "
                f"{r['freed_per_wb_incl_compaction']:.3f}, load hit/disk median "
                f"{r['load_hit_us_median']:.1f}/{r['load_disk_us_median']:.1f} µs, worker "
                f"{r['shrink_worker_s']:.2f} s (longest inline reclaim {r['reclaim_ms_max']:.1f} ms), "
                f"compaction {r['limit_compact_s']:.2f} s, clean drops {r['clean_drops']}")
    if extra:
        lines.append("per configuration:")
        lines += extra
    bad = [r for r in results if r["mismatches"] or r["lost"]]
    for r in bad:
        lines.append(f"ERROR: {r['config']}: {r['mismatches']} swap-ins with wrong contents, "
                     f"{r['lost']} lost pages")
    return "\n".join(lines) + "\n"


def format_sweep(sweep: Sequence[dict]) -> str:
    """The budget sweep: per budget, hit rate, writeback and µs per fault for each configuration."""
    keys = [r["config"] for r in sweep[0]["results"]]
    labels = {r["config"]: r["config"] for r in sweep[0]["results"]}
    lines = ["budget sweep (hit% / pages written back / µs per fault):"]
    hdr = f"{'budget':>14} " + " ".join(f"{labels[k]:>24}" for k in keys)
    lines += [hdr, "-" * len(hdr)]
    for s in sweep:
        cells = []
        for r in s["results"]:
            if r["zswap"]:
                cells.append(f"{100 * r['hit_rate']:5.1f}% {r['written_back']:>8} {r['fault_us']:7.1f}")
            else:
                cells.append(f"{'-':>6} {r['faults']:>8}f {r['fault_us']:6.1f}")
        lines.append(f"{s['budget']:>7} ({100 * s['budget'] / s['results'][0]['pages']:3.0f}%) "
                     + " ".join(f"{c:>24}" for c in cells))
    lines.append("(plain swap: faults instead of hit% and writeback)")
    return "\n".join(lines) + "\n"


def plot(path: str, results: Sequence[dict], sweep: Sequence[dict] | None = None,
         kernel: dict | None = None) -> None:
    """Pool pages and ratio over the run per configuration (and the kernel's); the sweep if given."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {k: f"C{i}" for i, k in enumerate(CONFIGS)}
    rows = 2 if sweep else 1
    fig, axes = plt.subplots(rows, 2, figsize=(11, 3.6 * rows), squeeze=False)
    ax_p, ax_r = axes[0]
    for r in results:
        if not r["zswap"]:
            continue
        s = np.array(r["samples"], dtype=float)
        c = colors.get(r["config"])
        ax_p.plot(s[:, 0], s[:, 1], label=r["config"], lw=1.2, color=c)
        ok = s[:, 1] > 0
        ax_r.plot(s[ok, 0], s[ok, 3], label=r["config"], lw=1.2, color=c)
    if kernel and kernel.get("samples"):
        s = np.array(kernel["samples"], dtype=float)
        ax_p.plot(s[:, 0], s[:, 1], "k--", label="kernel zswap", lw=1.2)
        ok = s[:, 1] > 0
        ax_r.plot(s[ok, 0], s[ok, 3], "k--", label="kernel zswap", lw=1.2)
    lim = next((r for r in results if r["zswap"] and not r["unlimited"]), None)
    if lim:
        ax_p.axhline(lim["max_pages"], color="grey", lw=0.8, ls=":")
    ax_p.set(title="zswap pool pages", xlabel="fill (-1..0), then accesses (0..1)", ylabel="pages")
    ax_r.set(title="pool compression ratio (stored / pool bytes)", xlabel="fill (-1..0), then accesses (0..1)")
    ax_p.legend(fontsize=7)
    ax_r.legend(fontsize=7)
    if sweep:
        ax_h, ax_t = axes[1]
        keys = [r["config"] for r in sweep[0]["results"]]
        x = [100 * s["budget"] / s["results"][0]["pages"] for s in sweep]
        for k in keys:
            rs = [next(r for r in s["results"] if r["config"] == k) for s in sweep]
            if rs[0]["zswap"]:
                ax_h.plot(x, [100 * r["hit_rate"] for r in rs], "o-", label=k, ms=3, color=colors.get(k))
            ax_t.plot(x, [r["fault_us"] for r in rs], "o-", label=k, ms=3, color=colors.get(k))
        ax_h.set(title="zswap hit rate vs budget", xlabel="budget (% of the process)", ylabel="% of swap-ins")
        ax_t.set(title="µs per fault (store + load) vs budget", xlabel="budget (% of the process)",
                 ylabel="µs", yscale="log")
        ax_h.legend(fontsize=7)
        ax_t.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def _strip(results: Sequence[dict], keep_samples: bool) -> list[dict]:
    return [r if keep_samples else {k: v for k, v in r.items() if k != "samples"} for r in results]


def _mem_total() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    raise OSError("no MemTotal in /proc/meminfo")


def run_swapsim(*, pages: int = 32768, corpus: str | None = None, budget: str = "0.5",
                pool_percent: int | None = None, memory: str | None = None, accesses: int = 1_000_000,
                zipf: float = 1.0, hot: tuple[float, float] | None = None, write_fraction: float = 0.1,
                policies: Sequence[str] | None = None, reclaims: Sequence[str] | None = None,
                compressor: str = "lzo", store: str = "direct", sweep: Sequence[str] | None = None,
                plot_path: str | None = None, json_path: str | None = None, seed: int = 1,
                repeat: int = 1, kernel: bool = False, kernel_plain: bool = False,
                progress: bool = False, out=None) -> int:
    """``zmem swapsim``: run the configurations, print the table (and sweep, kernel); exit status."""
    from ._zram import parse_size

    out = out or sys.stdout
    base, source = load_base(corpus, capture_mb=max(16, min(64, pages * PAGE_SIZE >> 20)))
    ps = PageSet(base, pages, source)
    M = parse_budget(budget, pages)
    if memory is not None:
        mem = parse_size(memory)
    elif kernel:
        mem = _mem_total()  # the kernel's limit is a percentage of totalram
    else:
        mem = pages * PAGE_SIZE
    pct = pool_percent if pool_percent is not None else (1 if kernel else 10)
    configs = select_configs(policies, reclaims)
    kw = {"accesses": accesses, "zipf": zipf, "hot": hot, "write_fraction": write_fraction,
          "seed": seed, "memory_bytes": mem, "pool_percent": pct, "compressor": compressor,
          "store": store}
    results = run_configs(ps, configs, budget=M, repeat=repeat, progress=progress, **kw)
    out.write(format_table(results))
    out.flush()
    report: dict = {"results": _strip(results, True)}
    sweep_out = None
    if sweep:
        sweep_out = []
        for b in sweep:
            mb = parse_budget(b, pages)
            rs = run_configs(ps, configs, budget=mb, repeat=1, progress=progress, **kw)
            sweep_out.append({"budget": mb, "results": _strip(rs, False)})
        out.write("\n" + format_sweep(sweep_out))
        out.flush()
        report["sweep"] = sweep_out
    kres = None
    if kernel:
        from ._kzswap import format_kernel, run_kernel_zswap

        kres = run_kernel_zswap(ps, budget=M, accesses=accesses, zipf=zipf, hot=hot,
                                write_fraction=write_fraction, seed=seed, pool_percent=pct,
                                compressor=compressor, plain=kernel_plain, progress=progress)
        ref = next((r for r in results if r["config"] == "kernel"), None)
        out.write("\n" + format_kernel(kres, ref, results))
        out.flush()
        report["kernel"] = kres
    if plot_path:
        plot(plot_path, results, sweep_out, kres if kres and "skipped" not in kres else None)
        out.write(f"plot: {plot_path}\n")
    if json_path:
        with open(json_path, "w") as f:
            json.dump(report, f, indent=1)
        out.write(f"json: {json_path}\n")
    bad = any(r["mismatches"] or r["lost"] for r in results)
    return 1 if bad else 0
