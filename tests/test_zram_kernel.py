"""zmem's Zram side by side with the kernel's zram on the same operation traces.

Needs root and /sys/class/zram-control; skipped cleanly elsewhere.  Every kernel
device a test creates (directly, through zmem._compare.replay or through
kernel_compressed_sizes) is tracked and must be closed and removed by the end of
the test; a leftover is closed by the fixture and fails the test.

Figures that are reported rather than asserted tightly (mem_used_total drift on
real pages, lz4's aggregate size difference) are printed: run with ``-s``.
"""

from __future__ import annotations

import errno
import random
from pathlib import Path

import pytest

import zmem._kernel as _kernel
from zmem import MmStat, Zram, get_codec
from zmem._compare import EXACT_FIELDS, replay, standard_trace, synthetic_pages
from zmem._corpus import corpus_names, load_corpus
from zmem._kernel import kernel_compressed_sizes, kernel_zram_available

pytestmark = pytest.mark.kernel

PAGE = 4096
AVAILABLE, WHY = kernel_zram_available()
ALL_FIELDS = EXACT_FIELDS + ("mem_limit", "mem_used_max")
CORPORA = corpus_names()


@pytest.fixture(autouse=True)
def kernel_devices(monkeypatch):
    """Skip without kernel zram; track every KernelZram made during the test."""
    if not AVAILABLE:
        pytest.skip(f"kernel zram unavailable: {WHY}")
    created: list = []
    base = _kernel.KernelZram

    class Tracked(base):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    # replay() imports KernelZram from zmem._kernel at call time, and
    # kernel_compressed_sizes looks it up as a module global: both see this.
    monkeypatch.setattr(_kernel, "KernelZram", Tracked)
    yield created
    leaked = [d for d in created if not d.closed]
    for d in leaked:
        d.close()
    assert not leaked, f"devices left open: {[d.name for d in leaked]}"


def _kdev(disksize: int, algo: str = "lzo", mem_limit: int = 0):
    return _kernel.KernelZram(disksize, algo, mem_limit=mem_limit)


def _first_divergence(results, fields=ALL_FIELDS):
    for i, r in enumerate(results):
        d = r.diff(fields)
        if d:
            return f"step {i} ({r.op.describe()}): {d}"
    return None


def _exercised(results):
    last = results[-1]
    return last.kernel.pages_compacted > 0 and last.kernel.huge_pages > 0


def _python_lzo_size(page: bytes) -> int:
    """What zram stores for the page with python-lzo: 0 same-filled, 4096 huge."""
    if page == page[:8] * 512:
        return 0
    n = len(get_codec("lzo").compress(page))
    return PAGE if n >= 3625 else n


# ----------------------------------------------------------------------
# (1) synthetic pages: exact at every step

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_synthetic_pages_identical_at_every_step(seed):
    npages = 4096
    pages = synthetic_pages(npages, seed=seed)
    ops = standard_trace(pages, rounds=4, seed=seed + 10)
    results = replay(ops, npages * PAGE, "lzo", every=32)
    assert len(results) > 50
    assert _first_divergence(results) is None, _first_divergence(results)
    assert _exercised(results)
    last = results[-1]
    assert last.kernel.same_pages > 0 and last.kernel.mem_used_max > last.kernel.mem_used_total


def test_synthetic_trace_with_mem_used_max_resets():
    """replay() has no op for it, so drive both devices by hand."""
    npages = 1024
    pages = synthetic_pages(npages, seed=7)
    ops = standard_trace(pages, rounds=3, seed=3)
    with _kdev(npages * PAGE) as k, Zram(npages * PAGE, "lzo") as z:
        for n, op in enumerate(ops):
            for dev in (k, z):
                if op.kind == "write":
                    dev.write(op.index * PAGE, op.data)
                elif op.kind == "discard":
                    dev.discard(op.index * PAGE, op.count * PAGE)
                else:
                    dev.compact()
            if op.kind == "compact":
                for dev in (k, z):
                    dev.reset_mem_used_max()
            if op.kind == "compact" or n % 97 == 0:
                km, zm = MmStat(**k.mm_stat()), z.mm_stat()
                assert zm == km, f"op {n} ({op.describe()}): zmem {zm} kernel {km}"
        assert k.io_stat()["notify_free"] == z.io_stat().notify_free > 0


