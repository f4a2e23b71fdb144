"""Per-tenant knowledge index: chunks in Chroma (our own embeddings) + BM25, hybrid search.

One Chroma collection per tenant (and embedder, so switching models never mixes vector
spaces): a tenant can only ever query its own collection.

Every chunk is stored under three "views", each with its own vector: its body (id
"article:position", the chunk itself), its heading path ("article:position:h") and each of
its clauses (sentences, also split at ":"/";") prefixed by the heading ("article:position:sN").
Search takes candidate chunks from the vector neighbours of the query (any view) and from
BM25, rescores each candidate exactly (weighted mean of body cosine, heading cosine, best
clause cosine and normalized BM25) and keeps the best chunk per article. The score lies in [0, 1] and serves as a confidence.

An article may also carry example questions its author says it answers (`questions`): each is
stored as one more, article-level vector ("article:qN", view "question"). They only route: the
article's score becomes `combine(best chunk score, best example-question cosine)`, its text is
still its best chunk's, and no question is ever part of a hit. Articles with the nearest example
questions add their chunks to the candidates, so a question worded like an example but unlike
the article's text still finds it.

A hand-off article (`handoff=True`) is the opposite: questions customers ask that the knowledge
base does not answer, which its authors want handed to a person. Only its questions are stored
("article:hN", view "handoff"), never its text: it is never a hit. Every hit carries the query's
best cosine with them (`Hit.handoff_score`); knowledge.answer.answerable declines when that is a
close match and at least as close as the answering article's own nearest example question.

Three adjustments keep that confidence honest:
* the knowledge base's own names (the shop's brand: a capitalised word in a large share of the
  tenant's articles) are left out of the query: "Does Larkspur sell groceries?" is not about the
  one article whose title says "Larkspur";
* sentences of knowledge content that instruct the assistant (`knowledge.screen`) are cut out of
  the hit's text and their clause vectors ignored; the chunk loses INSTRUCTION_PENALTY (a page
  that gives orders is less trustworthy) and is dropped when nothing else is left;
* a chunk naming the opposite of an action the query names ("switch it off" for "turn it on")
  loses ACTION_PENALTY; within one article, a chunk naming the query's action is preferred to
  chunks scoring up to ACTION_PENALTY more (its own score is what the hit reports).
"""
from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import numpy as np

from knowledge.chunk import Chunk, chunk_body, split_sentences
from knowledge.embed import Embedder
from knowledge.errors import KnowledgeError
from knowledge.lexical import BM25, STOPWORDS, actions, contradicts
from knowledge.screen import is_instruction_like, screen_text

if TYPE_CHECKING:
    from settings import Settings

VECTOR_CANDIDATES = 20   # nearest chunks wanted from Chroma (x VIEW_FANOUT stored vectors)
VIEW_FANOUT = 3          # stored vectors asked per wanted chunk (views of one chunk cluster)
LEXICAL_CANDIDATES = 20  # best BM25 chunks added to the candidates
# Weights of the fused score (normalized by their sum); chosen on the tuning split of
# tests/knowledge/helpcenter (the held-out split is never used to choose them).
WEIGHTS = {"body": 1.0, "sentence": 1.0, "heading": 0.5, "lexical": 0.3}
# Share of the best example-question cosine in an article's score (see combine); chosen on the
# tuning split like WEIGHTS.
QUESTION_WEIGHT = 0.43
QUESTION_CANDIDATES = 5  # articles with the nearest example questions whose chunks are candidates
ACTION_PENALTY = 0.1     # score lost by a chunk naming the opposite action of the query's
INSTRUCTION_PENALTY = 0.1  # score lost by a chunk holding instructions to the assistant
NAME_MIN_ARTICLES = 3    # a knowledge base's own name: capitalised wherever it occurs, in at
NAME_MIN_SHARE = 0.3     # least this many articles and this share of them
_WORD = re.compile(r"[^\W\d_]+")
_ADDRESS = re.compile(r"\S+@\S+|\w+://\S+|\bwww\.\S+")


