"""zramctl's status table (util-linux ``sys-utils/zramctl.c``) for zmem and kernel devices.

Pure formatting, so a script or a test can check it without a device:

* :data:`COLUMNS` are zramctl's column definitions (name, alignment, help) and
  what each one reads from ``mm_stat``; :data:`DEFAULT_COLUMNS` is zmem's
  default selection (zramctl's own default adds STREAMS and MOUNTPOINT, which a
  userspace device does not have);
* :func:`human_size` is util-linux's ``size_to_human_string`` with
  ``SIZE_SUFFIX_1LETTER``: binary units, one decimal rounded half up, a
  trailing ``.0`` dropped (``0B``, ``4K``, ``11.7M``, ``1.2G``);
* :func:`build_row` turns a :class:`DeviceInfo` (name, algorithm, disksize and
  an :class:`~zmem.MmStat`) into cells and :func:`format_table` lays rows out
  as libsmartcols does (one space between columns, sizes right-aligned).

zramctl's quirks are kept on purpose, so the rows match ``zramctl
--output-all`` on the same device: MIGRATED is ``pages_compacted`` formatted
as a size (``0B``), ZERO-PAGES is always a plain count, MEM-USED is
``mem_used_max`` (the peak), and COMP-RATIO is DATA/TOTAL
(``orig_data_size / mem_used_total``) printed ``%.4f``.  Where zramctl would
print ``nan`` for an empty device, zmem prints ``0.0000``.

:func:`kernel_devices` reads the kernel's initialised devices from
``/sys/block/zram*`` (zramctl lists only devices with a non-zero disksize).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ._zram_stats import MmStat

__all__ = ["COLUMNS", "DEFAULT_COLUMNS", "Column", "DeviceInfo", "human_size",
           "parse_columns", "build_row", "format_table", "kernel_devices", "algorithm_from_sysfs"]


@dataclass(frozen=True)
class Column:
    """One zramctl column: ``source`` is an mm_stat field, or a DeviceInfo attribute
    for NAME/ALGORITHM/DISKSIZE, or ``ratio`` for COMP-RATIO; ``kind`` is ``text``,
    ``size`` (human-readable unless ``--bytes``) or ``count`` (always a number)."""

    name: str
    source: str
    kind: str
    right: bool
    help: str


# zramctl's order (``--output-all``), without STREAMS and MOUNTPOINT.
COLUMNS: dict[str, Column] = {c.name: c for c in (
    Column("NAME", "name", "text", False, "zram device name"),
    Column("DISKSIZE", "disksize", "size", True, "limit on the uncompressed amount of data"),
    Column("DATA", "orig_data_size", "size", True, "uncompressed size of stored data"),
    Column("COMPR", "compr_data_size", "size", True, "compressed size of stored data"),
    Column("ALGORITHM", "algorithm", "text", False, "the selected compression algorithm"),
    Column("ZERO-PAGES", "same_pages", "count", True, "empty pages with no allocated memory"),
    Column("TOTAL", "mem_used_total", "size", True,
           "all memory including allocator fragmentation and metadata overhead"),
    Column("MEM-LIMIT", "mem_limit", "size", True, "memory limit used to store compressed data"),
    Column("MEM-USED", "mem_used_max", "size", True, "peak memory usage to store compressed data"),
    Column("MIGRATED", "pages_compacted", "size", True, "number of objects migrated by compaction"),
    Column("COMP-RATIO", "ratio", "ratio", True, "compression ratio: DATA/TOTAL"),
)}

DEFAULT_COLUMNS: tuple[str, ...] = (
    "NAME", "ALGORITHM", "DISKSIZE", "DATA", "COMPR", "TOTAL", "MEM-LIMIT", "MEM-USED",
    "MIGRATED", "COMP-RATIO", "ZERO-PAGES")


@dataclass(frozen=True)
class DeviceInfo:
    """What one table row shows: a device's name, algorithm, disksize and mm_stat."""

    name: str
    algorithm: str
    disksize: int
    mm: MmStat


