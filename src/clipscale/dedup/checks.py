"""The checks of the dedup.* settings that a JSON schema cannot express (``problems``), next to
the code that reads them (``modes``: which modes run and remove; ``embedding``: the encoder)."""

from __future__ import annotations

from typing import Mapping

from clipscale.dedup.embedding import encoder
from clipscale.dedup.formats import DedupError


def problems(config: Mapping) -> list[str]:
    """dedup.remove_duplicates naming modes that do not run (they would match nothing); with
    mode embedding, an encoder there is and no loop (``embedding_problems``)."""
    dedup = config["dedup"]
    out = []
    remove = dedup["remove_duplicates"]
    if isinstance(remove, list):
        missing = [m for m in remove if m not in dedup["modes"]]
        if missing:
            out.append(f"dedup.remove_duplicates: modes {missing} are not in dedup.modes "
                       f"{dedup['modes']} (they would match nothing)")
    if "embedding" in dedup["modes"]:
        out += embedding_problems(config)
    return out


def embedding_problems(config: Mapping) -> list[str]:
    """Mode embedding: an encoder there is, and no loop (subsets filtered by our own runs'
    features, on which those runs train)."""
    try:
        enc = encoder(config)
    except DedupError as e:
        return [str(e)]
    remove = config["dedup"]["remove_duplicates"]
    if "run" in enc and (remove is True or (isinstance(remove, list) and "embedding" in remove)):
        return [f"dedup.remove_duplicates: removing mode embedding's matches with the features of our "
                f"run {enc['run'].name} would train it on subsets that need it first; give "
                f"dedup.embedding.checkpoint (a model trained elsewhere) or leave embedding out"]
    return []
