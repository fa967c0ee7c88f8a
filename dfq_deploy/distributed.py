"""Several processes (GPUs, or CPU processes) training one student with ``torch.distributed``.

Launched by the standard launcher: ``torchrun --nproc-per-node N -m dfq_deploy train-export ...`` (or
``dfq-deploy train-export --nproc N``, which runs exactly that). Each process:

- builds the same networks (the same seed for every weight initialisation) and draws **its own** data: every random
  stream that makes images, batches or dropout masks is seeded with :func:`rank_seed` (rank 0 keeps the run's seed,
  so one process gives the single-process run);
- averages the gradients of every trained network (student, generators, DMKD's balancer, adversarial KD's extra
  students, the reconstruction's rounding and step sizes) over all processes before each optimiser step
  (:func:`average_gradients`), so every process keeps the same weights;
- splits the ZeroQ images: each process inverts its share of the batches, and all processes gather the full set
  (:func:`gather_batches`), so every process calibrates on the same images.

Rank 0 alone writes the run directory and runs export and validation; the others wait for its verdict and exit with
the same code. Backend: NCCL on CUDA, gloo on the CPU.

Why gradients are averaged explicitly rather than by wrapping the networks in ``DistributedDataParallel``: DDP
expects one forward and one backward per step for each wrapped network, but the recipes run the student inside the
generator's loss (adversarial and DFQF terms) and several times per step (DMKD's look-ahead, extra students), which
DDP's reducer cannot follow. One ``all_reduce`` of a flattened buffer per optimiser step is what DDP would send.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch

from .errors import ConfigError

RANK_SEED_STRIDE = 1_000_003


@dataclass(frozen=True)
class World:
    rank: int
    size: int
    local_rank: int
    backend: str

    @property
    def main(self) -> bool:
        return self.rank == 0


def launched() -> bool:
    """Started by torchrun with more than one process."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current() -> World | None:
    """The process group this process belongs to (None: a single process)."""
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return None
    return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                 dist.get_backend())


def init(device: torch.device) -> World:
    """Join the process group torchrun set up (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``...): NCCL for CUDA
    devices, gloo for the CPU. Returns this process's place in it.

    Raises:
        ConfigError: the environment lacks torchrun's variables.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return current() or World(0, 1, 0, dist.get_backend())
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE={os.environ.get('WORLD_SIZE')} but {', '.join(missing)} not set",
                          hint="start several processes with torchrun (or --nproc N), not by hand")
    backend = "nccl" if device.type == "cuda" else "gloo"
    # export and validation run on rank 0 while the others wait: give them time
    dist.init_process_group(backend, timeout=timedelta(hours=2))
    return current() or World(0, 1, 0, backend)


def local_device(device: torch.device, world: World | None) -> torch.device:
    """Each process's own GPU (``cuda:LOCAL_RANK``) when training on CUDA; the CPU stays the CPU."""
    if world is None or device.type != "cuda":
        return device
    if world.local_rank >= torch.cuda.device_count():
        raise ConfigError(f"process {world.rank} wants cuda:{world.local_rank} but this machine has "
                          f"{torch.cuda.device_count()} GPU(s)", hint="use --nproc <= the number of GPUs")
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


def rank() -> int:
    w = current()
    return 0 if w is None else w.rank


def rank_seed(seed: int) -> int:
    """The seed of this process's data streams (images, batches, masks): the run's own seed on rank 0."""
    return seed + RANK_SEED_STRIDE * rank()


def average_gradients(params) -> None:
    """Average ``.grad`` of ``params`` over all processes (one all_reduce); nothing in a single process."""
    w = current()
    if w is None:
        return
    import torch.distributed as dist

    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= w.size
    offset = 0
    for g in grads:
        n = g.numel()
        g.copy_(flat[offset:offset + n].view_as(g))
        offset += n


def any_true(flag: bool) -> bool:
    """True when ``flag`` is true in any process (so that every process takes the same branch)."""
    w = current()
    if w is None:
        return flag
    import torch.distributed as dist

    t = torch.tensor([1.0 if flag else 0.0], device="cuda" if w.backend == "nccl" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def my_share(n: int) -> range:
    """The indices of ``n`` work items (batches) this process does: every size-th, from its rank."""
    w = current()
    return range(n) if w is None else range(w.rank, n, w.size)


def gather_batches(mine: list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """All ``n`` batches, in order, from each process's share (:func:`my_share`); batches must have equal shapes."""
    w = current()
    if w is None:
        return mine
    import torch.distributed as dist

    per = len(range(0, n, w.size))  # the largest share
    template = mine[0] if mine else None
    shape = None if template is None else template.shape
    shapes = [None] * w.size
    dist.all_gather_object(shapes, None if shape is None else tuple(shape))
    shape = next(s for s in shapes if s is not None)
    dev = "cuda" if w.backend == "nccl" else "cpu"
    padded = torch.zeros(per, *shape, device=dev)
    for i, b in enumerate(mine):
        padded[i] = b.to(dev)
    out = [torch.empty_like(padded) for _ in range(w.size)]
    dist.all_gather(out, padded)
    batches = [None] * n
    for r in range(w.size):
        for i, idx in enumerate(range(r, n, w.size)):
            batches[idx] = out[r][i]
    return batches


def broadcast_object(obj, src: int = 0):
    """``obj`` of process ``src``, in every process."""
    w = current()
    if w is None:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_objects(obj) -> list:
    """``obj`` of every process, in rank order."""
    w = current()
    if w is None:
        return [obj]
    import torch.distributed as dist

    out = [None] * w.size
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait until every process of the group gets here (nothing to wait for in a single process)."""
    if current() is None:
        return
    import torch.distributed as dist

    dist.barrier()


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