def human_size(nbytes: int) -> str:
    """util-linux ``size_to_human_string(SIZE_SUFFIX_1LETTER, n)``.

    >>> [human_size(n) for n in (0, 1023, 4096, 12288000, 1 << 30, 1288490189)]
    ['0B', '1023B', '4K', '11.7M', '1G', '1.2G']
    """
    if nbytes < 0:
        raise ValueError(f"size must be >= 0, got {nbytes}")
    exp = 0
    while exp < 60 and nbytes >= 1 << (exp + 10):
        exp += 10
    letter = "BKMGTPE"[exp // 10]
    dec = nbytes >> exp
    frac = nbytes & ((1 << exp) - 1)
    if frac:
        frac = frac * 1000 >> exp           # three digits after the point, truncated
        frac = (frac + 50) // 100           # one digit, rounded half up
        if frac == 10:
            dec, frac = dec + 1, 0
    return f"{dec}.{frac}{letter}" if frac else f"{dec}{letter}"


def parse_columns(spec: str | None) -> list[str]:
    """zramctl's ``--output`` list: ``A,B`` replaces the default, ``+A,B`` appends to it.

    Names are case-insensitive; an unknown one raises ValueError naming it.
    """
    if spec is None:
        return list(DEFAULT_COLUMNS)
    base: list[str] = []
    if spec.startswith("+"):
        base = list(DEFAULT_COLUMNS)
        spec = spec[1:]
    names = [s.strip().upper() for s in spec.split(",")]
    if not spec.strip() or any(not n for n in names):
        raise ValueError(f"bad column list {spec!r}: use names separated by commas, "
                         f"e.g. NAME,DATA,TOTAL")
    for n in names:
        if n not in COLUMNS:
            raise ValueError(f"unknown column: {n} (available: {', '.join(COLUMNS)})")
    return base + names


def _ratio(mm: MmStat) -> str:
    return "%.4f" % (mm.orig_data_size / mm.mem_used_total if mm.mem_used_total else 0.0)


def build_row(dev: DeviceInfo, columns: Sequence[str] = DEFAULT_COLUMNS,
              inbytes: bool = False) -> list[str]:
    """The cells of one row, as zramctl prints them (``inbytes``: ``--bytes``)."""
    cells = []
    for name in columns:
        col = COLUMNS[name]
        if col.kind == "text":
            cells.append(str(getattr(dev, col.source)))
        elif col.kind == "ratio":
            cells.append(_ratio(dev.mm))
        else:
            value = dev.disksize if col.source == "disksize" else getattr(dev.mm, col.source)
            cells.append(str(value) if inbytes or col.kind == "count" else human_size(value))
    return cells


def format_table(rows: Iterable[Sequence[str]], columns: Sequence[str] = DEFAULT_COLUMNS,
                 raw: bool = False, headings: bool = True) -> str:
    """Lay out a header and rows as libsmartcols does; ``raw``: single spaces, no padding."""
    table = [list(columns)] if headings else []
    table += [list(r) for r in rows]
    if raw:
        return "".join(" ".join(r) + "\n" for r in table)
    widths = [max([len(r[i]) for r in table] + [len(columns[i])]) for i in range(len(columns))]
    lines = []
    for r in table:
        cells = [c.rjust(w) if COLUMNS[n].right else c.ljust(w)
                 for c, w, n in zip(r, widths, columns)]
        lines.append(" ".join(cells).rstrip() + "\n")
    return "".join(lines)


_BRACKET = re.compile(r"\[([^\]]+)\]")


def algorithm_from_sysfs(text: str) -> str:
    """The selected algorithm of a ``comp_algorithm`` file (``lzo-rle [lzo] lz4`` -> ``lzo``)."""
    found = _BRACKET.findall(text)
    return found[-1] if found else ""


def kernel_devices(root: str | Path = "/sys/block") -> list[DeviceInfo]:
    """The kernel's initialised zram devices (disksize > 0), by device number.

    A device that disappears or cannot be read while being listed is left out,
    as zramctl does.
    """
    base = Path(root)
    found = []
    for d in base.glob("zram*"):
        m = re.fullmatch(r"zram(\d+)", d.name)
        if not m:
            continue
        try:
            disksize = int((d / "disksize").read_text())
            if disksize <= 0:
                continue
            nums = [int(x) for x in (d / "mm_stat").read_text().split()]
            algorithm = algorithm_from_sysfs((d / "comp_algorithm").read_text())
        except (OSError, ValueError):
            continue
        nums = (nums + [0] * 9)[:9]  # kernels before 5.x print fewer fields
        found.append((int(m.group(1)), DeviceInfo(f"/dev/{d.name}", algorithm, disksize,
                                                  MmStat(*nums))))
    return [dev for _, dev in sorted(found, key=lambda t: t[0])]