@dataclass(frozen=True)
class Hit:
    """The best-matching chunk of one article; `score` in [0, 1] is the retrieval confidence.

    `vector_score` is the weighted cosine part (body/heading/sentence views), `lexical_score`
    the query-normalized BM25 in [0, 1), `question_score` the best cosine of the article's
    example questions (0.0 when it has none), `handoff_score` the best cosine of the tenant's
    hand-off questions (0.0 when it has none; the same on every hit of a query),
    `passage_score` the chunk's own score, its text
    alone (penalties included, example questions not): what the quoted passage itself earns,
    which an answer also needs (knowledge.answer.answerable). Left out, it is `score` (a
    passage from anywhere else has nothing but its text).
    """

    article_id: str
    version: int
    title: str
    url: str | None  # None when the article has no URL (an uploaded file)
    heading: str
    text: str
    score: float
    vector_score: float
    lexical_score: float
    question_score: float = 0.0
    passage_score: float | None = None
    handoff_score: float = 0.0

    def __post_init__(self) -> None:
        if self.passage_score is None:
            object.__setattr__(self, "passage_score", self.score)


@dataclass
class _Lexical:
    """BM25 over every chunk of one collection, with the chunks' ids/documents/metadata."""

    ids: list[str]
    documents: list[str]
    metadatas: list[dict[str, Any]]
    bm25: BM25
    stored: int  # number of stored vectors when built (staleness check)
    names: re.Pattern[str] | None = None  # the knowledge base's own names (see corpus_names)
    screened: dict[int, tuple[str, float]] | None = None  # chunk -> (clean text, clean share)
    questions: np.ndarray | None = None  # example-question vectors, one row each
    question_articles: list[str] | None = None  # the article of each row of `questions`
    article_chunks: dict[str, list[int]] | None = None  # article -> its chunks' positions
    handoffs: np.ndarray | None = None  # hand-off question vectors, one row each


def corpus_names(documents: list[str], article_ids: list[str]) -> dict[str, set[str]]:
    """Words naming the whole knowledge base (lowercased), with the words that follow them in
    it: capitalised at every occurrence (e-mail addresses and URLs aside) and found in at least
    NAME_MIN_ARTICLES articles and NAME_MIN_SHARE of them, like a shop's brand. Alone they say
    nothing about which article answers; followed as in the articles ("Larkspur Plus") they
    name something more specific."""
    seen: dict[str, list[int]] = {}     # word -> [occurrences, capitalised occurrences]
    where: dict[str, set[str]] = {}
    following: dict[str, set[str]] = {}
    for document, article_id in zip(documents, article_ids):
        words = _WORD.findall(_ADDRESS.sub(" ", document))
        for n, word in enumerate(words):
            key = word.casefold()
            counts = seen.setdefault(key, [0, 0])
            counts[0] += 1
            counts[1] += word[0].isupper()
            where.setdefault(key, set()).add(article_id)
            if n + 1 < len(words) and words[n + 1].casefold() not in STOPWORDS:
                following.setdefault(key, set()).add(words[n + 1].casefold())
    articles = len(set(article_ids))
    need = max(NAME_MIN_ARTICLES, NAME_MIN_SHARE * articles)
    return {w: following.get(w, set()) for w, (n, upper) in sorted(seen.items())
            if n == upper and len(w) > 1 and w not in STOPWORDS and len(where[w]) >= need}


def names_pattern(names: dict[str, set[str]]) -> re.Pattern[str] | None:
    """A pattern matching each name where it is not followed as in the articles."""
    if not names:
        return None
    parts = []
    for name, after in names.items():
        guard = "|".join(re.escape(w) for w in sorted(after))
        parts.append(rf"\b{re.escape(name)}\b" + (rf"(?![^\w]+(?:{guard})\b)" if guard else ""))
    return re.compile("|".join(parts), re.IGNORECASE)


