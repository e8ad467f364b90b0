"""torch.distributed helpers shared by the engines and plugins (``torchrun --nproc_per_node N -m advkit ...``).

The one place advkit talks to ``torch.distributed``: joining the process group
torchrun describes, rank and world size, gathering objects, summing numbers.
Outside torchrun every helper is the single-process identity.
"""

from __future__ import annotations

import os
import sys


def _dist():
    import torch.distributed as dist

    return dist


def world() -> tuple[int, int]:
    """``(rank, world_size)``; ``(0, 1)`` outside torchrun."""
    if "torch" not in sys.modules:
        return 0, 1
    dist = _dist()
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def init_from_env(device: str = "cpu") -> bool:
    """Join the process group torchrun describes in the environment; return whether this call joined it."""
    import torch

    dist = _dist()
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not dist.is_available():
        return False
    joined = not dist.is_initialized()
    if joined:
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend)
        if backend == "nccl":
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return joined


def resolve_device(name) -> str:
    """``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``, checked here."""
    import torch

    from advkit._internal.errors import UserError

    name = str(name).strip().lower() if name is not None else "auto"
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {name!r}: no CUDA device is available here (use cpu)")
    if name not in ("cpu", "mps") and not (name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit())):
        raise UserError(f"device must be auto, cpu or cuda[:N], got {name!r}")
    return name


def join(device) -> tuple[str, bool]:
    """Resolve ``device``, join torchrun's process group if there is one, and give this rank's device;
    also whether this call joined the group (then the caller leaves it with :func:`shutdown`)."""
    device = resolve_device(device)
    joined = init_from_env(device)
    return local_device(device), joined


def local_device(device: str) -> str:
    """``cuda`` becomes this rank's ``cuda:LOCAL_RANK`` under torchrun; other devices stay."""
    if world()[1] > 1 and str(device).startswith("cuda"):
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return str(device)


def is_main() -> bool:
    """Rank 0, or no torchrun (also before joining and after leaving the process group)."""
    return world()[0] == 0 and int(os.environ.get("RANK", "0")) == 0


def all_gather(obj):
    """Every rank's ``obj`` as a list in rank order (a one-item list when not distributed)."""
    rank, size = world()
    if size == 1:
        return [obj]
    out = [None] * size
    _dist().all_gather_object(out, obj)
    return out


def all_sum(values: list[float], device="cpu") -> list[float]:
    """Element-wise sum of ``values`` over ranks (float64)."""
    if world()[1] == 1:
        return list(values)
    import torch

    t = torch.tensor(values, dtype=torch.float64, device=device)
    _dist().all_reduce(t)
    return t.tolist()


def barrier() -> None:
    """Wait for every rank (used at the end of a training epoch)."""
    if world()[1] > 1:
        _dist().barrier()


def shutdown() -> None:
    if "torch" in sys.modules:
        dist = _dist()
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
