"""Several training processes (train_reinflow.py under ``accelerate launch --num_processes P``):
gradient all-reduce, equal decision counts, rank seeds. Used by every policy family
(docs/distributed.md).
"""

from __future__ import annotations

import os

import numpy as np
import torch


class Distributed:
    """The multi-process side of train_reinflow.py through Hugging Face Accelerate (torch.distributed
    underneath; gloo on CPU, NCCL on GPUs). Created only when ``WORLD_SIZE`` > 1, i.e. under
    ``accelerate launch --num_processes P`` (or torchrun).

    Every rank runs its own envs with its own seeds and computes gradients on its own decisions;
    :meth:`average_gradients` all-reduces (means) them before each optimizer step, so the weights
    stay identical on every rank. Ranks use the same number of decisions per iteration
    (:meth:`equalize`) so they take the same number of optimizer steps, agree on early stopping
    (:meth:`mean_scalar`), and update the critic's input normaliser with everyone's features
    (:meth:`gather_cat`). Only rank 0 evaluates, logs and writes checkpoints.

    Attributes:
        accelerator, rank, world_size, device (torch.device of this rank), is_main.
    """

    def __init__(self, cpu: bool = False):
        from accelerate import Accelerator

        self.accelerator = Accelerator(cpu=cpu)
        self.rank = self.accelerator.process_index
        self.world_size = self.accelerator.num_processes
        self.device = self.accelerator.device
        self.is_main = self.accelerator.is_main_process
        if self.device.type == "cuda":  # "cuda" (LeRobot's processors use the type only) = this rank's GPU
            torch.cuda.set_device(self.device)

    @staticmethod
    def requested() -> bool:
        """True under a multi-process launcher (``WORLD_SIZE`` > 1)."""
        return int(os.environ.get("WORLD_SIZE", "1")) > 1

    @staticmethod
    def launcher_rank() -> int:
        """This process's global rank as set by the launcher (0 without one)."""
        return int(os.environ.get("RANK", "0"))

    def average_gradients(self, params) -> None:
        """Mean of every ``p.grad`` across ranks, in one flat all-reduce (params without a grad are
        skipped; every rank runs the same graph, so the set is the same)."""
        ps = [p for p in params if p.grad is not None]
        if not ps:
            return
        flat = torch.cat([p.grad.reshape(-1) for p in ps])
        flat = self.accelerator.reduce(flat, reduction="mean")
        off = 0
        for p in ps:
            k = p.grad.numel()
            p.grad.copy_(flat[off:off + k].view_as(p.grad))
            off += k

    def mean_scalar(self, x: float) -> float:
        """Mean of a Python float across ranks."""
        return float(self.accelerator.reduce(torch.tensor([float(x)], device=self.device), reduction="mean")[0])

    def min_int(self, n: int) -> int:
        t = self.accelerator.gather(torch.tensor([int(n)], device=self.device))
        return int(t.min())

    def gather_cat(self, x: torch.Tensor) -> torch.Tensor:
        """Concatenate (N_r, D) tensors of every rank in rank order (N_r may differ)."""
        n = torch.tensor([x.shape[0]], device=self.device)
        sizes = self.accelerator.gather(n).tolist()
        pad = torch.zeros((max(sizes) - x.shape[0], *x.shape[1:]), dtype=x.dtype, device=self.device)
        allx = self.accelerator.gather(torch.cat([x.to(self.device), pad])).cpu()
        m = max(sizes)
        return torch.cat([allx[r * m: r * m + s] for r, s in enumerate(sizes)])

    def equalize(self, data):
        """Subsample this rank's decisions (a reinflow_engine.RolloutData) to the smallest count
        over ranks (evenly spaced indices, deterministic), so every rank runs the same number of
        minibatches."""
        n_min = self.min_int(len(data))
        if n_min == len(data):
            return data
        return data.select(np.unique(np.linspace(0, len(data) - 1, n_min).round().astype(int)))

    def barrier(self) -> None:
        self.accelerator.wait_for_everyone()


def rank_seed(seed: int, rank: int) -> int:
    """Seed offset of a rank (rank 0 keeps ``seed``: a 1-process run is unchanged)."""
    return int(seed) + 104_729 * int(rank)


__all__ = ["Distributed", "rank_seed"]