def without_names(query: str, names: re.Pattern[str] | None) -> str:
    """`query` without the knowledge base's own names (unchanged if nothing else would remain)."""
    if names is None:
        return query
    stripped = " ".join(names.sub(" ", query).split())
    return stripped if _WORD.search(stripped) else query


def fuse(body: float, heading: float, sentence: float, lexical: float) -> tuple[float, float]:
    """(score, vector_score) from the views' cosines and the normalized BM25, both in [0, 1]."""
    vector_weight = WEIGHTS["body"] + WEIGHTS["heading"] + WEIGHTS["sentence"]
    vector = (WEIGHTS["body"] * max(body, 0.0) + WEIGHTS["heading"] * max(heading, 0.0)
              + WEIGHTS["sentence"] * max(sentence, 0.0)) / vector_weight
    score = (vector_weight * vector + WEIGHTS["lexical"] * lexical) / (
        vector_weight + WEIGHTS["lexical"])
    return min(max(score, 0.0), 1.0), min(vector, 1.0)


def combine(chunk: float, question: float | None) -> float:
    """An article's score from its best chunk's fused score and its best example-question cosine
    (None: the article has no example questions, the chunk score stands).

    A weighted sum, never below the chunk score: example questions are extra evidence that the
    article answers, and their absence (most articles, every crawled page) or a poor match must
    not rank an article below what its text earns; so articles with and without example
    questions stay comparable, and one threshold serves both."""
    if question is None:
        return chunk
    mixed = (1.0 - QUESTION_WEIGHT) * chunk + QUESTION_WEIGHT * max(question, 0.0)
    return min(max(chunk, mixed), 1.0)


