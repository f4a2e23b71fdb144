"""Knowledge base: extraction, chunking, embeddings, index, retrieval, answers, crawler.

Submodules are imported explicitly (``from knowledge.extract import extract``); this package
file imports nothing so that importing one part never loads the heavy others.
"""
