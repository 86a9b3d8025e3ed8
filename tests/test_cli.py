"""Tests of the zmem command (zmem.cli), its zramctl formatting (zmem._zramctl) and the demo."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from zmem import MmStat
from zmem._compare import synthetic_pages
from zmem._kernel import kernel_zram_available
from zmem._zramctl import (
    DEFAULT_COLUMNS,
    DeviceInfo,
    algorithm_from_sysfs,
    build_row,
    format_table,
    human_size,
    kernel_devices,
    parse_columns,
)
from zmem.cli import main

KERNEL, WHY = kernel_zram_available()
REPO = Path(__file__).resolve().parents[1]
MM_STAT_LINE = re.compile(r"^(?:[ \d]{7}\d )+[ \d]{7}\d\n$")
# NAME ALGORITHM, seven sizes, COMP-RATIO, ZERO-PAGES (the demo indents its rows)
ZMEM_ROW = re.compile(r"^ *zmem0 +lzo(?: +\S+){7} +\d+\.\d{4} +\d+$", re.M)


def _zmem_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("zmem")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "zmem"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*_zmem_cmd(), *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def pages_file(tmp_path_factory) -> Path:
    """512 synthetic pages (2 MiB) in a file: quick to load, every size class touched."""
    path = tmp_path_factory.mktemp("data") / "pages.bin"
    path.write_bytes(synthetic_pages(512, seed=3))
    return path


def _zram_devices() -> set[str]:
    return {p.name for p in Path("/sys/block").glob("zram*")}


@pytest.fixture
def kernel_devices_unchanged() -> Iterator[None]:
    if not KERNEL:
        pytest.skip(f"kernel zram unavailable: {WHY}")
    before = _zram_devices()
    yield
    assert _zram_devices() == before, "a kernel zram device was left behind"


# ----------------------------------------------------------------------
# _zramctl: pure formatting

@pytest.mark.parametrize("nbytes, text", [
    # values util-linux 2.38 zramctl printed for real devices
    (0, "0B"), (108, "108B"), (1023, "1023B"), (1024, "1K"), (4096, "4K"),
    (3887075, "3.7M"), (5070848, "4.8M"), (6889472, "6.6M"), (8192000, "7.8M"),
    (12288000, "11.7M"), (36295980, "34.6M"), (38236160, "36.5M"), (81920000, "78.1M"),
    (64 << 20, "64M"), (3 << 30, "3G"), (1288490189, "1.2G"),
    (1048575, "1024K"),  # rounding carries into the integer part, as in C
    (1 << 60, "1E"),
])
def test_human_size_matches_util_linux(nbytes: int, text: str) -> None:
    assert human_size(nbytes) == text


def test_parse_columns() -> None:
    assert parse_columns(None) == list(DEFAULT_COLUMNS)
    assert parse_columns("name,Data,TOTAL") == ["NAME", "DATA", "TOTAL"]
    assert parse_columns("+MIGRATED") == [*DEFAULT_COLUMNS, "MIGRATED"]
    with pytest.raises(ValueError, match="unknown column: FOO"):
        parse_columns("NAME,FOO")
    with pytest.raises(ValueError, match="bad column list"):
        parse_columns("NAME,,DATA")


MM = MmStat(12288000, 5731494, 6889472, 0, 6889472, 139, 0, 189, 189)


def test_build_row_human_and_bytes() -> None:
    dev = DeviceInfo("/dev/zram1", "lzo", 64 << 20, MM)
    assert build_row(dev) == ["/dev/zram1", "lzo", "64M", "11.7M", "5.5M", "6.6M", "0B",
                              "6.6M", "0B", "1.7836", "139"]
    assert build_row(dev, inbytes=True) == ["/dev/zram1", "lzo", str(64 << 20), "12288000",
                                            "5731494", "6889472", "0", "6889472", "0",
                                            "1.7836", "139"]
    empty = DeviceInfo("zmem0", "lz4", 4096, MmStat(*[0] * 9))
    assert build_row(empty, ["COMP-RATIO", "ZERO-PAGES"]) == ["0.0000", "0"]


def test_format_table_aligns_like_libsmartcols() -> None:
    cols = ["NAME", "ALGORITHM", "DISKSIZE", "DATA"]
    rows = [["/dev/zram1", "lzo", "64M", "11.7M"], ["zmem0", "zstd", "1G", "4K"]]
    assert format_table(rows, cols) == (
        "NAME       ALGORITHM DISKSIZE  DATA\n"
        "/dev/zram1 lzo            64M 11.7M\n"
        "zmem0      zstd            1G    4K\n")
    assert format_table(rows, cols, raw=True, headings=False) == (
        "/dev/zram1 lzo 64M 11.7M\nzmem0 zstd 1G 4K\n")


def test_algorithm_from_sysfs() -> None:
    assert algorithm_from_sysfs("lzo-rle [lzo] lz4 zstd\n") == "lzo"
    assert algorithm_from_sysfs("[lzo-rle] lzo\n") == "lzo-rle"
    assert algorithm_from_sysfs("") == ""


def test_kernel_devices_from_fake_sysfs(tmp_path: Path) -> None:
    def dev(name: str, disksize: int, mm: str, alg: str = "lzo-rle [lz4]\n") -> None:
        d = tmp_path / name
        d.mkdir()
        (d / "disksize").write_text(f"{disksize}\n")
        (d / "mm_stat").write_text(mm)
        (d / "comp_algorithm").write_text(alg)

    dev("zram0", 0, "0 0 0 0 0 0 0 0 0\n")  # not initialised: zramctl skips it
    dev("zram10", 1 << 20, str(MM))
    dev("zram2", 2 << 20, "4096 100 8192 0 8192 0 0 0\n")  # an older kernel: 8 fields
    (tmp_path / "loop0").mkdir()
    found = kernel_devices(tmp_path)
    assert [d.name for d in found] == ["/dev/zram2", "/dev/zram10"]
    assert found[0].algorithm == "lz4" and found[0].mm.huge_pages_since == 0
    assert found[1].mm == MM and found[1].disksize == 1 << 20


# ----------------------------------------------------------------------
# subcommands in-process

def test_zramctl_load_file(pages_file: Path, capsys) -> None:
    assert main(["zramctl", "--load", str(pages_file)]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == list(DEFAULT_COLUMNS)
    assert len(rows) == 1 and ZMEM_ROW.match(rows[0])
    assert rows[0].split()[2:4] == ["2M", "2M"]  # DISKSIZE, DATA


def test_zramctl_bytes_match_mm_stat(pages_file: Path, capsys) -> None:
    assert main(["zramctl", "--load", str(pages_file), "--bytes",
                 "-o", "NAME,DATA,COMPR,TOTAL"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert main(["stat", "mm_stat", "--load", str(pages_file)]) == 0
    mm = MmStat.parse(capsys.readouterr().out)
    assert row == ["zmem0", str(mm.orig_data_size), str(mm.compr_data_size), str(mm.mem_used_total)]


def test_zramctl_size_and_algorithm(pages_file: Path, capsys) -> None:
    assert main(["zramctl", "--load", str(pages_file), "--size", "1G", "--algorithm", "zstd",
                 "--raw", "--noheadings", "-o", "NAME,ALGORITHM,DISKSIZE"]) == 0
    assert capsys.readouterr().out == "zmem0 zstd 1G\n"


def test_stat_prints_the_kernel_texts(pages_file: Path, capsys) -> None:
    assert main(["stat", "--load", str(pages_file)]) == 0
    out = capsys.readouterr().out
    parts = re.split(r"^==> (\w+) <==\n", out, flags=re.M)
    assert parts[0] == ""
    files = dict(zip(parts[1::2], parts[2::2]))
    assert list(files) == ["mm_stat", "io_stat", "bd_stat", "debug_stat"]
    # head(1) separates the files with a blank line
    assert files["mm_stat"].endswith("\n\n") and files["debug_stat"].endswith("0\n")
    mm = files["mm_stat"].rstrip("\n") + "\n"
    assert MM_STAT_LINE.match(mm) and len(mm.split()) == 9
    assert mm == "%8d %8d %8d %8d %8d %8d %8d %8d %8d\n" % tuple(map(int, mm.split()))
    assert files["io_stat"] == "       0        0 0        0\n\n"
    assert files["bd_stat"] == "       0        0        0\n\n"
    assert files["debug_stat"] == "version: 1\n0        0\n"


def test_stat_one_file_has_no_header(capsys) -> None:
    assert main(["stat", "io_stat", "--size", "1M"]) == 0
    assert capsys.readouterr().out == "       0        0 0        0\n"
    assert main(["stat", "debug_stat", "mm_stat", "--size", "1M"]) == 0
    assert capsys.readouterr().out.startswith("==> debug_stat <==\nversion: 1\n")


def test_classes(pages_file: Path, capsys) -> None:
    assert main(["classes", "--load", str(pages_file)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:3] == ["class", "size", "10%"] and lines[0].split()[-1] == "freeable"
    assert lines[-1].split()[0] == "Total"
    used = sum(int(line.split()[15]) for line in lines[1:-2])
    assert used == int(lines[-1].split()[14]) > 0  # obj_used column adds up


def test_stat_of_own_process(capsys) -> None:
    assert main(["stat", "mm_stat", "--pid", str(os.getpid())]) == 0
    mm = MmStat.parse(capsys.readouterr().out)
    assert mm.orig_data_size > 1 << 20


# ----------------------------------------------------------------------
# errors

@pytest.mark.parametrize("args, kind, text", [
    (["zramctl", "--corpus", "redis", "--size", "12Q"], "ValueError", "cannot parse size '12Q'"),
    (["zramctl", "--size", "1M", "--algorithm", "nope"], "UnsupportedAlgorithmError",
     "unknown compression algorithm 'nope'"),
    (["zramctl", "--load", "/nonexistent/file"], "FileNotFoundError",
     "No such file or directory: '/nonexistent/file'"),
    (["zramctl", "--corpus", "nope"], "ValueError", "unknown corpus 'nope'"),
    (["zramctl", "--pid", "999999999"], "ProcessLookupError", "no process with pid 999999999"),
    (["zramctl", "--size", "1M", "-o", "NAME,BOGUS"], "ValueError", "unknown column: BOGUS"),
    (["demo", "--algorithm", "842"], "UnsupportedAlgorithmError", "'842' is a kernel zram"),
])
def test_user_errors_one_line_exit_1(args, kind, text, capsys) -> None:
    assert main(args) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"zmem: error: {kind}: ") and text in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_data_larger_than_size(pages_file: Path, capsys) -> None:
    assert main(["classes", "--load", str(pages_file), "--size", "1M"]) == 1
    assert "smaller than the data" in capsys.readouterr().err


@pytest.mark.parametrize("args, text", [
    (["zramctl", "--pid", "abc"], "argument --pid: invalid int value: 'abc'"),
    (["stat", "nosuch", "--size", "1M"], "unknown stat file 'nosuch'"),
    (["stat"], "nothing to load"),
    (["classes", "--load", "a", "--corpus", "b"], "not allowed with argument"),
    (["demo", "--free-share", "1.5"], "must be between 0 and 1"),
    (["demo", "--mb", "0"], "must be a positive integer"),
    (["frobnicate"], "invalid choice"),
    ([], "required"),
])
def test_usage_errors_exit_2(args, text, capsys) -> None:
    assert main(args) == 2
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err


def test_ctrl_c_exits_130(monkeypatch, capsys) -> None:
    import zmem._demo

    def interrupted(**kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zmem._demo, "load_device", interrupted)
    assert main(["classes", "--size", "1M"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "Traceback" not in err


def test_debug_env_shows_the_traceback(monkeypatch) -> None:
    monkeypatch.setenv("ZMEM_DEBUG", "1")
    with pytest.raises(ValueError, match="cannot parse size"):
        main(["classes", "--size", "12Q"])


def test_help_and_version(capsys) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.startswith("zmem ")
    assert main(["zramctl", "--help"]) == 0
    assert "--kernel" in capsys.readouterr().out


def test_compare_without_kernel_exits_2(monkeypatch, capsys) -> None:
    import zmem._demo

    monkeypatch.setattr(zmem._demo, "kernel_zram_available", lambda: (False, "not root"))
    assert main(["compare", "--synthetic", "16"]) == 2
    err = capsys.readouterr().err
    assert err == "zmem: error: compare needs the kernel's zram: not root\n"


# ----------------------------------------------------------------------
# as a subprocess, end to end

def test_subprocess_zramctl_and_error(pages_file: Path) -> None:
    r = run("zramctl", "--load", str(pages_file))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == list(DEFAULT_COLUMNS)
    assert ZMEM_ROW.search(r.stdout)
    r = run("stat", "--size", "64X")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == ("zmem: error: ValueError: cannot parse size '64X': "
                        "use bytes or a K/M/G/T suffix\n")


def test_subprocess_python_m_zmem() -> None:
    r = subprocess.run([sys.executable, "-m", "zmem", "stat", "mm_stat", "--size", "4M"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout == "%8d %8d %8d %8d %8d %8d %8d %8d %8d\n" % ((0,) * 9)


def test_subprocess_zramctl_workload() -> None:
    r = run("zramctl", "--workload", "8", "--bytes", "-o", "NAME,DATA")
    assert r.returncode == 0, r.stderr
    name, data = r.stdout.splitlines()[1].split()
    assert name == "zmem0" and 0 < int(data) <= 8 << 20  # the capture is capped at 8 MiB


def _check_demo(out: str, kernel: bool) -> None:
    for heading in ("workload ", "capture ", "1. Store", "2. Free", "3. Compact", "Summary"):
        assert heading in out
    assert out.count("\n   orig_data_size") == 3
    assert len(ZMEM_ROW.findall(out)) == 3
    assert re.search(r"compaction freed\s+\d+ pages", out)
    assert re.search(r"zmem process RSS\s+[\d.]+ MiB -> [\d.]+ MiB", out)
    assert re.search(r"[\d.]+ bytes per page", out)
    assert ("zmem - kernel" in out) == kernel
    assert ("/dev/zram" in out) == kernel


def test_demo_without_kernel() -> None:
    r = run("demo", "--mb", "16", "--no-kernel")
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    _check_demo(r.stdout, kernel=False)
    assert "not compared (--no-kernel)" in r.stdout
    assert "4096 pages = 16.0 MiB" in r.stdout  # the capture honours --mb


@pytest.mark.kernel
def test_demo_with_kernel(kernel_devices_unchanged) -> None:
    r = run("demo", "--mb", "16")
    assert r.returncode == 0, r.stderr
    _check_demo(r.stdout, kernel=True)
    assert "The kernel, fed the same pages and operations" in r.stdout


@pytest.mark.kernel
def test_compare_with_plot(kernel_devices_unchanged, tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib")
    png = tmp_path / "cmp.png"
    assert main(["compare", "--synthetic", "600", "--rounds", "1", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"steps that differ 0 of \d+", out)
    assert re.search(r"^    zmem\s+(\s*\d+){9}$", out, re.M)
    assert re.search(r"^    kernel\s+(\s*\d+){9}$", out, re.M)
    assert "+0.000% at the end" in out
    assert png.stat().st_size > 1000


@pytest.mark.kernel
def test_compare_algorithm_the_kernel_lacks(kernel_devices_unchanged, capsys) -> None:
    offered = " ".join(p.read_text() for p in Path("/sys/block").glob("zram*/comp_algorithm"))
    if not offered or "zstd" in offered:
        pytest.skip("this kernel's zram may have zstd")
    assert main(["compare", "--synthetic", "16", "--algorithm", "zstd"]) == 2
    assert "the kernel's zram refused zstd" in capsys.readouterr().err


@pytest.mark.kernel
def test_zramctl_kernel_rows_match_util_linux(kernel_devices_unchanged, capsys) -> None:
    from zmem._kernel import KernelZram

    with KernelZram(8 << 20, "lzo") as k:
        k.write(0, synthetic_pages(700, seed=5))
        assert main(["zramctl", "--kernel", "-o", "NAME,DISKSIZE,DATA,COMPR,ALGORITHM,TOTAL"]) == 0
        ours = [line for line in capsys.readouterr().out.splitlines() if k.path in line]
        assert len(ours) == 1
        if shutil.which("zramctl"):
            real = subprocess.run(["zramctl", "-o", "NAME,DISKSIZE,DATA,COMPR,ALGORITHM,TOTAL",
                                   "--noheadings", "--raw", k.path],
                                  capture_output=True, text=True).stdout
            assert ours[0].split() == real.split()