class KnowledgeIndex:
    """Articles of every tenant, chunked and embedded, in Chroma (embedded or server)."""

    def __init__(self, settings: Settings, embedder: Embedder) -> None:
        self._embedder = embedder
        self._client = _make_client(settings)
        self._collections: dict[str, Any] = {}
        self._lexical: dict[str, _Lexical] = {}
        self._lock = threading.RLock()

    def collection_name(self, tenant: str) -> str:
        """Chroma collection of `tenant` for this index's embedder."""
        digest = hashlib.sha1(f"{tenant}\n{self._embedder.name}".encode()).hexdigest()
        return f"kb-{digest[:16]}"

    def upsert_article(self, tenant: str, article_id: str, version: int, title: str, url: str,
                       chunks: list[Chunk], questions: list[str] | None = None,
                       handoff: bool = False) -> None:
        """Replace every chunk of `article_id` with `chunks` (ids "article_id:position") and its
        example questions with `questions` (ids "article_id:qN"; routing only, never quoted).
        A hand-off article (`handoff`) stores its questions only (ids "article_id:hN"), as
        questions to hand to a person; its chunks are not stored."""
        ids, texts, documents, metadatas = [], [], [], []
        for n, question in enumerate((questions or []) if handoff else []):
            ids.append(f"{article_id}:h{n}")
            texts.append(question)
            documents.append(question)
            metadatas.append({"article_id": article_id, "version": version if version is not None else 0,
                              "view": "handoff"})
        for chunk in [] if handoff else chunks:
            chunk_id = f"{article_id}:{chunk.position}"
            base = {"article_id": article_id, "version": version if version is not None else 0,
                    "title": title, "url": url or "", "heading": chunk.heading,
                    "position": chunk.position, "chunk_id": chunk_id}
            body = chunk_body(chunk) or chunk.text
            views = [(chunk_id, "body", body, chunk.text)]
            if chunk.heading:
                views.append((f"{chunk_id}:h", "heading", chunk.heading, chunk.heading))
            for n, sentence in enumerate(split_sentences(body, clauses=True)):
                prefixed = f"{chunk.heading}\n{sentence}" if chunk.heading else sentence
                views.append((f"{chunk_id}:s{n}", "sentence", prefixed, sentence))
            for view_id, view, embed_text, document in views:
                ids.append(view_id)
                texts.append(embed_text)
                documents.append(document)
                metadatas.append({**base, "view": view})
        if chunks and not handoff:  # an article without text has nothing to route to
            for n, question in enumerate(questions or []):
                ids.append(f"{article_id}:q{n}")
                texts.append(question)
                documents.append(question)
                metadatas.append({"article_id": article_id, "version": version if version is not None else 0,
                                  "view": "question"})
        vectors = self._embedder.embed(texts) if texts else []  # before deleting anything
        collection = self._collection(tenant)
        try:
            collection.delete(where={"article_id": article_id})
            if ids:
                collection.add(ids=ids, embeddings=vectors, documents=documents,
                               metadatas=metadatas)
        except Exception as exc:  # chromadb raises many types; one error type leaves here
            raise KnowledgeError(f"cannot index article {article_id!r}: {exc}") from exc
        finally:
            self._invalidate(tenant)

    def delete_article(self, tenant: str, article_id: str) -> None:
        """Remove every chunk of `article_id` (no error when it is not indexed)."""
        try:
            self._collection(tenant).delete(where={"article_id": article_id})
        except Exception as exc:
            raise KnowledgeError(f"cannot delete article {article_id!r}: {exc}") from exc
        finally:
            self._invalidate(tenant)

    @property
    def embedder_name(self) -> str:
        return self._embedder.name

    def search(self, tenant: str, query: str, k: int = 5) -> list[Hit]:
        """Hybrid search: best chunk per article, best first, at most `k` articles."""
        return self.search_with_vector(tenant, query, k)[0]

    def search_with_vector(self, tenant: str, query: str, k: int = 5) -> tuple[list[Hit], list[float] | None]:
        """`search`, and the query's vector it searched with (None when it embedded nothing):
        the extractive answer compares the passages' sentences with the same vector instead of
        embedding the message a second time (`compose_answer(query_vector=...)`)."""
        if not query.strip() or k <= 0:
            return [], None
        collection = self._collection(tenant)
        lexical = self._lexical_index(tenant, collection)
        if not lexical.ids:
            return [], None
        query = without_names(query, lexical.names)
        query_actions = actions(query)
        query_vector = self._embedder.embed([query])[0]
        lexical_scores = lexical.bm25.normalized_scores(query)
        position = {chunk_id: i for i, chunk_id in enumerate(lexical.ids)}
        candidates = self._vector_candidates(collection, query_vector, lexical.stored)
        question_scores = _question_scores(lexical, query_vector)
        handoff = _handoff_score(lexical, query_vector)
        by_question = sorted(question_scores, key=lambda a: -question_scores[a])
        for article_id in by_question[:QUESTION_CANDIDATES]:
            for i in lexical.article_chunks.get(article_id, []) if lexical.article_chunks else []:
                if lexical.ids[i] not in candidates:
                    candidates.append(lexical.ids[i])
        by_lexical = sorted(range(len(lexical_scores)), key=lambda i: -lexical_scores[i])
        for i in by_lexical[:LEXICAL_CANDIDATES]:
            if lexical_scores[i] > 0 and lexical.ids[i] not in candidates:
                candidates.append(lexical.ids[i])
        views = self._view_cosines(collection, query_vector, candidates)

        best: dict[str, tuple[float, Hit]] = {}  # article -> (rank key, its best chunk)
        for chunk_id, cosines in views.items():
            i = position.get(chunk_id)
            if i is None:  # written by another process since our BM25 snapshot
                continue
            meta = lexical.metadatas[i]
            text, clean = (lexical.screened or {}).get(i, (lexical.documents[i], 1.0))
            if clean <= 0.0:
                continue  # nothing but instructions to the assistant
            score, vector = fuse(cosines.get("body", 0.0), cosines.get("heading", 0.0),
                                 cosines.get("sentence", cosines.get("body", 0.0)),
                                 lexical_scores[i])
            if clean < 1.0:
                score = max(score - INSTRUCTION_PENALTY, 0.0)
            key = score
            if contradicts(query_actions, text):
                score = key = max(score - ACTION_PENALTY, 0.0)
            elif query_actions & actions(text):
                key = score + ACTION_PENALTY  # within its article, the chunk doing what is asked
            hit = Hit(
                article_id=str(meta["article_id"]), version=meta.get("version", 0),
                title=str(meta.get("title", "")), url=str(meta.get("url") or "") or None,
                heading=str(meta.get("heading", "")), text=text,
                score=score, vector_score=vector, lexical_score=lexical_scores[i],
                passage_score=score, handoff_score=handoff,
            )
            current = best.get(hit.article_id)
            if current is None or key > current[0]:
                best[hit.article_id] = (key, hit)
        hits = []
        for _, hit in best.values():
            question = question_scores.get(hit.article_id)
            if question is not None:
                hit = replace(hit, score=combine(hit.score, question), question_score=question)
            hits.append(hit)
        return sorted(hits, key=lambda h: -h.score)[:k], query_vector

    # -- internals ---------------------------------------------------------------------

    def _collection(self, tenant: str) -> Any:
        name = self.collection_name(tenant)
        with self._lock:
            collection = self._collections.get(name)
            if collection is None:
                try:
                    collection = self._client.get_or_create_collection(
                        name=name, embedding_function=None,
                        metadata={"hnsw:space": "cosine", "tenant": tenant,
                                  "embedder": self._embedder.name},
                    )
                except Exception as exc:
                    raise KnowledgeError(f"knowledge store unavailable: {exc}") from exc
                self._collections[name] = collection
            return collection

    def _invalidate(self, tenant: str) -> None:
        with self._lock:
            self._lexical.pop(self.collection_name(tenant), None)

    def _lexical_index(self, tenant: str, collection: Any) -> _Lexical:
        """The cached BM25 of the tenant's chunks (rebuilt when the number of stored vectors
        changed, e.g. written by another process)."""
        name = self.collection_name(tenant)
        with self._lock:
            cached = self._lexical.get(name)
            try:
                stored = collection.count()
                if cached is not None and cached.stored == stored:
                    return cached
                data = collection.get(where={"view": "body"}, include=["documents", "metadatas"])
                asked = collection.get(where={"view": "question"}, include=["embeddings", "metadatas"])
                handed = collection.get(where={"view": "handoff"}, include=["embeddings"])
            except Exception as exc:
                raise KnowledgeError(f"knowledge store unavailable: {exc}") from exc
            documents = [doc or "" for doc in data["documents"] or []]
            metadatas = [dict(m or {}) for m in data["metadatas"] or []]
            names = corpus_names(documents, [str(m.get("article_id", "")) for m in metadatas])
            screened = {}
            for i, document in enumerate(documents):
                text, clean = screen_text(document)
                if clean < 1.0:
                    heading = str(metadatas[i].get("heading", "")) if i < len(metadatas) else ""
                    body = text[len(heading):] if heading and text.startswith(heading) else text
                    screened[i] = (text, clean if body.strip() else 0.0)
            article_chunks: dict[str, list[int]] = {}
            for i, meta in enumerate(metadatas):
                article_chunks.setdefault(str(meta.get("article_id", "")), []).append(i)
            embeddings = asked.get("embeddings")
            has_questions = embeddings is not None and len(embeddings) > 0
            handoffs = handed.get("embeddings")
            has_handoffs = handoffs is not None and len(handoffs) > 0
            built = _Lexical(ids=list(data["ids"]), documents=documents, metadatas=metadatas,
                             bm25=BM25(documents), stored=stored, screened=screened,
                             names=names_pattern(names), article_chunks=article_chunks,
                             questions=np.asarray(embeddings, dtype=np.float32) if has_questions else None,
                             question_articles=[str((m or {}).get("article_id", ""))
                                                for m in asked["metadatas"] or []],
                             handoffs=np.asarray(handoffs, dtype=np.float32) if has_handoffs else None)
            self._lexical[name] = built
            return built

    @staticmethod
    def _vector_candidates(collection: Any, vector: list[float], stored: int) -> list[str]:
        """Chunk ids owning the query's nearest stored vectors (any view), nearest first."""
        try:
            result = collection.query(query_embeddings=[vector],
                                      n_results=min(VECTOR_CANDIDATES * VIEW_FANOUT, stored),
                                      where={"view": {"$nin": ["question", "handoff"]}},
                                      include=["metadatas"])
        except Exception as exc:
            raise KnowledgeError(f"vector search failed: {exc}") from exc
        chunk_ids: list[str] = []
        for meta in result["metadatas"][0]:
            chunk_id = str((meta or {}).get("chunk_id", ""))
            if chunk_id and chunk_id not in chunk_ids:
                chunk_ids.append(chunk_id)
        return chunk_ids[:VECTOR_CANDIDATES]

    @staticmethod
    def _view_cosines(collection: Any, vector: list[float],
                      chunk_ids: list[str]) -> dict[str, dict[str, float]]:
        """Exact cosine of the query with every view of `chunk_ids`: {chunk_id: {view: best}}."""
        if not chunk_ids:
            return {}
        try:
            data = collection.get(where={"chunk_id": {"$in": chunk_ids}},
                                  include=["embeddings", "metadatas", "documents"])
        except Exception as exc:
            raise KnowledgeError(f"knowledge store unavailable: {exc}") from exc
        out: dict[str, dict[str, float]] = {}
        embeddings = data["embeddings"]
        if embeddings is None or len(embeddings) == 0:
            return out
        cosines = np.asarray(embeddings, dtype=np.float64) @ np.asarray(vector, dtype=np.float64)
        documents = data.get("documents") or [""] * len(cosines)
        for meta, document, cosine in zip(data["metadatas"], documents, cosines.tolist()):
            views = out.setdefault(str(meta["chunk_id"]), {})
            view = str(meta.get("view", "body"))
            if view == "sentence" and is_instruction_like(document or ""):
                continue  # an instruction to the assistant is no evidence of relevance
            views[view] = max(views.get(view, -1.0), cosine)
        return out


