"""Tests of locating and loading the shared page corpora (zmem._corpus)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import zstandard

from zmem import _corpus
from zmem._corpus import all_pages, corpora_dir, corpus_names, load_corpus, load_manifest

PAGE_SIZE = 4096


@pytest.fixture
def fake_corpora(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> bytes:
    raw = b"".join(bytes([i]) * PAGE_SIZE for i in range(3))
    (tmp_path / "tiny.pages.zst").write_bytes(zstandard.ZstdCompressor().compress(raw))
    (tmp_path / "tiny.json").write_text(json.dumps({"program": "tiny", "pages": 3}))
    monkeypatch.setenv("ZMEM_CORPORA", str(tmp_path))
    return raw


def test_env_override(fake_corpora: bytes, tmp_path: Path) -> None:
    assert corpora_dir() == tmp_path
    assert corpus_names() == ["tiny"]
    assert load_corpus("tiny") == fake_corpora
    assert load_manifest("tiny") == {"program": "tiny", "pages": 3}
    assert all_pages() == fake_corpora


def test_env_pointing_nowhere_means_no_corpora(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("ZMEM_CORPORA", str(tmp_path / "missing"))
    assert corpora_dir() is None
    assert corpus_names() == [] and all_pages() == b""
    with pytest.raises(FileNotFoundError):
        load_corpus("cpython")


def test_default_location(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZMEM_CORPORA", raising=False)
    found = corpora_dir()
    if found is None:
        pytest.skip("corpora absent")
    assert found.is_dir() and any(found.glob("*.pages.zst"))


def _real_names(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    monkeypatch.delenv("ZMEM_CORPORA", raising=False)
    names = corpus_names()
    if not names:
        pytest.skip("corpora absent")
    return names


def test_real_corpora_match_manifests(monkeypatch: pytest.MonkeyPatch) -> None:
    names = _real_names(monkeypatch)
    for name in names:
        raw = load_corpus(name)
        manifest = load_manifest(name)
        assert len(raw) == manifest["pages"] * PAGE_SIZE == manifest["bytes"]
        assert hashlib.sha256(raw).hexdigest() == manifest["container"]["sha256_raw_pages"]


def test_load_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    name = _real_names(monkeypatch)[0]
    assert load_corpus(name) is load_corpus(name)
    assert _corpus._load.cache_info().hits >= 1


def test_all_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    names = _real_names(monkeypatch)
    assert len(all_pages()) == sum(len(load_corpus(n)) for n in names)