# ----------------------------------------------------------------------
# (2) real pages whose kernel lzo size equals python-lzo's: exact at every step

@pytest.fixture(scope="module")
def matching_real_pages():
    if not CORPORA:
        pytest.skip("no corpora")
    if not AVAILABLE:
        pytest.skip(f"kernel zram unavailable: {WHY}")
    out = []
    for name in CORPORA:
        data = load_corpus(name)
        ks = kernel_compressed_sizes(data, "lzo")
        for i, ksz in enumerate(ks):
            page = data[i * PAGE:(i + 1) * PAGE]
            if ksz == _python_lzo_size(page):
                out.append(page)
    return out


def test_real_pages_with_equal_lzo_sizes_identical_at_every_step(matching_real_pages):
    pages = matching_real_pages[:4096]
    n = len(pages)
    print(f"\n[kernel] real pages with kernel lzo size == python-lzo size: {len(matching_real_pages)}"
          f" (using {n})")
    assert n >= 1000
    ops = standard_trace(b"".join(pages), rounds=3, seed=2)
    results = replay(ops, n * PAGE, "lzo", every=64)
    assert _first_divergence(results) is None, _first_divergence(results)
    assert results[-1].kernel.pages_compacted > 0


# ----------------------------------------------------------------------
# (3) whole corpora with lzo: sizes close, drift reported

