"""Finding live experts through the DHT: the beam search's I/O, with a short-lived cache.

Each step of a ``BeamSearch`` needs the live successors of many prefixes; ``ExpertFinder`` answers
from its cache what it fetched less than ``cache_ttl`` seconds ago (misses included: a prefix with no
live expert is remembered as empty), and fetches the rest in one batched DHT round that asks every
replica and merges what they hold (``tesseract.client.discovery.get_active_successors``).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence

import trio

from tesseract.client.beam_search import BeamSearch, ChosenExpert
from tesseract.client.discovery import get_active_successors
from tesseract.dht import DHTNode
from tesseract.expert_uid import ExpertInfo

Successors = dict[int, ExpertInfo]


class ExpertFinder:
    def __init__(self, dht: DHTNode, *, cache_ttl: float = 10.0) -> None:
        self.dht = dht
        self.cache_ttl = cache_ttl
        self._cache: dict[str, tuple[float, Successors]] = {}
        self.rounds = 0  # DHT rounds made (cache misses), for tests and benchmarks

    async def successors(self, prefixes: Sequence[str]) -> dict[str, Successors]:
        now = trio.current_time()
        answer: dict[str, Successors] = {}
        missing = []
        for prefix in prefixes:
            cached = self._cache.get(prefix)
            if cached is not None and cached[0] > now:
                answer[prefix] = cached[1]
            else:
                missing.append(prefix)
        if missing:
            self.rounds += 1
            fetched = await get_active_successors(self.dht, missing, latest=True)
            expires = trio.current_time() + self.cache_ttl
            for prefix in missing:
                entries = fetched.get(prefix, {})
                self._cache[prefix] = (expires, entries)
                answer[prefix] = entries
        return answer

    def clear(self) -> None:
        self._cache.clear()

    async def find_best(
        self,
        uid_prefix: str,
        grid_scores: Sequence[Sequence[Sequence[float]]],
        grid_size: Sequence[int],
        k_best: int,
        beam_size: int | None = None,
        exclude: Collection[str] = (),
    ) -> list[list[ChosenExpert]]:
        """Per sample, the ``k_best`` best-scored live experts: one DHT round per grid dimension."""
        search = BeamSearch(uid_prefix, grid_scores, grid_size, k_best, beam_size, exclude)
        while wanted := search.wanted():
            search.feed(await self.successors(wanted))
        return search.result()
