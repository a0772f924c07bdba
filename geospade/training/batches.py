"""The train split as batches, in an order that is a function of (seed, epoch, index) only, so a
resumed run sees exactly the batches the interrupted one would have (docs/design.md, "Run
folder")."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader, Sampler

from geospade.data.chips import ChipDataset


class EpochSampler(Sampler[int]):
    """Indices of one epoch: a permutation drawn from (seed, epoch), split across ranks,
    starting after ``skip`` samples of this rank (to resume mid-epoch).

    Every rank gets ``len(dataset) // world`` indices (the tail is dropped, so ranks stay in step).

    Args:
        size: samples in the dataset.
        seed: seed of the permutations.
        rank: this process's rank.
        world: processes sharing the data.
        shuffle: permute (else the dataset's order).
    """

    def __init__(self, size: int, seed: int, rank: int = 0, world: int = 1, shuffle: bool = True):
        self.size, self.seed, self.rank, self.world, self.shuffle = size, seed, rank, world, shuffle
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch: int, skip: int = 0) -> None:
        self.epoch, self.skip = epoch, skip

    def per_rank(self) -> int:
        return self.size // self.world

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.size, generator=g).tolist()
        else:
            order = list(range(self.size))
        mine = order[: self.per_rank() * self.world][self.rank :: self.world]
        return iter(mine[self.skip :])

    def __len__(self) -> int:
        return self.per_rank() - self.skip


def epoch_batches(dataset: ChipDataset, sampler: EpochSampler, start_step: int, batch_size: int,
                  seed: int, workers: int = 0, pin_memory: bool = False
                  ) -> Iterator[tuple[int, dict[str, torch.Tensor]]]:
    """Batches from step ``start_step`` on, epoch after epoch, without end.

    Args:
        dataset: the train split (its augmentation follows :meth:`ChipDataset.set_epoch`).
        sampler: this rank's :class:`EpochSampler` over ``dataset``.
        start_step: steps already done (a resumed run starts mid-epoch).
        batch_size: chips per batch; an epoch is ``sampler.per_rank() // batch_size`` batches.
        seed: the run's seed.
        workers: DataLoader worker processes.
        pin_memory: page-locked batches (for a CUDA device).

    Returns:
        An iterator of ``(epoch, batch)``; close it to stop the loader's workers.
    """
    steps_per_epoch = sampler.per_rank() // batch_size
    epoch, skip = divmod(start_step, steps_per_epoch)
    while True:
        sampler.set_epoch(epoch, skip * batch_size)
        dataset.set_epoch(epoch)
        loader = DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, num_workers=workers,
            drop_last=True, pin_memory=pin_memory,
            generator=torch.Generator().manual_seed(seed + epoch), persistent_workers=False,
        )
        for batch in loader:
            yield epoch, batch
        epoch, skip = epoch + 1, 0
