"""Text -> L2-normalised float32 vectors with WordLlama, whose weights ship inside its PyPI wheel.

Why WordLlama (README, "Content embeddings"): the 256-d `l2_supercat` weights (16 MB) and their tokenizer are
package data, inference is a token lookup and a mean in numpy (no torch, no onnx graph), and nothing is
fetched from a model hub at run time. `model_id` names the package version, the weights and the dimension:
the incremental embedding (feedloop.content.item_embeddings) re-embeds everything when any of them changes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from feedloop.core.config import ContentSettings

PACKAGE = "wordllama"
WEIGHTS = "l2_supercat"  # the only weights inside the wheel (wordllama/weights/l2_supercat_256.safetensors)
WHEEL_DIM = 256


@dataclass(frozen=True)
class Embedder:
    """One loaded model: `embed` is a pure function of the texts."""

    model_id: str
    dim: int
    batch_size: int
    _model: Any

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 [len(texts), dim], each row of unit length. A text with no tokens (blank) is an error."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.embed(list(texts), norm=False, batch_size=self.batch_size)
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        if not np.all(norms > 0):
            blank = np.flatnonzero(norms[:, 0] <= 0)[:5].tolist()
            raise ValueError(f"texts at {blank} have no tokens and cannot be embedded (skip blank texts first)")
        return np.ascontiguousarray(vectors / norms, dtype=np.float32)


def model_id(dim: int) -> str:
    """What the stored embeddings were made with: package==version/weights/dim."""
    return f"{PACKAGE}=={version(PACKAGE)}/{WEIGHTS}/{dim}"


def load_embedder(settings: ContentSettings) -> Embedder:
    """The model for these settings, loaded once per process (about 0.5 s; a process holding only it: 120 MB)."""
    return _load(settings.dim, settings.batch_size)


@cache
def _load(dim: int, batch_size: int) -> Embedder:
    # wordllama.inference calls logging.basicConfig(level=INFO) when imported: keep the process's own logging.
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    import wordllama  # heavy (tokenizers, safetensors): only the processes that embed pay for it
    from wordllama import WordLlama
    root.handlers[:] = handlers
    root.setLevel(level)
    # The wheel holds the weights in wordllama/weights/ and the tokenizer in wordllama/tokenizers/, but
    # WordLlama.load looks for the tokenizer in wordllama/tokenizer/ (0.4.0) and else downloads it; as the
    # cache folder (<cache>/weights, <cache>/tokenizers) the package folder resolves both, with downloads off.
    package_dir = Path(wordllama.__file__).parent
    model = WordLlama.load(WEIGHTS, cache_dir=package_dir, dim=WHEEL_DIM, trunc_dim=dim if dim != WHEEL_DIM else None,
                           disable_download=True)
    return Embedder(model_id=model_id(dim), dim=dim, batch_size=batch_size, _model=model)
