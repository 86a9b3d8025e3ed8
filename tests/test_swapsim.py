"""Tests of the swap workload driver (zmem._swapsim), ``zmem swapsim`` and the kernel side (zmem._kzswap).

Small runs only: a few thousand pages and tens of thousands of accesses.
The kernel test needs root, a loop device, a memory cgroup and zswap; it
skips cleanly elsewhere and checks that every change it made to the machine
(swap, loop device, cgroup, zswap parameters) is undone, also when the run
fails half-way.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

import zmem._swapsim as sim
from zmem import Zswap
from zmem._corpus import all_pages
from zmem._swapsim import (
    CONFIGS,
    PageSet,
    PlainSwap,
    access_chunks,
    parse_budget,
    run_one,
    select_configs,
)
from zmem.cli import main

PAGE = 4096
TIMING_KEYS = {"store_us_median", "store_us_mean_own", "store_us_mean", "reclaim_us_per_store",
               "load_us_median", "load_hit_us_median", "load_disk_us_median", "load_us_mean",
               "fault_us", "fill_store_us", "fill_seconds", "run_seconds", "shrink_worker_s",
               "limit_compact_s", "stats", "run_deltas", "split_calls", "reclaim_calls",
               "store_us_p99", "load_us_p99", "reclaim_ms_max"}


def _synthetic_base(n: int = 512, seed: int = 3) -> bytes:
    """Pages compressing about 2x, in a few size classes (when the corpora are absent)."""
    rnd = random.Random(seed)
    out = bytearray()
    for i in range(n):
        k = rnd.choice((600, 1200, 1800, 2400, 3000))
        body = i.to_bytes(4, "little") + rnd.randbytes(k)
        out += body + bytes(PAGE - len(body))
    return bytes(out)


@pytest.fixture(scope="module")
def pages() -> PageSet:
    data = all_pages()
    base = data[:2048 * PAGE] if data else _synthetic_base()
    return PageSet(base, 3072, "test")


def _small(pages: PageSet, key: str, **kw) -> dict:
    # The pool limit (20% of the process: ~600 pages) must be well above the
    # pool's per-class floor (a zspage of up to 8 pages for each of the ~70
    # size classes in use), or fragmentation, not the policy, decides.
    args = {"budget": 1536, "accesses": 30_000, "zipf": 0.9, "write_fraction": 0.2, "seed": 7,
            "pool_percent": 20, "store": "file", "samples": 40}
    args.update(kw)
    return run_one(pages, CONFIGS[key], **args)


def _counters(r: dict) -> dict:
    return {k: v for k, v in r.items() if k not in TIMING_KEYS}


# ---------------------------------------------------------------------------
# pages and accesses


def test_page_versions(pages: PageSet) -> None:
    p0 = pages.page(5)
    assert len(p0) == PAGE and p0 == pages.base[5 * PAGE:6 * PAGE]
    p3 = pages.page(5, 3)
    assert p3[:4] == (3).to_bytes(4, "little") and p3[4:] == p0[4:]
    assert pages.page(5 + pages.nbase) == p0  # replicated beyond the base


def test_access_sequence_is_seeded_and_chunk_independent() -> None:
    def seq(chunk: int, seed: int = 1):
        pl, wl = [], []
        for p, w in access_chunks(5000, 12345, zipf=1.0, write_fraction=0.3, seed=seed, chunk=chunk):
            pl += p
            wl += w
        return pl, wl

    a = seq(1000)
    assert a == seq(4096) == seq(100_000)
    assert a != seq(1000, seed=2)
    pl, wl = a
    assert len(pl) == 12345 and all(0 <= p < 5000 for p in pl)
    assert 0.25 < sum(wl) / len(wl) < 0.35
    # skew: the most popular page gets far more than a uniform share
    top = max(pl.count(p) for p in set(pl[:2000]))
    assert top > 20 * len(pl) / 5000


def test_hot_cold_sequence() -> None:
    pl = [p for ps, _ in access_chunks(1000, 20000, hot=(0.1, 0.9), seed=3) for p in ps]
    counts = sorted((pl.count(p) for p in set(pl)), reverse=True)
    assert sum(counts[:100]) / len(pl) > 0.85


def test_parse_budget() -> None:
    assert parse_budget("0.5", 1000) == 500
    assert parse_budget("250", 1000) == 250
    for bad in ("0", "1000", "1.5", "-3", "0.0001"):
        with pytest.raises(ValueError):
            parse_budget(bad, 1000)


# ---------------------------------------------------------------------------
# the driver


def test_accounting_is_consistent(pages: PageSet) -> None:
    for key in ("plain", "kernel", "zspage"):
        for keep in (True, False):
            r = _small(pages, key, keep_copies=keep)
            assert r["faults"] > 500, key
            assert r["faults"] == r["hits"] + r["store_reads"], key
            assert r["mismatches"] == 0 and r["lost"] == 0, key
            # every fault evicts one page: written, or dropped (clean, its copy kept)
            assert r["swap_outs"] + r["clean_drops"] == r["faults"]
            assert r["store_stats"]["reads"] == r["store_reads"]
            swapped = pages.npages - r["budget"]
            stored = r["store_stats"]["stored_pages"]
            if key == "plain":
                assert r["hits"] == 0
                assert (r["clean_drops"] > 0) == keep
                assert stored == swapped if not keep else stored >= swapped
                continue
            st = r["stats"]
            d = r["run_deltas"]
            # zswap's own counters agree with the driver's
            assert d["zswpin"] == r["hits"]
            assert d["disk_swapins"] == (0 if keep else r["store_reads"])
            assert r["written_back"] == st["written_back_pages"] > 0
            assert r["swap_outs"] == d["zswpout"] + r["rejected"]
            assert r["pool_limit_hit"] > 0
            assert 0 < r["ratio_min"] <= r["ratio_final"]
            # every swapped-out page is in the pool or the store, never neither
            # (with kept copies the store also holds clean resident pages' copies)
            if keep:
                assert st["stored_pages"] + stored >= swapped and r["clean_drops"] > 0
            else:
                assert st["stored_pages"] + stored == swapped and r["clean_drops"] == 0


def test_pages_read_back_are_the_pages_written(pages: PageSet, monkeypatch) -> None:
    """An independent model: every swap-in returns exactly what swap_out was last given for it."""
    model: dict[int, bytes] = {}
    checked = {"pool": 0, "store": 0}

    class Recording(Zswap):
        def swap_out(self, offset, page):
            model[offset] = bytes(page)
            return super().swap_out(offset, page)

        def load(self, offset):
            page = super().load(offset)  # exclusive: the copy is gone
            assert page == model.pop(offset), f"offset {offset}: wrong contents"
            checked["pool"] += 1
            return page

        def invalidate(self, offset):
            model.pop(offset, None)
            return super().invalidate(offset)

    make_store = sim.make_store

    def recording_store(*a, **kw):
        store, kind = make_store(*a, **kw)
        read = store.read_page

        def read_page(offset):
            page = read(offset)
            assert page == model[offset], f"offset {offset}: wrong contents from the store"
            checked["store"] += 1
            return page

        store.read_page = read_page
        return store, kind

    monkeypatch.setattr(sim, "Zswap", Recording)
    monkeypatch.setattr(sim, "make_store", recording_store)
    for key in ("kernel", "compact_zspage"):
        for keep in (True, False):
            model.clear()
            r = _small(pages, key, accesses=15_000, keep_copies=keep)
            assert r["mismatches"] == 0 and r["lost"] == 0
    assert checked["pool"] > 500 and checked["store"] > 500


def test_the_driver_detects_corruption(pages: PageSet, monkeypatch) -> None:
    class Flipping(Zswap):
        n = 0

        def load(self, offset):
            page = super().load(offset)
            Flipping.n += 1
            if page is not None and Flipping.n % 50 == 0:
                page = bytes([page[0] ^ 1]) + page[1:]
            return page

    monkeypatch.setattr(sim, "Zswap", Flipping)
    r = _small(pages, "kernel", accesses=10_000)
    assert r["mismatches"] == r["hits"] // 50 > 0


def test_plain_swap_keeps_clean_copies(pages: PageSet) -> None:
    ro = _small(pages, "plain", write_fraction=0.0, accesses=10_000)
    rw = _small(pages, "plain", write_fraction=1.0, accesses=10_000)
    assert ro["faults"] == rw["faults"]  # the page sequence is the same
    # every fault evicts one page: written, or dropped when clean with its copy kept.
    # Read-only: pages swapped in and evicted again are dropped (only the pages
    # dirtied by the fill are written); all writes: every eviction writes.
    assert ro["swap_outs"] + ro["clean_drops"] == ro["faults"]
    assert ro["clean_drops"] > 0 and ro["swap_outs"] <= ro["budget"]
    assert rw["clean_drops"] == 0 and rw["swap_outs"] == rw["faults"]
    dev = PlainSwap(sim.FileSwapStore(nr_slots=4))
    assert dev.load(1) is None and dev.swap_out(1, pages.page(1)) is False
    assert dev.load(1) == pages.page(1) == dev.load(1)  # the copy is kept
    assert dev.invalidate(1) and dev.load(1) is None
    dev.backing_store.close()


def test_runs_are_deterministic(pages: PageSet) -> None:
    a = _small(pages, "compact", accesses=10_000)
    b = _small(pages, "compact", accesses=10_000)
    assert _counters(a) == _counters(b)
    c = _small(pages, "compact", accesses=10_000, seed=8)
    assert _counters(c) != _counters(a)


def test_compact_then_writeback_writes_back_no_more(pages: PageSet) -> None:
    wb = _small(pages, "kernel")
    ct = _small(pages, "compact")
    assert ct["limit_compactions"] > 0 and wb["limit_compactions"] == 0
    assert ct["written_back"] <= wb["written_back"]
    assert ct["hit_rate"] >= wb["hit_rate"]
    assert ct["ratio_min"] >= wb["ratio_min"]
    # With zspage reclaim it is not guaranteed: compaction moves objects into
    # destination zspages without moving those on the zspage LRU (ordered by
    # the last allocation into them), so a zspage reclaimed whole may hold
    # objects stored recently.  Seen: +4 % on the synthetic pages; on the
    # corpora it writes back a little less.  Bounded, not ordered.
    wb = _small(pages, "zspage")
    ct = _small(pages, "compact_zspage")
    assert ct["written_back"] <= 1.1 * wb["written_back"]
    assert ct["hit_rate"] >= wb["hit_rate"] - 0.02


def test_unlimited_pool_serves_every_fault(pages: PageSet) -> None:
    r = _small(pages, "nolimit", accesses=10_000)
    assert r["hit_rate"] == 1.0 and r["written_back"] == 0 and r["store_reads"] == 0


def test_zspage_reclaim_frees_more_per_page_written_back(pages: PageSet) -> None:
    lru = _small(pages, "kernel")
    zsp = _small(pages, "zspage")
    assert zsp["freed_per_wb"] > lru["freed_per_wb"] > 0


def test_direct_store(pages: PageSet, tmp_path: Path) -> None:
    try:
        st = sim.DirectFileSwapStore(16, dir=tmp_path)
    except OSError as exc:
        pytest.skip(f"O_DIRECT not supported here: {exc}")
    page = pages.page(3, 9)
    st.write_page(5, page)
    assert st.read_page(5) == page
    st.close()
    assert not list(tmp_path.iterdir())  # anonymous: nothing left behind
    r = _small(pages, "kernel", accesses=5_000, store="direct", store_dir=str(tmp_path))
    assert r["store"] == "direct" and r["mismatches"] == 0 and r["store_reads"] > 0


def test_select_configs() -> None:
    assert [c.key for c in select_configs()] == list(CONFIGS)
    keys = [c.key for c in select_configs(["compact_then_writeback"], ["object_lru"])]
    assert keys == ["plain", "nolimit", "compact"]


# ---------------------------------------------------------------------------
# the command


def test_cli_swapsim_prints_the_table(tmp_path: Path, capsys) -> None:
    js = tmp_path / "out.json"
    png = tmp_path / "out.png"
    rc = main(["swapsim", "--pages", "1536", "--budget", "0.5", "--accesses", "8000",
               "--store", "file", "--sweep", "0.3,0.7", "--json", str(js), "--plot", str(png)])
    out = capsys.readouterr().out
    assert rc == 0, out
    for c in CONFIGS.values():
        assert c.label[:40] in out
    for col in ("hit%", "ratio", "st µs", "ld µs", "flt µs", "vs plain", "freed/wb"):
        assert col in out
    assert "budget sweep" in out
    data = json.loads(js.read_text())
    assert len(data["results"]) == len(CONFIGS) and len(data["sweep"]) == 2
    assert png.stat().st_size > 1000


def test_cli_swapsim_one_policy(capsys) -> None:
    rc = main(["swapsim", "--pages", "1024", "--accesses", "3000", "--store", "file",
               "--policy", "compact_then_writeback", "--reclaim", "zspage", "--hot", "0.2:0.8"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "compact_then_writeback, zspage" in out and "[kernel]" not in out


def test_cli_swapsim_errors(capsys) -> None:
    assert main(["swapsim", "--pages", "1024", "--budget", "1024"]) == 1
    assert "budget" in capsys.readouterr().err
    assert main(["swapsim", "--hot", "2:1"]) == 2
    assert main(["swapsim", "--policy", "nope"]) == 2


# ---------------------------------------------------------------------------
# the kernel's zswap


def _machine_state() -> dict:
    from zmem._kzswap import PARAM_NAMES, STATE_PATH, ZSWAP_PARAMS, _memory_cgroup_base

    base = _memory_cgroup_base()
    cgs = sorted(p.name for p in base[1].glob("zmem-*")) if base else []
    return {
        "params": {n: (ZSWAP_PARAMS / n).read_text() for n in PARAM_NAMES},
        "swaps": Path("/proc/swaps").read_text(),
        "cgroups": cgs,
        "swap_files": sorted(p.name for p in Path("/var/tmp").glob("zmem-kswap-*")),
        "state_file": STATE_PATH.exists(),
        "tmp": sorted(p.name for p in Path("/tmp").glob("zmem-kzswap-*")) +
        sorted(p.name for p in Path("/tmp").glob("zmem-debugfs-*")),
        "loops": os.popen("losetup -a 2>/dev/null").read(),
    }


@pytest.fixture
def kernel_zswap():
    from zmem._kzswap import kernel_zswap_available

    ok, why = kernel_zswap_available()
    if not ok:
        pytest.skip(f"kernel zswap unavailable: {why}")
    before = _machine_state()
    yield
    assert _machine_state() == before, "the kernel run left changes behind"


@pytest.mark.kernel
def test_kernel_zswap_side_by_side(kernel_zswap) -> None:
    from zmem._kzswap import format_kernel, run_kernel_zswap

    data = all_pages()
    ps = PageSet(data[:2048 * PAGE] if data else _synthetic_base(), 4096, "test")
    k = run_kernel_zswap(ps, budget=2048, accesses=20_000, zipf=0.9, write_fraction=0.2, seed=7,
                         pool_percent=1, verify=4096)
    if "skipped" in k:
        pytest.skip(k["skipped"])
    assert k["cleaned_up"], k["notes"]
    assert k["verify_mismatches"] == 0 and k["verified_pages"] == 4096
    assert k["vmstat_fill"]["zswpout"] > 1000  # the fill's reclaim went through zswap
    assert k["swapins"] > 0 and k["majflt"] > 0
    assert k["params"]["enabled"] == "Y" and k["params"]["max_pool_percent"] == "1"
    text = format_kernel(k)
    assert "kernel zswap" in text and "pool_limit_hit=" in text


@pytest.mark.kernel
def test_kernel_zswap_cleans_up_after_a_failure(kernel_zswap, monkeypatch) -> None:
    import zmem._kzswap as kz

    def boom(setup, *a, **kw):
        assert (kz.ZSWAP_PARAMS / "enabled").read_text().strip() == "Y"
        assert setup.cgroup.is_dir()
        raise RuntimeError("boom")

    monkeypatch.setattr(kz, "_run_child", boom)
    ps = PageSet(_synthetic_base(64), 512, "test")
    with pytest.raises(RuntimeError, match="boom"):
        kz.run_kernel_zswap(ps, budget=256, accesses=100)