@pytest.mark.parametrize("name", CORPORA or ["<none>"])
def test_whole_corpus_lzo(name):
    if not CORPORA:
        pytest.skip("no corpora")
    data = load_corpus(name)
    npages = len(data) // PAGE
    ops = standard_trace(data, rounds=3, seed=4)
    nwrites = -(-npages // 512)  # standard_trace writes the pages in chunks of 512 first
    results = replay(ops, npages * PAGE, "lzo", every=nwrites)
    first = results[0]
    assert all(op.kind == "write" for op in ops[:nwrites])
    zc, kc = first.zmem.compr_data_size, first.kernel.compr_data_size
    assert first.zmem.orig_data_size == first.kernel.orig_data_size == npages * PAGE
    assert first.zmem.same_pages == first.kernel.same_pages
    rel = (zc - kc) / kc
    drifts = [(r.zmem.mem_used_total - r.kernel.mem_used_total) / r.kernel.mem_used_total
              for r in results if r.op.kind == "compact" and r.kernel.mem_used_total]
    last = results[-1]
    final = (last.zmem.mem_used_total - last.kernel.mem_used_total) / last.kernel.mem_used_total
    print(f"\n[kernel] {name}: compr_data_size zmem {zc} kernel {kc} ({rel:+.4%}); "
          f"mem_used_total after writes zmem {first.zmem.mem_used_total} kernel "
          f"{first.kernel.mem_used_total}; drift at compactions "
          f"{', '.join(f'{d:+.2%}' for d in drifts)}; final {final:+.2%} "
          f"(zmem {last.zmem.mem_used_total} kernel {last.kernel.mem_used_total}); "
          f"pages_compacted zmem {last.zmem.pages_compacted} kernel {last.kernel.pages_compacted}")
    assert abs(rel) <= 0.005
    assert drifts and all(abs(d) < 0.10 for d in drifts)


# ----------------------------------------------------------------------
# (4) lz4 on whole corpora

@pytest.mark.parametrize("name", CORPORA or ["<none>"])
def test_whole_corpus_lz4_aggregate_size(name):
    if not CORPORA:
        pytest.skip("no corpora")
    data = load_corpus(name)
    npages = len(data) // PAGE
    with _kdev(npages * PAGE, "lz4") as k, Zram(npages * PAGE, "lz4") as z:
        for i in range(0, npages, 512):
            chunk = data[i * PAGE:(i + 512) * PAGE]
            k.write(i * PAGE, chunk)
            z.write(i * PAGE, chunk)
        km, zm = MmStat(**k.mm_stat()), z.mm_stat()
    rel = (zm.compr_data_size - km.compr_data_size) / km.compr_data_size
    print(f"\n[kernel] {name} lz4: compr_data_size zmem {zm.compr_data_size} kernel "
          f"{km.compr_data_size} ({rel:+.3%}); huge zmem {zm.huge_pages} kernel {km.huge_pages}; "
          f"mem_used_total zmem {zm.mem_used_total} kernel {km.mem_used_total}")
    assert zm.same_pages == km.same_pages
    assert zm.orig_data_size == km.orig_data_size
    assert abs(rel) < 0.05


# ----------------------------------------------------------------------
# (5) mem_limit

def test_mem_limit_matches_kernel():
    npages = 512
    limit = 96 * PAGE
    pages = synthetic_pages(npages, seed=21, same_share=0.1, huge_share=0.05)
    with _kdev(npages * PAGE, "lzo", mem_limit=limit) as k, \
            Zram(npages * PAGE, "lzo", mem_limit=limit) as z:
        outcome = []
        first_fail = None
        for i in range(npages):
            page = pages[i * PAGE:(i + 1) * PAGE]
            ok = []
            try:
                k.write_page(i, page)
                ok.append(True)
            except OSError as e:
                assert e.errno == errno.EIO
                ok.append(False)
            try:
                z.write(i * PAGE, page)
                ok.append(True)
            except MemoryError:
                ok.append(False)
            assert ok[0] == ok[1], f"page {i}: kernel {'ok' if ok[0] else 'EIO'}, zmem {ok[1]}"
            outcome.append(ok[0])
            if not ok[0] and first_fail is None:
                first_fail = i
                km, zm = MmStat(**k.mm_stat()), z.mm_stat()
                assert zm == km, f"at first failure (page {i}): zmem {zm} kernel {km}"
            if first_fail is not None and i >= first_fail + 64:
                break
        assert first_fail is not None
        assert sum(outcome[first_fail:]) > 0  # same-filled pages and room in zspages still succeed
        km, zm = MmStat(**k.mm_stat()), z.mm_stat()
        assert zm == km
        assert km.mem_limit == limit and km.mem_used_total <= limit < km.mem_used_max
        assert z.io_stat().failed_writes == k.io_stat()["failed_writes"] == outcome.count(False)
        # overwrite a stored page with one that needs a new zspage: both keep the old content
        idx = next(i for i, ok in enumerate(outcome) if ok
                   and _python_lzo_size(pages[i * PAGE:(i + 1) * PAGE]) not in (0, PAGE))
        big = random.Random(5).randbytes(PAGE)
        for dev in (k, z):
            with pytest.raises((OSError, MemoryError)):
                dev.write(idx * PAGE, big)
        assert k.read(idx * PAGE, PAGE) == z.read(idx * PAGE, PAGE) == pages[idx * PAGE:(idx + 1) * PAGE]
        assert MmStat(**k.mm_stat()) == z.mm_stat()
        assert z.io_stat().failed_writes == k.io_stat()["failed_writes"]


def test_mem_limit_set_to_current_usage_matches_kernel():
    pages = synthetic_pages(64, seed=3, same_share=0.0, huge_share=0.0)
    with _kdev(64 * PAGE) as k, Zram(64 * PAGE) as z:
        for dev in (k, z):
            dev.write(0, pages[:32 * PAGE])
        used = k.mm_stat()["mem_used_total"]
        assert z.mm_stat().mem_used_total == used
        k.set_mem_limit(used)
        z.mem_limit = used
        fails = 0
        for i in range(32, 64):
            page = pages[i * PAGE:(i + 1) * PAGE]
            r = []
            for dev in (k, z):
                try:
                    dev.write(i * PAGE, page)
                    r.append(True)
                except (OSError, MemoryError):
                    r.append(False)
            assert r[0] == r[1], f"page {i}"
            fails += not r[0]
        assert fails > 0
        assert MmStat(**k.mm_stat()) == z.mm_stat()
        assert k.io_stat()["failed_writes"] == z.io_stat().failed_writes == fails
        assert k.read(0, 64 * PAGE) == z.read(0, 64 * PAGE)


# ----------------------------------------------------------------------
# (6) text formats

def test_stat_text_matches_kernel_files():
    pages = synthetic_pages(256, seed=9)
    with _kdev(256 * PAGE, mem_limit=4 << 20) as k, Zram(256 * PAGE, mem_limit=4 << 20) as z:
        for dev in (k, z):
            dev.write(0, pages)
            dev.discard(16 * PAGE, 8 * PAGE)
            dev.compact()
        sysdir = Path("/sys/block") / k.name
        ktext = k.mm_stat_line()
        ztext = str(z.mm_stat())
        assert len(ktext.split()) == len(ztext.split()) == 9
        assert MmStat.parse(ktext) == z.mm_stat()
        assert ztext == ktext  # same numbers, so the same bytes
        kio = (sysdir / "io_stat").read_text()
        assert len(kio.split()) == len(str(z.io_stat()).split()) == 4
        assert str(z.io_stat()) == kio
        kdbg = (sysdir / "debug_stat").read_text()
        assert str(z.debug_stat()) == kdbg


# ----------------------------------------------------------------------
# edge pages, one at a time, with overwrites

def _page_with_lzo_len(target: int) -> bytes | None:
    r = random.Random(1).randbytes(PAGE)
    lzo = get_codec("lzo")
    for zeros in range(0, 1500):
        p = bytes(zeros) + r[:PAGE - zeros]
        if len(lzo.compress(p)) == target:
            return p
    return None


def test_edge_pages_and_overwrites_match_kernel():
    edge = [
        bytes(PAGE),                                   # zero page: same-filled
        b"ABCDEFGH" * 512,                             # 8-byte pattern: same-filled
        b"ABCDEFGHIJKLMNOP" * 256,                     # 16-byte pattern: compressed
        b"\x11" * (PAGE - 8) + b"\x12" * 8,            # last word differs
        random.Random(2).randbytes(PAGE),              # huge
    ]
    for target in (3624, 3625):                        # either side of huge_class_size
        p = _page_with_lzo_len(target)
        if p is not None:
            edge.append(p)
    ks = kernel_compressed_sizes(b"".join(edge), "lzo")
    assert ks[:5] == [0, 0, _python_lzo_size(edge[2]), _python_lzo_size(edge[3]), PAGE]
    # keep the boundary pages only where the kernel's lzo agrees byte for byte
    edge = edge[:5] + [p for p, k in zip(edge[5:], ks[5:]) if k == _python_lzo_size(p)]
    n = len(edge)
    with _kdev(n * PAGE) as k, Zram(n * PAGE, "lzo") as z:
        for rot in range(n):  # write every page to every slot in turn: each overwrite kind
            for slot in range(n):
                page = edge[(slot + rot) % n]
                k.write_page(slot, page)
                z.write(slot * PAGE, page)
                km, zm = MmStat(**k.mm_stat()), z.mm_stat()
                assert zm == km, f"rot {rot} slot {slot}: zmem {zm} kernel {km}"
        assert k.read(0, n * PAGE) == z.read(0, n * PAGE)
        print(f"\n[kernel] edge pages compared: {n}; final mm_stat {str(z.mm_stat()).strip()}")
