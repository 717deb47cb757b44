"""Beam search for the best live experts of a grid, without I/O.

An expert uid is a name plus one coordinate per grid dimension (``ffn.3.14``). The gate scores each
coordinate of each dimension for each sample; an expert's score is the sum of its coordinates'
scores. ``BeamSearch`` walks the dimensions in order, keeping for each sample the ``beam_size`` best
prefixes that have at least one live expert under them. Each step asks for the live successors of all
the samples' prefixes at once (``wanted``), so a whole batch costs one DHT round per dimension; the
caller fetches them (``tesseract.client.routing``) and ``feed``s the answer back.

With every expert alive the result is the exact top ``k``: scores add up, so the best completion of a
prefix is its score plus the same best remainder for every prefix, and the beam never drops a prefix
that one of the top ``k`` experts needs.
"""

from __future__ import annotations

import heapq
from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

from tesseract.dht.experts import UID_DELIMITER, ExpertInfo


class Candidate(NamedTuple):
    score: float
    prefix: str
    coordinates: tuple[int, ...]


class ChosenExpert(NamedTuple):
    uid: str
    endpoint: str
    score: float
    coordinates: tuple[int, ...]


class BeamSearch:
    """``while (wanted := search.wanted()): search.feed(fetch(wanted))``; then ``search.result()``."""

    def __init__(
        self,
        uid_prefix: str,
        grid_scores: Sequence[Sequence[Sequence[float]]],
        grid_size: Sequence[int],
        k_best: int,
        beam_size: int | None = None,
        exclude: Collection[str] = (),
    ) -> None:
        """``grid_scores[d][sample][coordinate]``: the gate's scores for dimension ``d``.

        ``exclude``: uids not to choose (experts that failed a moment ago).
        """
        if len(grid_scores) != len(grid_size):
            raise ValueError(f"{len(grid_scores)} score dimensions for a grid of {len(grid_size)}")
        self.uid_prefix = uid_prefix.rstrip(UID_DELIMITER)
        self.grid_scores = grid_scores
        self.grid_size = tuple(grid_size)
        self.k_best = k_best
        self.beam_size = max(beam_size or k_best, k_best)
        self.exclude = frozenset(exclude)
        self.batch_size = len(grid_scores[0]) if grid_scores else 0
        self.depth = 0
        self.beams: list[list[Candidate]] = [
            [Candidate(0.0, self.uid_prefix, ())] for _ in range(self.batch_size)
        ]
        self._final: list[list[ChosenExpert]] | None = None

    def wanted(self) -> list[str]:
        """The prefixes whose live successors the next step needs (empty when the search is done)."""
        if self._final is not None or self.batch_size == 0:
            return []
        return list(dict.fromkeys(c.prefix for beam in self.beams for c in beam))

    def feed(self, successors: Mapping[str, Mapping[int, ExpertInfo]]) -> None:
        """Advance one dimension given ``prefix -> {coordinate: an expert under prefix.coordinate}``."""
        depth, last = self.depth, self.depth == len(self.grid_size) - 1
        size = self.grid_size[depth]
        final: list[list[ChosenExpert]] = []
        for sample, beam in enumerate(self.beams):
            scores = self.grid_scores[depth][sample]
            extended: list[tuple[float, Candidate, ExpertInfo]] = []
            for candidate in beam:
                for coordinate, info in successors.get(candidate.prefix, {}).items():
                    if 0 <= coordinate < size and not (
                        last and f"{candidate.prefix}.{coordinate}" in self.exclude
                    ):
                        score = candidate.score + float(scores[coordinate])
                        prefix = f"{candidate.prefix}{UID_DELIMITER}{coordinate}"
                        extended.append(
                            (score, Candidate(score, prefix, (*candidate.coordinates, coordinate)), info)
                        )
            keep = self.k_best if last else self.beam_size
            best = heapq.nlargest(keep, extended, key=lambda item: (item[0], _tiebreak(item[1].coordinates)))
            self.beams[sample] = [candidate for _, candidate, _ in best]
            if last:
                final.append(
                    [
                        ChosenExpert(candidate.prefix, info.endpoint, score, candidate.coordinates)
                        for score, candidate, info in best
                        if info.uid == candidate.prefix
                    ]
                )
        self.depth += 1
        if last:
            self._final = final
        elif not any(self.beams):  # nothing alive under any prefix: done early, empty-handed
            self._final = [[] for _ in self.beams]

    def result(self) -> list[list[ChosenExpert]]:
        """Per sample, up to ``k_best`` live experts, best first."""
        if self._final is None:
            if self.batch_size == 0:
                return []
            raise RuntimeError("the search has not finished: feed it what wanted() asks for")
        return self._final


def _tiebreak(coordinates: tuple[int, ...]) -> tuple[int, ...]:
    """Equal scores: prefer smaller coordinates, so the choice never depends on dict order."""
    return tuple(-c for c in coordinates)
