"""Rank-aware, resumable batches from a ``BlendedDataset``.

Global sample order is fixed by the dataset; the loader only walks it::

    global micro-batch m = samples [m*B*dp, (m+1)*B*dp)       B = micro_batch_size, dp = dp_size
    data-parallel rank r takes  [m*B*dp + r*B, m*B*dp + (r+1)*B)
    every tensor-parallel rank with the same dp_rank gets the same rows (DeepSpeed asserts it)

The only state is ``consumed_samples`` (global), so ``state_dict()`` is tiny and a resumed
run reads exactly the batches an uninterrupted one would. Nothing depends on
``torch.distributed``: ranks are explicit arguments (see ``data_parallel_coords``). With an
index cache (``data.dataset.IndexCache``) every rank hands the whole global micro-batch to
``BlendedDataset.prefetch``, so the building rank makes each epoch's index before any rank
reads it and the next one in the background.

Usage (in the training loop)::

    from data.dataset import build_datasets
    from data.loader import DataLoader, data_parallel_coords
    sets = build_datasets(cfg.data, vocab_size=30003)
    dp_rank, dp_size = data_parallel_coords(rank, world_size, tp_size)
    loader = DataLoader(sets["train"], micro_batch_size=8, dp_rank=dp_rank, dp_size=dp_size)
    loader.load_state_dict(ckpt["data"])          # when resuming
    batch = next(loader)                          # batch.input_ids, batch.labels: (8, 2048)
    log(epoch=batch.epoch); ckpt["data"] = loader.state_dict()
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from data.dataset import BlendedDataset


def data_parallel_coords(rank: int, world_size: int, tp_size: int = 1) -> tuple[int, int]:
    """(dp_rank, dp_size) of a global rank when tensor-parallel groups are consecutive ranks.

    That is DeepSpeed's AutoTP layout (TP group = ranks [i*tp, (i+1)*tp)); all ranks of a
    TP group share a dp_rank and so read the same batch. With a DeepSpeed engine at hand,
    ``deepspeed.utils.groups`` gives the same numbers.
    """
    if tp_size < 1 or world_size % tp_size:
        raise ValueError(f"world size {world_size} is not a multiple of the tensor-parallel size {tp_size}")
    return rank // tp_size, world_size // tp_size


@dataclass
class Batch:
    """One micro-batch of one data-parallel rank."""

    tokens: torch.Tensor
    """(B, seq_len + 1) int64 token ids; inputs and targets are the two shifted views."""
    dataset_index: torch.Tensor
    """(B,) int64: blend component each row came from."""
    sample_epoch: torch.Tensor
    """(B,) float64: fractional epoch of each row within its component (1.5 = middle of epoch 2)."""
    step: int
    """Number of global micro-batches read before this one."""
    consumed_samples: int
    """Global samples consumed after this micro-batch (all data-parallel ranks together)."""
    epoch: float
    """Fractional epoch after this global micro-batch (the same on every rank)."""
    epoch_start: float
    """Fractional epoch before it."""
    crossed_epoch: bool
    """True when this global micro-batch holds the first sample of a new epoch (of any blend component)."""

    @property
    def input_ids(self) -> torch.Tensor:
        return self.tokens[:, :-1]  # (B, seq_len)

    @property
    def labels(self) -> torch.Tensor:
        return self.tokens[:, 1:]  # (B, seq_len)


class DataLoader:
    """Iterator of ``Batch`` for one data-parallel rank; endless (later epochs reshuffle)."""

    def __init__(
        self,
        dataset: BlendedDataset,
        micro_batch_size: int,
        dp_rank: int = 0,
        dp_size: int = 1,
        consumed_samples: int = 0,
    ):
        if not 0 <= dp_rank < dp_size:
            raise ValueError(f"dp_rank {dp_rank} outside data-parallel size {dp_size}")
        if micro_batch_size < 1:
            raise ValueError(f"micro_batch_size must be >= 1, got {micro_batch_size}")
        self.dataset = dataset
        self.micro_batch_size = micro_batch_size
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.consumed_samples = consumed_samples
        self._epoch_at: tuple[int, float] | None = None  # (consumed, epoch) of the last batch

    def _epoch(self, consumed: int) -> float:
        # The previous batch's end is this batch's start: reuse it instead of recomputing.
        if self._epoch_at is None or self._epoch_at[0] != consumed:
            self._epoch_at = (consumed, self.dataset.epoch(consumed))
        return self._epoch_at[1]

    @property
    def global_micro_batch(self) -> int:
        return self.micro_batch_size * self.dp_size

    def __iter__(self) -> DataLoader:
        return self

    def __next__(self) -> Batch:
        start = self.consumed_samples
        g = self.global_micro_batch
        self.dataset.prefetch(start, start + g)
        tokens, comp, epochs = self.dataset.get_batch(
            start + self.dp_rank * self.micro_batch_size, self.micro_batch_size
        )
        self.consumed_samples = start + g
        epoch_start = self._epoch(start)
        return Batch(
            tokens=torch.from_numpy(tokens),
            dataset_index=torch.from_numpy(comp),
            sample_epoch=torch.from_numpy(epochs),
            step=start // g,
            consumed_samples=self.consumed_samples,
            epoch=self._epoch(self.consumed_samples),
            epoch_start=epoch_start,
            crossed_epoch=self.dataset.starts_new_epoch(start, start + g),
        )

    def state_dict(self) -> dict:
        return {
            "consumed_samples": self.consumed_samples,
            "micro_batch_size": self.micro_batch_size,
            "dp_size": self.dp_size,
            "dataset": self.dataset.fingerprint(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Continue where ``state`` left off; refuses if the data or the sample layout changed.

        The data-parallel size may differ as long as the global micro-batch (B * dp) is the
        same and the position is a whole number of them: then every later global batch holds
        the same samples as before.
        """
        mine = self.dataset.fingerprint()
        if state.get("dataset") != mine:
            raise ValueError(
                "data changed since the checkpoint (paths, token counts, weights, seed or seq_len differ):\n"
                f"  checkpoint: {state.get('dataset')}\n  now:        {mine}"
            )
        consumed = int(state["consumed_samples"])
        g_old = int(state["micro_batch_size"]) * int(state["dp_size"])
        if g_old != self.global_micro_batch or consumed % self.global_micro_batch:
            raise ValueError(
                f"checkpoint read global micro-batches of {g_old} samples, this run reads "
                f"{self.global_micro_batch}: the next batches would not match an uninterrupted run"
            )
        self.consumed_samples = consumed
