"""Item content: the catalog's text as vectors, for the ranker's content features and retrieval.

embedder.py         the sentence-embedding model (WordLlama, weights inside its wheel): texts -> unit vectors
item_embeddings.py  the catalog's embeddings in the lake, updated incrementally; load_item_embeddings for readers
"""
