"""The benchmark runs end to end on a small input and reports what it measured."""

from __future__ import annotations

import json
import random

import pytest

from zmem import bench

PAGE = 4096


def _pages(n: int) -> bytes:
    """Random bytes then zeros, every seventh page zero."""
    r = random.Random(5)
    out = []
    for i in range(n):
        k = r.randint(100, 3000)
        out.append(r.randbytes(k) + bytes(PAGE - k) if i % 7 else bytes(PAGE))
    return b"".join(out)


def test_bench_pool_small():
    r = bench.bench_pool(n=3000, repeat=1)
    assert r["store_ops"] > 0 and r["read_ops"] > 0 and r["free_ops"] > 0
    assert 0 < r["pages_freed"] <= r["pages"] - r["pages_after_compact"]  # frees release zspages too
    assert 0 < r["metadata_bytes_per_object"] < 64
    assert "malloc+write" in bench.format_pool(r)


@pytest.mark.parametrize("workers", [(0,), (0, 1)])
def test_bench_zram_small_without_kernel(workers):
    data = _pages(256)
    r = bench.bench_zram(data, ("lzo",), kernel=False, repeat=2, chunk=64 * PAGE, workers=workers)
    a = r["algorithms"]["lzo"]
    for w in workers:
        assert set(a["ratios"][w]) == {"write/bare_compress", "read/bare_decompress"}
        lo, hi = a["spread"][w]["write/bare_compress"]
        assert 0 < lo <= a["ratios"][w]["write/bare_compress"] <= hi
    # the device written once holds exactly the data's pages
    st = a["mm_stat"]
    assert st["orig_data_size"] == len(data)
    text = bench.format_zram(r)
    assert "n/a" in text and "metadata" in text
    json.dumps(r)  # the --json report


def test_bench_cli_rejects_unknown_benchmark(capsys):
    with pytest.raises(SystemExit) as e:
        bench.main(["nonsense"])
    assert e.value.code == 2
    assert "unknown benchmark" in capsys.readouterr().err
