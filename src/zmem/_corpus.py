"""Location and loading of the shared real-memory page corpora.

This module owns finding the corpora directory ($ZMEM_CORPORA, else ../shared/corpora
next to the repository, else /work/shared/corpora) and turning its files into data:
``<name>.pages.zst`` (one zstd frame of concatenated 4 KiB pages) into bytes, cached
per process, and ``<name>.json`` into the manifest dict. Everything degrades to "no
corpora" (None, [], b"") when the directory is absent, so callers can skip.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path

import zstandard

PAGE_SIZE = 4096
_SUFFIX = ".pages.zst"
_FALLBACK = Path("/work/shared/corpora")


def _repo_root() -> Path | None:
    for parent in Path(__file__).resolve().parents:
        if (parent / "pyproject.toml").is_file():
            return parent
    return None


def corpora_dir() -> Path | None:
    """The corpora directory, or None if there is none."""
    env = os.environ.get("ZMEM_CORPORA")
    if env is not None:
        # An explicit setting wins even when it points nowhere: that is how a
        # caller says "no corpora" rather than silently getting the defaults.
        path = Path(env)
        return path if env and path.is_dir() else None
    root = _repo_root()
    candidates = [root.parent / "shared" / "corpora"] if root else []
    candidates.append(_FALLBACK)
    return next((p for p in candidates if p.is_dir()), None)


def corpus_names() -> list[str]:
    """Sorted names of the available corpora, e.g. ['cpython', 'gcc-cc1', ...]."""
    base = corpora_dir()
    if base is None:
        return []
    return sorted(p.name[: -len(_SUFFIX)] for p in base.glob("*" + _SUFFIX))


def _path(name: str, suffix: str) -> Path:
    base = corpora_dir()
    if base is None:
        raise FileNotFoundError("no corpora directory (set ZMEM_CORPORA)")
    return base / (name + suffix)


@functools.lru_cache(maxsize=None)
def _load(path: Path) -> bytes:
    # Keyed by the resolved path, not the name, so changing ZMEM_CORPORA in-process
    # never returns another directory's pages.
    raw = zstandard.ZstdDecompressor().decompress(path.read_bytes())
    if len(raw) % PAGE_SIZE:
        raise ValueError(f"{path}: {len(raw)} bytes is not a whole number of pages")
    return raw


def load_corpus(name: str) -> bytes:
    """All pages of corpus ``name`` (page i is bytes [i*4096, (i+1)*4096))."""
    return _load(_path(name, _SUFFIX).resolve())


def load_manifest(name: str) -> dict:
    """The corpus manifest (``<name>.json``) as a dict."""
    with open(_path(name, ".json"), encoding="utf-8") as f:
        return json.load(f)


def all_pages() -> bytes:
    """Every corpus concatenated in name order, b'' if none (not cached itself)."""
    return b"".join(load_corpus(name) for name in corpus_names())
