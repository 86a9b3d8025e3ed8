"""The ``zmem`` command: parse the arguments, call one function, format the result.

Subcommands: ``demo`` (the showcase), ``zramctl``, ``stat``, ``classes``,
``compare`` and ``swapsim``.  A user mistake (bad size, unknown algorithm or corpus, missing
file, no such process) prints one line, ``zmem: error: <Type>: <message>``,
and exits 1; argparse's usage errors exit 2; Ctrl-C exits 130.  Set
``ZMEM_DEBUG=1`` to get the traceback instead.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from . import __version__
from ._demo import KernelUnavailable
from ._errors import ZmemError

STAT_FILES = ("mm_stat", "io_stat", "bd_stat", "debug_stat")
DEFAULT_SYNTHETIC = 8192


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if n <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {n}")
    return n


def _stat_file(text: str) -> str:
    if text not in STAT_FILES:
        raise argparse.ArgumentTypeError(
            f"unknown stat file {text!r} (choose from {', '.join(STAT_FILES)})")
    return text


def _share(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number: {text!r}") from None
    if not 0.0 <= x <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {text}")
    return x


# ----------------------------------------------------------------------
# subcommands

def _cmd_demo(args: argparse.Namespace) -> int:
    from ._demo import run_demo

    return run_demo(mb=args.mb, pid=args.pid, algorithm=args.algorithm,
                    free_share=args.free_share, kernel=not args.no_kernel, seed=args.seed)


def _load(args: argparse.Namespace):
    from ._demo import load_device

    return load_device(file=args.load, corpus=args.corpus, pid=args.pid,
                       workload=args.workload, size=args.size, algorithm=args.algorithm)


def _cmd_zramctl(args: argparse.Namespace) -> int:
    from ._zramctl import DeviceInfo, build_row, format_table, kernel_devices, parse_columns

    columns = parse_columns(args.output)
    devices = []
    if not (args.kernel and _no_source(args)):
        with _load(args) as dev:
            devices.append(DeviceInfo(dev.name, dev.comp_algorithm, dev.disksize, dev.mm_stat()))
    if args.kernel:
        found = kernel_devices()
        if not found:
            print("zmem: note: no initialised kernel zram device (zramctl lists only those "
                  "with a disksize)", file=sys.stderr)
        devices += found
    rows = [build_row(d, columns, inbytes=args.bytes) for d in devices]
    sys.stdout.write(format_table(rows, columns, raw=args.raw, headings=not args.noheadings))
    return 0


def _cmd_stat(args: argparse.Namespace) -> int:
    names = args.files or list(STAT_FILES)
    with _load(args) as dev:
        texts = {"mm_stat": dev.mm_stat, "io_stat": dev.io_stat, "bd_stat": dev.bd_stat,
                 "debug_stat": dev.debug_stat}
        parts = []
        for i, name in enumerate(names):
            text = str(texts[name]())
            if len(names) > 1:  # as head(1): a header per file only with several files
                text = ("\n" if i else "") + f"==> {name} <==\n" + text
            parts.append(text)
    sys.stdout.write("".join(parts))
    return 0


def _cmd_classes(args: argparse.Namespace) -> int:
    with _load(args) as dev:
        sys.stdout.write(dev.pool.format_classes())
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from ._demo import run_compare

    return run_compare(corpus=args.corpus, synthetic=args.synthetic or DEFAULT_SYNTHETIC,
                       algorithm=args.algorithm, rounds=args.rounds, seed=args.seed,
                       plot=args.plot)


def _cmd_swapsim(args: argparse.Namespace) -> int:
    from ._swapsim import run_swapsim

    return run_swapsim(pages=args.pages, corpus=args.corpus, budget=args.budget,
                       pool_percent=args.pool_percent, memory=args.memory, accesses=args.accesses,
                       zipf=args.zipf, hot=args.hot, write_fraction=args.writes,
                       policies=args.policy, reclaims=args.reclaim, compressor=args.compressor,
                       store=args.store, sweep=args.sweep, plot_path=args.plot, json_path=args.json,
                       seed=args.seed, repeat=args.repeat, kernel=args.kernel,
                       kernel_plain=args.kernel_plain, progress=args.progress)


def _hot(text: str) -> tuple[float, float]:
    try:
        share, prob = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected SHARE:PROB, e.g. 0.2:0.8, got {text!r}") from None
    if not (0 < share < 1 and 0 <= prob <= 1):
        raise argparse.ArgumentTypeError(f"SHARE must be in (0,1) and PROB in [0,1], got {text!r}")
    return share, prob


def _budget_list(text: str) -> list[str]:
    items = [x for x in text.split(",") if x]
    for x in items:
        try:
            float(x)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid budget {x!r}") from None
    return items


def _no_source(args: argparse.Namespace) -> bool:
    return all(getattr(args, k) is None for k in ("load", "corpus", "pid", "workload", "size"))


# ----------------------------------------------------------------------
# the parser

def _add_load_options(p: argparse.ArgumentParser) -> None:
    src = p.add_argument_group("data to load (one of)").add_mutually_exclusive_group()
    src.add_argument("--load", metavar="FILE", help="a file's bytes")
    src.add_argument("--corpus", metavar="NAME", help="a shared corpus of real pages")
    src.add_argument("--pid", type=_positive_int, metavar="N",
                     help="the anonymous memory of a live process")
    src.add_argument("--workload", type=_positive_int, metavar="MB",
                     help="run a Python workload and capture about MB MiB of its memory")
    p.add_argument("--size", metavar="SIZE",
                   help="disksize, e.g. 64M (default: the data, rounded up to pages)")
    p.add_argument("--algorithm", default="lzo", metavar="NAME",
                   help="compression algorithm: lzo, lz4, lz4hc, zstd, deflate (default lzo)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zmem",
        description="The Linux compressed-memory stack (zsmalloc, zram) in userspace.")
    parser.add_argument("--version", action="version", version=f"zmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="store a live process's memory, free half, compact; "
                       "side by side with the kernel's zram",
                       description="Run a short real workload (or use --pid), store its "
                       "anonymous memory in a zmem zram device, free part of it, compact, "
                       "and print mm_stat at each step; as root, a kernel zram device gets "
                       "the same pages and operations and is shown alongside.")
    p.add_argument("--pid", type=_positive_int, metavar="N",
                   help="capture this process instead of running the workload")
    p.add_argument("--mb", type=_positive_int, default=64,
                   help="workload size and capture cap in MiB (default 64)")
    p.add_argument("--algorithm", default="lzo", metavar="NAME", help="default lzo")
    p.add_argument("--free-share", type=_share, default=0.5, metavar="X",
                   help="share of the pages to discard, 0..1 (default 0.5)")
    p.add_argument("--no-kernel", action="store_true", help="skip the kernel comparison")
    p.add_argument("--seed", type=int, default=1, help="seed of the sample and the discards")
    p.set_defaults(func=_cmd_demo, parser=p)

    p = sub.add_parser("zramctl", help="a zramctl-style table of a loaded device",
                       description="Load data into a zmem device and print it as "
                       "util-linux zramctl would.")
    _add_load_options(p)
    p.add_argument("-b", "--bytes", action="store_true", help="print sizes in bytes")
    p.add_argument("-o", "--output", metavar="COLS",
                   help="columns, comma-separated; a leading + adds to the default")
    p.add_argument("-n", "--noheadings", action="store_true", help="don't print headings")
    p.add_argument("--raw", action="store_true", help="use raw output format")
    p.add_argument("--kernel", action="store_true",
                   help="add rows for the kernel's initialised zram devices")
    p.set_defaults(func=_cmd_zramctl, parser=p)

    p = sub.add_parser("stat", help="mm_stat, io_stat, bd_stat, debug_stat in the kernel's text",
                       description="Print the device's statistics files as "
                       "`head /sys/block/zram0/{mm,io,bd,debug}_stat` would.")
    p.add_argument("files", nargs="*", metavar="FILE", type=_stat_file,
                   help=f"which files (default all): {', '.join(STAT_FILES)}")
    _add_load_options(p)
    p.set_defaults(func=_cmd_stat, parser=p)

    p = sub.add_parser("classes", help="the pool's debugfs classes table",
                       description="Print /sys/kernel/debug/zsmalloc/<pool>/classes for "
                       "the loaded device's pool.")
    _add_load_options(p)
    p.set_defaults(func=_cmd_classes, parser=p)

    p = sub.add_parser("compare", help="replay a trace on zmem and the kernel's zram",
                       description="Write pages, then rounds of discard/compact/overwrite/"
                       "compact, on zmem and on a kernel zram device (root), and compare "
                       "mm_stat after every step.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--corpus", metavar="NAME", help="pages of a shared corpus")
    src.add_argument("--synthetic", type=_positive_int, metavar="N",
                     help=f"N synthetic pages (the default, {DEFAULT_SYNTHETIC})")
    p.add_argument("--algorithm", default="lzo", metavar="NAME", help="default lzo")
    p.add_argument("--rounds", type=_positive_int, default=3, help="default 3")
    p.add_argument("--seed", type=int, default=1, help="default 1")
    p.add_argument("--plot", metavar="OUT.png",
                   help="draw mem_used_total of both over the steps (needs matplotlib)")
    p.set_defaults(func=_cmd_compare, parser=p)

    p = sub.add_parser("swapsim", help="a process under a memory budget swapping through zswap",
                       description="Run a process of real pages under a memory budget with Zipf "
                       "accesses, swapping through zmem's Zswap in several configurations (kernel "
                       "behaviour, compact_then_writeback, zspage reclaim) and through plain swap; "
                       "print hit rate, writeback, pool ratio and µs per store, load and fault. "
                       "--kernel runs the same workload on the kernel's zswap (root).")
    p.add_argument("--pages", type=_positive_int, default=32768,
                   help="pages of the process (default 32768 = 128 MiB)")
    p.add_argument("--corpus", metavar="NAME", help="base pages from this corpus (default: all "
                   "corpora, or a live capture without them)")
    p.add_argument("--budget", default="0.5", metavar="X",
                   help="resident frames: a fraction of --pages or a page count (default 0.5)")
    p.add_argument("--pool-percent", type=int, metavar="P",
                   help="zswap max_pool_percent of --memory (default 10; 1 with --kernel)")
    p.add_argument("--memory", metavar="SIZE", help="what --pool-percent is a percentage of "
                   "(default: the process's size; with --kernel the machine's MemTotal)")
    p.add_argument("--accesses", type=_positive_int, default=1_000_000, help="default 1000000")
    p.add_argument("--zipf", type=float, default=1.0, metavar="S", help="Zipf parameter (default 1.0)")
    p.add_argument("--hot", type=_hot, metavar="SHARE:PROB",
                   help="hot/cold instead of Zipf: SHARE of the pages get PROB of the accesses")
    p.add_argument("--writes", type=_share, default=0.1, metavar="X",
                   help="share of accesses that write (default 0.1)")
    p.add_argument("--policy", action="append", choices=("writeback", "compact_then_writeback"),
                   help="limit policy to run (repeatable; default both)")
    p.add_argument("--reclaim", action="append", choices=("object_lru", "zspage"),
                   help="reclaim kind to run (repeatable; default both)")
    p.add_argument("--compressor", default="lzo", metavar="NAME", help="default lzo")
    p.add_argument("--store", choices=("direct", "file"), default="direct",
                   help="backing swap file: O_DIRECT (a disk I/O per page, default) or through "
                   "the page cache")
    p.add_argument("--sweep", type=_budget_list, nargs="?", const=_budget_list("0.2,0.35,0.5,0.65,0.8"),
                   metavar="B1,B2,...", help="also run every configuration at these budgets "
                   "(default 0.2,0.35,0.5,0.65,0.8)")
    p.add_argument("--plot", metavar="OUT.png", help="pool pages and ratio over time (and the sweep)")
    p.add_argument("--json", metavar="FILE", help="write every figure to FILE")
    p.add_argument("--seed", type=int, default=1, help="default 1")
    p.add_argument("--repeat", type=_positive_int, default=1,
                   help="runs per configuration; timings are the best (default 1)")
    p.add_argument("--kernel", action="store_true",
                   help="also run the workload on the kernel's zswap (root, loop device, memory cgroup)")
    p.add_argument("--kernel-plain", action="store_true",
                   help="with --kernel, run it once more with zswap off (the kernel's plain swap)")
    p.add_argument("--progress", action="store_true", help="progress bars on stderr")
    p.set_defaults(func=_cmd_swapsim, parser=p)
    return parser


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        msg = exc.strerror
        if exc.filename is not None:
            msg += f": {exc.filename!r}" if isinstance(exc.filename, str) else f": {exc.filename}"
        return msg
    return str(exc)


def _exit_code(exc: SystemExit) -> int:
    code = exc.code
    return code if isinstance(code, int) else (0 if code is None else 2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``zmem`` command; return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.func in (_cmd_stat, _cmd_classes) and _no_source(args):
            args.parser.error("nothing to load: give --load FILE, --corpus NAME, --pid N or "
                              "--workload MB (or --size SIZE for an empty device)")
    except SystemExit as exc:  # --help, --version, usage errors: argparse printed them
        return _exit_code(exc)
    debug = bool(os.environ.get("ZMEM_DEBUG"))
    try:
        return args.func(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("\nzmem: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # stdout was closed early (zmem stat | head -1): not worth a message.  Point
        # stdout at /dev/null so the interpreter's final flush does not complain.
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141
    except KernelUnavailable as exc:  # compare has nothing to compare with
        print(f"zmem: error: {exc}", file=sys.stderr)
        return 2
    except (ZmemError, OSError, ValueError, ImportError) as exc:
        if debug:
            raise
        print(f"zmem: error: {type(exc).__name__}: {_describe(exc)}", file=sys.stderr)
        return 1
