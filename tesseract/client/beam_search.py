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

from collections.abc import Collection, Mapping, Sequence
from typing import NamedTuple

import torch

from tesseract.expert_uid import UID_DELIMITER, ExpertInfo


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
        grid_scores: Sequence[torch.Tensor | Sequence[Sequence[float]]],
        grid_size: Sequence[int],
        k_best: int,
        beam_size: int | None = None,
        exclude: Collection[str] = (),
    ) -> None:
        """``grid_scores[d][sample][coordinate]``: the gate's scores for dimension ``d`` (a tensor
        ``[batch, grid_size[d]]`` or nested lists).

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
        keep = self.k_best if last else self.beam_size
        size = self.grid_size[depth]
        prefixes = self.wanted()
        row_of = {prefix: row for row, prefix in enumerate(prefixes)}
        # alive[p, c]: prefix p may go on to coordinate c; the extra last row pads short beams.
        alive = torch.zeros(len(prefixes) + 1, size, dtype=torch.bool)
        usable: list[dict[int, ExpertInfo]] = []
        for row, prefix in enumerate(prefixes):
            found = self._usable(prefix, successors.get(prefix, {}), last)
            usable.append(found)
            if found:
                alive[row, list(found)] = True
        width = max(len(beam) for beam in self.beams)
        padding = [(len(prefixes), float("-inf"))] * width
        rows = [([(row_of[c.prefix], c.score) for c in beam] + padding)[:width] for beam in self.beams]
        parents = torch.tensor([[row for row, _ in entries] for entries in rows], dtype=torch.long)
        parent_scores = torch.tensor(
            [[score for _, score in entries] for entries in rows], dtype=torch.float64
        )
        scores = torch.as_tensor(self.grid_scores[depth], dtype=torch.float64).reshape(self.batch_size, size)
        total = (parent_scores[:, :, None] + scores[:, None, :]).masked_fill(~alive[parents], float("-inf"))
        values, positions = total.reshape(self.batch_size, width * size).topk(min(keep, width * size), dim=1)
        final: list[list[ChosenExpert]] = []
        made: dict[tuple[int, int], tuple[str, tuple[int, ...], str]] = {}  # shared by the samples
        for sample, (sample_values, sample_positions) in enumerate(
            zip(values.tolist(), positions.tolist(), strict=True)
        ):
            beam, kept, chosen = self.beams[sample], [], []
            for score, position in zip(sample_values, sample_positions, strict=True):
                if score == float("-inf"):
                    break
                rank, coordinate = divmod(position, size)
                parent = beam[rank]
                key = (row_of[parent.prefix], coordinate)
                if key not in made:
                    endpoint = usable[key[0]][coordinate].endpoint if last else ""
                    prefix = f"{parent.prefix}{UID_DELIMITER}{coordinate}"
                    made[key] = (prefix, (*parent.coordinates, coordinate), endpoint)
                prefix, coordinates, endpoint = made[key]
                kept.append(Candidate(score, prefix, coordinates))
                if last:
                    chosen.append(ChosenExpert(prefix, endpoint, score, coordinates))
            self.beams[sample] = kept
            final.append(chosen)
        self.depth += 1
        if last:
            self._final = final
        elif not any(self.beams):  # nothing alive under any prefix: done early, empty-handed
            self._final = [[] for _ in self.beams]

    def _usable(self, prefix: str, found: Mapping[int, ExpertInfo], last: bool) -> dict[int, ExpertInfo]:
        """The successors of ``prefix`` a sample may take: in the grid, and at the last dimension
        announced under their own uid and not excluded."""
        size = self.grid_size[self.depth]
        usable = {}
        for coordinate, info in found.items():
            if not 0 <= coordinate < size:
                continue
            if last:
                uid = f"{prefix}{UID_DELIMITER}{coordinate}"
                if info.uid != uid or uid in self.exclude:
                    continue
            usable[coordinate] = info
        return usable

    def result(self) -> list[list[ChosenExpert]]:
        """Per sample, up to ``k_best`` live experts, best first."""
        if self._final is None:
            if self.batch_size == 0:
                return []
            raise RuntimeError("the search has not finished: feed it what wanted() asks for")
        return self._final
