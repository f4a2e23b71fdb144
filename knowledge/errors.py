"""The one error type of the knowledge package and its kinds."""
from __future__ import annotations


class KnowledgeError(Exception):
    """A knowledge-base failure; ``.message`` says what went wrong and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class UnsupportedFile(KnowledgeError):
    """The file type is not supported, or the file holds no usable text."""


class HostileFile(KnowledgeError):
    """The file looks like an attack (zip/XML/PDF bomb, entities) or exceeded a parse limit."""


class TooLarge(KnowledgeError):
    """The file or page is larger than the allowed size."""


class CrawlError(KnowledgeError):
    """A crawl could not start (bad or blocked start URL, robots.txt, unreachable site)."""
