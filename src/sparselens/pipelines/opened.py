"""A saved dictionary opened together with the cache it is read from, and its sites there: what
`evaluate` and `write_feature_report` start from."""

from __future__ import annotations

from dataclasses import dataclass

from sparselens.data.cache import ActivationCache
from sparselens.data.sites import Sites
from sparselens.dictionaries.base import Dictionary
from sparselens.io.native import load_dictionary


@dataclass
class Opened:
    dictionary: Dictionary
    cache: ActivationCache
    sites: Sites


def open_on_cache(checkpoint: str, cache: str, hookpoint: str | None, device: str,
                  usage: str) -> Opened:
    """Load `checkpoint`, open `cache` and resolve the dictionary's sites in it; `usage` is the
    command line to show when either is missing."""
    if not checkpoint or not cache:
        raise ValueError(f"give the dictionary and the cache: {usage}")
    dictionary = load_dictionary(checkpoint, device=device)
    opened = ActivationCache.open(cache)
    return Opened(dictionary, opened, Sites.from_cache(opened, dictionary.cfg, hookpoint))
