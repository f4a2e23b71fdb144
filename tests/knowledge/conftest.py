"""Fixtures of the knowledge tests: the real local model (loaded once per session) and the
help-center test set indexed once into an on-disk Chroma in a temp directory."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path

import pytest

from knowledge.embed import LocalEmbedder
from knowledge.helpcenter import index_helpcenter, load_helpcenter
from knowledge.index import KnowledgeIndex
from settings import Settings

HELPCENTER_TENANT = "helpcenter-tenant"


@pytest.fixture(scope="session")
def embedder() -> LocalEmbedder:
    """The bundled all-MiniLM-L6-v2, shared by every knowledge test."""
    return LocalEmbedder()


@pytest.fixture(scope="session")
def helpcenter() -> tuple[list[dict], list[dict], list[str]]:
    return load_helpcenter()


@pytest.fixture(scope="session")
def helpcenter_index(tmp_path_factory, embedder, helpcenter) -> KnowledgeIndex:
    """Every help-center article, with its example questions, and its hand-off articles,
    indexed for HELPCENTER_TENANT (Chroma on disk, tmp dir)."""
    path = tmp_path_factory.mktemp("chroma-helpcenter")
    index = KnowledgeIndex(Settings(chroma_path=str(path)), embedder)
    index_helpcenter(index, HELPCENTER_TENANT)
    return index


@pytest.fixture
def chroma_settings(tmp_path: Path) -> Settings:
    """Settings with a fresh, empty Chroma directory."""
    return Settings(chroma_path=str(tmp_path / "chroma"))
