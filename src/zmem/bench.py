"""Benchmarks: zsmalloc operations, and zram throughput against the bare compressor and the kernel.

``python -m zmem.bench`` (or ``make bench``) measures, in one process and one run:

* **pool**: malloc+write, read and free operations per second on object sizes
  drawn from the corpora compressed with lz4 (a built-in size distribution when
  the corpora are absent), compaction throughput (MB of objects moved per
  second, objects moved per page freed) and metadata bytes per object;
* **zram**: write and read MB/s of :class:`zmem.Zram` on real pages, against
  (a) the bare compressor loop over the same pages and (b) the kernel's zram
  (O_DIRECT, where this process may create a device), reported as ratios;
  metadata bytes per stored page; the process's RSS growth against
  ``mem_used_total`` plus metadata.

Throughput is the best of ``--repeat`` runs; figures are ratios measured in
the same run, which is what survives a noisy machine.
"""

from __future__ import annotations

import argparse
import gc
import json
import mmap
import os
import random
import statistics
import sys
import time
from collections.abc import Callable

from ._classes import PAGE_SIZE
from ._compress import get_codec
from ._zram import Zram
from ._zsmalloc import Pool

__all__ = ["bench_pool", "bench_zram", "load_pages", "main"]

MB = 1e6


def rss_bytes() -> int:
    """Resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load_pages(size: int | None = None, *, progress: bool = False) -> tuple[bytes, str]:
    """Real pages: the shared corpora (replicated up to ``size`` bytes) or a live capture."""
    from ._corpus import all_pages

    data = all_pages()
    source = "corpora"
    if not data:
        from ._capture import capture_workload

        data = capture_workload(mb=max(32, (size or 64 << 20) >> 20))
        source = "captured workload"
    if size:
        size -= size % PAGE_SIZE
        reps = -(-size // len(data))
        if reps > 1:
            data = (data * reps)
        data = data[:size]
    return data, source


def _best(fn: Callable[[], object], repeat: int, setup: Callable[[], object] | None = None) -> float:
    """Fastest of ``repeat`` timed calls of ``fn``; ``setup`` runs untimed before each."""
    best = float("inf")
    for _ in range(repeat):
        if setup is not None:
            setup()
        gc.collect()
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ----------------------------------------------------------------------
# pool


def object_sizes(n: int, seed: int = 1) -> list[int]:
    """``n`` object sizes: lz4 sizes of corpus pages, or a built-in mixture without corpora."""
    from ._corpus import all_pages

    rnd = random.Random(seed)
    data = all_pages()
    if data:
        import lz4.block

        pages = len(data) // PAGE_SIZE
        sizes = []
        for i in range(pages):
            p = data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE]
            c = len(lz4.block.compress(p, store_size=False))
            if c < PAGE_SIZE:
                sizes.append(c)
        return [rnd.choice(sizes) for _ in range(n)]
    # median ~1.4 KiB with a long tail, like lz4 on anonymous memory
    return [max(16, min(PAGE_SIZE, int(rnd.lognormvariate(7.2, 0.45)))) for _ in range(n)]


def bench_pool(n: int = 200_000, repeat: int = 3, seed: int = 1) -> dict:
    """Operations per second of the zsmalloc pool, compaction throughput, metadata."""
    sizes = object_sizes(n, seed)
    blobs = {s: os.urandom(s) for s in set(sizes)}
    objs = [blobs[s] for s in sizes]
    res: dict = {"objects": n, "mean_size": sum(sizes) / n}

    def run_store() -> None:
        nonlocal pool, handles
        pool = Pool()
        handles = pool.store_many(objs)

    pool = Pool()
    handles: list[int] = []
    t_store = _best(run_store, repeat)
    res["store_ops"] = n / t_store
    t_read = _best(lambda: [pool.read(h) for h in handles], repeat)
    res["read_ops"] = n / t_read
    res["metadata_bytes_per_object"] = pool.metadata_bytes() / n
    res["pages"] = pool.total_pages
    # free a random half, then compact
    rnd = random.Random(seed)
    victims = rnd.sample(range(n), n // 2)
    doomed = [handles[i] for i in victims]
    t = time.perf_counter()
    for h in doomed:
        pool.free(h)
    t_free = time.perf_counter() - t
    res["free_ops"] = len(doomed) / t_free
    moved0 = pool.objects_moved
    bytes0 = pool.bytes_moved
    t = time.perf_counter()
    freed = pool.compact()
    t_compact = time.perf_counter() - t
    moved = pool.objects_moved - moved0
    res.update(compact_seconds=t_compact, pages_freed=freed, objects_moved=moved,
               compact_mb_per_s=(pool.bytes_moved - bytes0) / MB / t_compact if t_compact else 0.0,
               objects_moved_per_page_freed=moved / freed if freed else 0.0,
               pages_after_compact=pool.total_pages)
    pool.close()
    return res


# ----------------------------------------------------------------------
# zram


def _bare_compress(pages: list[bytes], name: str) -> Callable[[], object]:
    """The compressor alone over the pages; results are dropped as they come
    (keeping them all would add page faults that no device pays)."""
    comp = get_codec(name).compress

    def run() -> None:
        for p in pages:
            comp(p)
    return run


def _bare_decompress(pages: list[bytes], name: str) -> Callable[[], object]:
    codec = get_codec(name)
    comps = [codec.compress(p) for p in pages]
    dec = codec.decompress_page

    def run() -> None:
        for c in comps:
            dec(c)
    return run


class _KernelDevice:
    """A kernel zram device for timing: O_DIRECT I/O from a page-aligned copy of the data."""

    def __init__(self, data: bytes, name: str) -> None:
        from ._kernel import KernelZram

        self.size = len(data)
        self.buf = mmap.mmap(-1, len(data))
        self.buf[:] = data
        self.mv = memoryview(self.buf)
        self.dev = KernelZram(len(data), name)
        self.fd = os.open(self.dev.path, os.O_RDWR | os.O_DIRECT)

    def empty(self) -> None:
        self.dev.discard(0, self.size)

    def write(self, chunk: int) -> None:
        fd, mv = self.fd, self.mv
        for off in range(0, self.size, chunk):
            os.pwritev(fd, [mv[off:off + chunk]], off)

    def read(self, chunk: int) -> None:
        fd, mv = self.fd, self.mv
        for off in range(0, self.size, chunk):
            os.preadv(fd, [mv[off:off + chunk]], off)

    def close(self) -> None:
        os.close(self.fd)
        self.dev.close()
        self.mv.release()
        self.buf.close()


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def _median(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def bench_zram(data: bytes, algorithms=("lzo", "lz4"), *, kernel: bool = True,
               chunk: int = 1 << 20, repeat: int = 5, workers=(0, 1)) -> dict:
    """Zram write/read against the bare compressor and the kernel, per algorithm.

    Each repetition times, back to back, the bare codec loops, a fresh zmem
    device per worker setting (write, overwrite, read) and the kernel device
    (emptied, then written and read), so a slow moment of the machine hits
    every side of a ratio; ratios are taken per repetition, then the median.
    """
    from ._kernel import kernel_zram_available

    npages = len(data) // PAGE_SIZE
    pages = [data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] for i in range(npages)]
    mb = len(data) / MB
    ok, why = kernel_zram_available() if kernel else (False, "not asked for")
    src = memoryview(data)
    dst = memoryview(bytearray(len(data)))
    results: dict = {"bytes": len(data), "pages": npages, "repeat": repeat, "chunk": chunk,
                     "kernel": ok or why, "algorithms": {}}
    for name in algorithms:
        t: dict[str, list[float]] = {}
        bare_c, bare_d = _bare_compress(pages, name), _bare_decompress(pages, name)
        kdev = _KernelDevice(data, name) if ok else None
        try:
            for _ in range(repeat):
                t.setdefault("bare_compress", []).append(_timed(bare_c))
                for w in workers:
                    z = Zram(len(data), name, workers=w)
                    try:
                        # as the kernel side: writes from views of the data,
                        # reads into a buffer the caller owns (pwritev/preadv)
                        def write() -> None:
                            for off in range(0, len(data), chunk):
                                z.write(off, src[off:off + chunk])

                        def read() -> None:
                            for off in range(0, len(data), chunk):
                                z.read_into(off, dst[off:off + chunk])
                        t.setdefault(f"write_{w}", []).append(_timed(write))
                        t.setdefault(f"overwrite_{w}", []).append(_timed(write))
                        t.setdefault(f"read_{w}", []).append(_timed(read))
                    finally:
                        z.close()
                if kdev is not None:
                    kdev.empty()
                    t.setdefault("kernel_write", []).append(_timed(lambda: kdev.write(chunk)))
                    t.setdefault("kernel_read", []).append(_timed(lambda: kdev.read(chunk)))
                    kdev.empty()
                    t.setdefault("kernel_write_per_page", []).append(
                        _timed(lambda: kdev.write(PAGE_SIZE)))
                    t.setdefault("kernel_read_per_page", []).append(
                        _timed(lambda: kdev.read(PAGE_SIZE)))
                t.setdefault("bare_decompress", []).append(_timed(bare_d))
        finally:
            if kdev is not None:
                kdev.close()
        r: dict = {"mb_s": {k: mb / _median(v) for k, v in t.items()}, "ratios": {}}
        r["spread"] = {}
        for w in workers:
            rr = r["ratios"][w] = {}
            sp = r["spread"][w] = {}
            for op, base in (("write", "bare_compress"), ("read", "bare_decompress"),
                             ("write", "kernel_write"), ("read", "kernel_read")):
                if base in t:
                    per_run = [b / a for a, b in zip(t[f"{op}_{w}"], t[base])]
                    rr[f"{op}/{base}"] = _median(per_run)
                    sp[f"{op}/{base}"] = (min(per_run), max(per_run))
        # memory: RSS growth of one device written once, against what it reports
        gc.collect()
        rss0 = rss_bytes()
        z = Zram(len(data), name)
        for off in range(0, len(data), chunk):
            z.write(off, data[off:off + chunk])
        rss1 = rss_bytes()
        st = z.mm_stat()
        meta = z.metadata_bytes()
        r["mm_stat"] = st.as_dict()
        r["metadata_bytes_per_page"] = meta / npages
        r["rss_growth"] = rss1 - rss0
        r["rss_over_pool_pct"] = 100.0 * ((rss1 - rss0) / (st.mem_used_total + meta) - 1)
        z.close()
        results["algorithms"][name] = r
    return results


# ----------------------------------------------------------------------
# report


def format_pool(r: dict) -> str:
    return "\n".join([
        f"zsmalloc pool: {r['objects']} objects, mean {r['mean_size']:.0f} B",
        f"  malloc+write   {r['store_ops'] / 1e3:8.0f} k ops/s  ({1e6 / r['store_ops']:.2f} us)",
        f"  read           {r['read_ops'] / 1e3:8.0f} k ops/s  ({1e6 / r['read_ops']:.2f} us)",
        f"  free           {r['free_ops'] / 1e3:8.0f} k ops/s  ({1e6 / r['free_ops']:.2f} us)",
        f"  compaction     {r['compact_mb_per_s']:8.1f} MB/s moved, {r['objects_moved']} objects,"
        f" {r['pages_freed']} pages freed ({r['objects_moved_per_page_freed']:.1f} objects per page)",
        f"  metadata       {r['metadata_bytes_per_object']:8.1f} bytes per object",
    ])


def format_zram(r: dict) -> str:
    lines = [f"zram on {r['pages']} real pages ({r['bytes'] / MB:.0f} MB), {r['chunk'] >> 10} KiB per call, "
             f"median of {r['repeat']} interleaved runs:"]
    lines.append(f"  {'algo':6} {'workers':>7} {'write':>9} {'read':>9} {'overwrite':>10}   "
                 f"{'w/bare':>6} {'r/bare':>6}   {'w/kernel':>8} {'r/kernel':>8}")
    for name, a in r["algorithms"].items():
        m = a["mb_s"]
        for w, rr in a["ratios"].items():
            lines.append(
                f"  {name:6} {w:>7} {m[f'write_{w}']:7.0f}MB {m[f'read_{w}']:7.0f}MB {m[f'overwrite_{w}']:8.0f}MB   "
                f"{rr['write/bare_compress']:6.2f} {rr['read/bare_decompress']:6.2f}   "
                + (f"{rr['write/kernel_write']:8.2f} {rr['read/kernel_read']:8.2f}"
                   if "write/kernel_write" in rr else f"{'n/a':>8} {'n/a':>8}"))
    if any("write/kernel_write" in rr for a in r["algorithms"].values() for rr in a["ratios"].values()):
        lines.append("  against the kernel, lowest and highest of the runs:")
        for name, a in r["algorithms"].items():
            for w, sp in a["spread"].items():
                if "write/kernel_write" in sp:
                    (wl, wh), (rl, rh) = sp["write/kernel_write"], sp["read/kernel_read"]
                    lines.append(f"  {name:6} {w:>7}   write {wl:.2f}-{wh:.2f}   read {rl:.2f}-{rh:.2f}")
    lines.append("  reference MB/s (same runs):")
    for name, a in r["algorithms"].items():
        m = a["mb_s"]
        k = (f"kernel zram write {m['kernel_write']:.0f} (per-page pwrite {m['kernel_write_per_page']:.0f}), "
             f"read {m['kernel_read']:.0f} (per-page {m['kernel_read_per_page']:.0f})"
             if "kernel_write" in m else f"kernel: {r['kernel']}")
        lines.append(f"  {name:6} bare compress {m['bare_compress']:.0f}, decompress "
                     f"{m['bare_decompress']:.0f}; {k}")
        lines.append(f"  {'':6} metadata {a['metadata_bytes_per_page']:.1f} B/page; process RSS grew "
                     f"{a['rss_over_pool_pct']:+.1f}% vs mem_used_total + metadata")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zmem.bench", description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="*", help="pool and/or zram (default: both)")
    ap.add_argument("--size", default="256M", help="bytes of real pages for zram (default 256M)")
    ap.add_argument("--objects", type=int, default=200_000, help="objects for the pool benchmark")
    ap.add_argument("--algorithms", default="lzo,lz4")
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--no-kernel", action="store_true")
    ap.add_argument("--workers", default="0,1",
                    help="codec worker settings to compare for zram (default 0,1)")
    ap.add_argument("--json", help="write all figures to this file")
    args = ap.parse_args(argv)
    from ._zram import parse_size

    what = args.what or ["pool", "zram"]
    bad = set(what) - {"pool", "zram"}
    if bad:
        ap.error(f"unknown benchmark {sorted(bad)}: choose pool and/or zram")
    args.what = what

    out: dict = {}
    if "pool" in args.what:
        out["pool"] = bench_pool(args.objects, args.repeat)
        print(format_pool(out["pool"]), flush=True)
    if "zram" in args.what:
        data, source = load_pages(parse_size(args.size))
        out["zram"] = bench_zram(data, tuple(args.algorithms.split(",")), kernel=not args.no_kernel,
                                 repeat=args.repeat,
                                 workers=tuple(int(w) for w in args.workers.split(",")))
        out["zram"]["source"] = source
        print(format_zram(out["zram"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
