"""theta's named parameter blocks: where each block lives, in both posterior forms.

theta is a list of named blocks (docs/MATH.md §1, §6): the clip qualities, then the border that
every clip shares: the global criterion weights, one offset block per context, then the extra
blocks a campaign asks for (`Extra`: a side bias, ...), which questions load on through the
border part of their direction (engine.update.Events); of these only the feature gate's vec(W)
("gate", engine.gating) carries clip priors' loadings.
The dense form keeps theta = [quality | border] (`theta_layout`); the block form keeps the
qualities by prompt and the border as its weight vector w (`border_layout`). Read-outs and
tests name a block instead of computing offsets, so a block added to the border moves every
position that follows it in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

QUALITY = "quality"
WEIGHTS = "weights"
GATE = "gate"  # vec(W) of prompt-feature gating (engine.gating, MATH.md §8)


def context_block(context: int) -> str:
    """The name of context `context`'s weight-offset block."""
    return f"context:{context}"


@dataclass(frozen=True)
class Block:
    """One named block of theta: positions `start .. start + size - 1`."""

    name: str
    start: int
    size: int

    @property
    def stop(self) -> int:
        return self.start + self.size

    @property
    def index(self) -> slice:
        return slice(self.start, self.stop)

    def positions(self, device: torch.device | str | None = None) -> Tensor:
        """(size,) long positions of the block."""
        return torch.arange(self.start, self.stop, device=device)


@dataclass(frozen=True)
class Layout:
    """Named blocks laid end to end, in order."""

    blocks: tuple[Block, ...]

    @classmethod
    def of(cls, sizes: Iterable[tuple[str, int]], start: int = 0) -> Layout:
        """Blocks of the given (name, size), laid end to end from `start`."""
        blocks = []
        for name, size in sizes:
            if size < 0:
                raise ValueError(f"block {name!r} has a negative size {size}")
            blocks.append(Block(name, start, size))
            start += size
        names = [b.name for b in blocks]
        if len(set(names)) != len(names):
            raise ValueError(f"block names must be unique, got {names}")
        return cls(tuple(blocks))

    @property
    def size(self) -> int:
        return self.blocks[-1].stop - self.blocks[0].start if self.blocks else 0

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(b.name for b in self.blocks)

    def __getitem__(self, name: str) -> Block:
        for block in self.blocks:
            if block.name == name:
                return block
        raise KeyError(f"no block {name!r}; the blocks are {list(self.names)}")

    def __iter__(self) -> Iterator[Block]:
        return iter(self.blocks)

    def __contains__(self, name: object) -> bool:
        return name in self.names


Extra = tuple[tuple[str, int], ...]  # the extra border blocks, (name, size) in order


def border_layout(n_criteria: int, n_contexts: int, start: int = 0, extra: Extra = ()) -> Layout:
    """The shared blocks: the global weights (K), each context's offsets (K each), then the
    extra blocks in order."""
    sizes = [(WEIGHTS, n_criteria), *((context_block(c), n_criteria) for c in range(n_contexts))]
    return Layout.of([*sizes, *extra], start)


def theta_layout(n_items: int, n_criteria: int, n_contexts: int, extra: Extra = ()) -> Layout:
    """The dense form's theta: the clip qualities (n), then the border."""
    border = border_layout(n_criteria, n_contexts, start=n_items, extra=extra)
    return Layout((Block(QUALITY, 0, n_items), *border.blocks))


def grown(extra: Extra, name: str, n_new: int) -> tuple[Extra, int]:
    """`extra` with block `name` grown by `n_new` (appended at the end when new), and the
    offset, from the first extra block's start, where the new coordinates go."""
    if n_new < 0:
        raise ValueError(f"n_new must be >= 0, got {n_new}")
    names = [n for n, _ in extra]
    if name in (QUALITY, WEIGHTS) or name.startswith("context:"):
        raise ValueError(f"{name!r} is not an extra border block")
    if name not in names:
        return (*extra, (name, n_new)), sum(size for _, size in extra)
    at = names.index(name)
    offset = sum(size for _, size in extra[: at + 1])
    blocks = list(extra)
    blocks[at] = (name, extra[at][1] + n_new)
    return tuple(blocks), offset


__all__ = [
    "GATE",
    "QUALITY",
    "WEIGHTS",
    "Block",
    "Extra",
    "Layout",
    "border_layout",
    "context_block",
    "grown",
    "theta_layout",
]
