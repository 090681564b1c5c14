"""A resumable, seed-determined stream of augmented training samples (the trainer's data order).

:class:`SampleStream` decides which image each sample of a run is and with which seed it is
augmented, as a function of its position in the run alone; :class:`AugmentedSamples` applies the
training transforms under that seed. So a run resumed at iteration ``t`` sees exactly the
batches the uninterrupted run would have seen, with any number of DataLoader workers.
"""

from __future__ import annotations

from typing import Callable

import torch


def sample_seed(seed: int, position: int) -> int:
    """The augmentation seed of sample ``position`` of a run seeded with ``seed``."""
    return (seed * 1_000_003 + position) % (2 ** 62)


class SampleStream(torch.utils.data.Sampler):
    """Batches of ``(dataset index, augmentation seed)`` for iterations ``start..stop-1`` of one process.

    Sample ``p`` of the run (``p = (iteration * world_size + rank) * batch_size + j``) is image
    ``perm_e[p mod n]`` of epoch ``e = p // n``, where ``perm_e`` is a permutation seeded by
    ``(seed, e)``, augmented with seed ``(seed, p)``. Everything is a function of the position,
    so a resumed run sees exactly the batches the uninterrupted one would have seen.
    """

    def __init__(self, num_samples: int, batch_size: int, seed: int, start: int, stop: int,
                 rank: int = 0, world_size: int = 1) -> None:
        if num_samples < 1:
            raise ValueError("the training split is empty")
        self.n, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start, self.stop, self.rank, self.world_size = start, stop, rank, world_size
        self._epoch, self._perm = -1, None

    def _index(self, position: int) -> int:
        epoch = position // self.n
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 7919 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=generator).tolist()
        return self._perm[position % self.n]

    def __iter__(self):
        for iteration in range(self.start, self.stop):
            base = (iteration * self.world_size + self.rank) * self.batch_size
            yield [(self._index(p), sample_seed(self.seed, p)) for p in range(base, base + self.batch_size)]

    def __len__(self) -> int:
        return self.stop - self.start


class AugmentedSamples(torch.utils.data.Dataset):
    """``dataset[index]`` augmented by ``transform`` under its own seed: ``[(index, seed)] -> (image, mask)``.

    The transform draws from a generator seeded with the sample's seed; torch's global generator
    is left untouched (dropout in the model keeps its own stream).
    ``cache=True`` keeps decoded images in memory (worth it for small sets such as the embedded one).
    """

    def __init__(self, dataset: torch.utils.data.Dataset, transform: Callable, cache: bool = False) -> None:
        self.dataset, self.transform, self.cache = dataset, transform, cache
        self._cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        index, seed = key
        sample = self._cache.get(index) if self.cache else None
        if sample is None:
            sample = self.dataset[index]
            if self.cache:
                self._cache[index] = sample
        return self.transform(*sample, generator=torch.Generator().manual_seed(seed))
