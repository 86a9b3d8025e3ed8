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


def _kernel_io(data: bytes, name: str, chunk: int, repeat: int) -> dict | None:
    from ._kernel import KernelZram, kernel_zram_available

    ok, why = kernel_zram_available()
    if not ok:
        return {"skipped": why}
    buf = mmap.mmap(-1, len(data))
    buf[:] = data
    mv = memoryview(buf)
    out: dict = {}
    try:
        with KernelZram(len(data), name) as dev:
            fd = os.open(dev.path, os.O_RDWR | os.O_DIRECT)
            try:
                def write() -> None:
                    for off in range(0, len(data), chunk):
                        os.pwritev(fd, [mv[off:off + chunk]], off)

                def read() -> None:
                    for off in range(0, len(data), chunk):
                        os.preadv(fd, [mv[off:off + chunk]], off)

                out["write"] = _best(write, repeat)
                out["mm_stat"] = dev.mm_stat()
                out["read"] = _best(read, repeat)
            finally:
                os.close(fd)
    finally:
        mv.release()
        buf.close()
    return out


def bench_zram(data: bytes, algorithms=("lzo", "lz4"), *, kernel: bool = True,
               chunk: int = 1 << 20, repeat: int = 3, workers: int = 0) -> dict:
    """Zram write/read MB/s against the bare compressor and the kernel, per algorithm."""
    npages = len(data) // PAGE_SIZE
    pages = [data[i * PAGE_SIZE:(i + 1) * PAGE_SIZE] for i in range(npages)]
    mb = len(data) / MB
    results: dict = {"bytes": len(data), "pages": npages, "workers": workers, "algorithms": {}}
    for name in algorithms:
        r: dict = {}
        r["bare_compress_mb_s"] = mb / _best(_bare_compress(pages, name), repeat)
        r["bare_decompress_mb_s"] = mb / _best(_bare_decompress(pages, name), repeat)

        z = None

        def fresh() -> None:
            # a new device each time: the first write is what a user sees
            nonlocal z
            if z is not None:
                z.close()
            z = Zram(len(data), name, workers=workers)

        def write() -> None:
            for off in range(0, len(data), chunk):
                z.write(off, data[off:off + chunk])

        def read() -> None:
            for off in range(0, len(data), chunk):
                z.read(off, chunk)

        r["zram_write_mb_s"] = mb / _best(write, repeat, setup=fresh)
        r["zram_overwrite_mb_s"] = mb / _best(write, repeat)
        r["zram_read_mb_s"] = mb / _best(read, repeat)
        z.close()
        # memory: RSS growth of one device written once, against what it reports
        gc.collect()
        rss0 = rss_bytes()
        z = Zram(len(data), name)
        write()
        rss1 = rss_bytes()
        st = z.mm_stat()
        meta = z.metadata_bytes()
        r["mm_stat"] = st.as_dict()
        r["metadata_bytes_per_page"] = meta / npages
        r["rss_growth"] = rss1 - rss0
        r["rss_over_pool_pct"] = 100.0 * ((rss1 - rss0) / (st.mem_used_total + meta) - 1)
        z.close()
        if kernel:
            k = _kernel_io(data, name, chunk, repeat)
            if k and "write" in k:
                r["kernel_write_mb_s"] = mb / k["write"]
                r["kernel_read_mb_s"] = mb / k["read"]
                r["kernel_mm_stat"] = k["mm_stat"]
                k1 = _kernel_io(data, name, PAGE_SIZE, 1)
                if k1 and "write" in k1:
                    r["kernel_write_per_page_mb_s"] = mb / k1["write"]
                    r["kernel_read_per_page_mb_s"] = mb / k1["read"]
            elif k:
                r["kernel_skipped"] = k.get("skipped")
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
    lines = [f"zram on {r['pages']} real pages ({r['bytes'] / MB:.0f} MB), "
             f"{r['workers']} codec worker processes, best of runs:"]
    hdr = f"  {'':8} {'write':>9} {'read':>9}   {'w/bare':>7} {'r/bare':>7}   {'w/kernel':>8} {'r/kernel':>8}"
    lines.append(hdr)
    for name, a in r["algorithms"].items():
        kw, kr = a.get("kernel_write_mb_s"), a.get("kernel_read_mb_s")
        lines.append(f"  {name:8} {a['zram_write_mb_s']:7.0f}MB {a['zram_read_mb_s']:7.0f}MB   "
                     f"{a['zram_write_mb_s'] / a['bare_compress_mb_s']:7.2f} "
                     f"{a['zram_read_mb_s'] / a['bare_decompress_mb_s']:7.2f}   "
                     + (f"{a['zram_write_mb_s'] / kw:8.2f} {a['zram_read_mb_s'] / kr:8.2f}" if kw else
                        f"{'n/a':>8} {'n/a':>8}"))
    lines.append("  reference MB/s:")
    for name, a in r["algorithms"].items():
        k = (f"kernel write {a['kernel_write_mb_s']:.0f} ({a.get('kernel_write_per_page_mb_s', 0):.0f} per-page), "
             f"read {a['kernel_read_mb_s']:.0f} ({a.get('kernel_read_per_page_mb_s', 0):.0f} per-page)"
             if "kernel_write_mb_s" in a else f"kernel: {a.get('kernel_skipped', 'not measured')}")
        lines.append(f"  {name:8} bare compress {a['bare_compress_mb_s']:.0f}, decompress "
                     f"{a['bare_decompress_mb_s']:.0f}; zram overwrite {a['zram_overwrite_mb_s']:.0f}; {k}")
        lines.append(f"  {'':8} metadata {a['metadata_bytes_per_page']:.1f} B/page; RSS growth "
                     f"{a['rss_over_pool_pct']:+.1f}% vs mem_used_total+metadata")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zmem.bench", description=__doc__.splitlines()[0])
    ap.add_argument("what", nargs="*", help="pool and/or zram (default: both)")
    ap.add_argument("--size", default="256M", help="bytes of real pages for zram (default 256M)")
    ap.add_argument("--objects", type=int, default=200_000, help="objects for the pool benchmark")
    ap.add_argument("--algorithms", default="lzo,lz4")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-kernel", action="store_true")
    ap.add_argument("--workers", type=int, default=0,
                    help="codec worker processes for zram writes (default 0: in-process)")
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
                                 repeat=args.repeat, workers=args.workers)
        out["zram"]["source"] = source
        print(format_zram(out["zram"]), flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