def _question_scores(lexical: _Lexical, query_vector: list[float]) -> dict[str, float]:
    """Best cosine of the query with each article's example questions (articles without any are
    absent). Exact, over the snapshot's matrix: a few thousand rows at most per tenant."""
    if lexical.questions is None or not lexical.question_articles:
        return {}
    cosines = lexical.questions @ np.asarray(query_vector, dtype=np.float32)
    scores: dict[str, float] = {}
    for article_id, cosine in zip(lexical.question_articles, cosines.tolist()):
        if cosine > scores.get(article_id, -1.0):
            scores[article_id] = cosine
    return scores


def _handoff_score(lexical: _Lexical, query_vector: list[float]) -> float:
    """Best cosine of the query with the tenant's hand-off questions (0.0 when it has none)."""
    if lexical.handoffs is None:
        return 0.0
    return max(float((lexical.handoffs @ np.asarray(query_vector, dtype=np.float32)).max()), 0.0)


def _make_client(settings: Settings) -> Any:
    """Chroma HTTP client when settings.chroma_url, else an on-disk client; no telemetry."""
    import chromadb
    from chromadb.config import Settings as ChromaSettings

    chroma_settings = ChromaSettings(anonymized_telemetry=False)
    try:
        if settings.chroma_url:
            url = urlparse(settings.chroma_url)
            ssl = url.scheme == "https"
            return chromadb.HttpClient(host=url.hostname or "localhost",
                                       port=url.port or (443 if ssl else 8000), ssl=ssl,
                                       settings=chroma_settings)
        path = Path(settings.chroma_path) if settings.chroma_path else settings.data_dir / "chroma"
        path.mkdir(parents=True, exist_ok=True)
        return chromadb.PersistentClient(path=str(path), settings=chroma_settings)
    except Exception as exc:
        raise KnowledgeError(f"cannot open the knowledge store: {exc}") from exc
