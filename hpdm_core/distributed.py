"""`torchrun` and `torch.distributed` in one place: process group, sharding, reductions, DDP/FSDP.

Launch with PyTorch's own launcher, e.g. `torchrun --standalone --nproc_per_node=8 -m hpdm_cli train ...`.
torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (plus MASTER_ADDR/MASTER_PORT); without them every
function here degrades to the single-process answer, so library code calls them unconditionally.

Results never depend on the number of processes: work is split by sample index and every sample draws
from its own seed, so a rank only decides *which* samples it computes, never *what* they are.
Checkpoints stay plain single files: FSDP's sharded tensors are gathered into full tensors on save and
scattered back on load, so a run saved by N processes resumes with M.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import torch
import torch.distributed as dist
import torch.nn as nn

from hpdm_core.errors import BadInputError


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0



def launched() -> bool:
    """True when started by torchrun (or any launcher that sets the env:// variables)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def read_env() -> DistEnv:
    """RANK / WORLD_SIZE / LOCAL_RANK from the environment; (0, 1, 0) outside torchrun."""
    if not launched():
        return DistEnv()
    try:
        rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
        local = int(os.environ.get("LOCAL_RANK", rank))
    except ValueError:
        raise BadInputError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (they are set by torchrun)") from None
    if not 0 <= rank < world:
        raise BadInputError(f"RANK={rank} is outside WORLD_SIZE={world}")
    return DistEnv(rank, world, local)


def resolve_device(device: str) -> torch.device:
    """--device auto|cpu|cuda[:N] of a single process -> a torch.device, or a clear BadInputError."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise BadInputError(f"unknown device {device!r}; use auto, cpu or cuda")
    return torch.device(device)


def as_device(device: str | torch.device, name: str = "device") -> torch.device:
    """A library argument `device` ("auto", "cpu", "cuda[:n]" or a torch.device) -> a torch.device; the
    messages name the argument, where resolve_device's name the command's --device."""
    if isinstance(device, torch.device):
        return device
    if not isinstance(device, str) or not (device in ("auto", "cpu") or device.startswith("cuda")):
        raise BadInputError(f"`{name}` is {device!r}: use 'auto', 'cpu' or 'cuda'")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInputError(f"`{name}` is {device!r} but no CUDA device is available; use 'cpu'")
    return resolve_device(device)


def device_for(env: DistEnv, requested: str = "auto") -> torch.device:
    """The device of this process: cuda:LOCAL_RANK when CUDA is used, else the CPU."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise BadInputError("--device cuda was asked for but no CUDA device is available; use --device cpu")
    if requested not in ("auto", "cuda"):
        raise BadInputError(f"under torchrun the device follows LOCAL_RANK; use --device auto, cuda or cpu, "
                            f"not {requested!r}")
    if env.local_rank >= torch.cuda.device_count():
        raise BadInputError(f"LOCAL_RANK={env.local_rank} but this node has {torch.cuda.device_count()} GPUs; "
                            "use --nproc_per_node at most the GPU count")
    return torch.device("cuda", env.local_rank)


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def init(requested_device: str = "auto", timeout_minutes: float = 30.0) -> tuple[DistEnv, torch.device]:
    """Join the process group (NCCL on CUDA, gloo on CPU) when launched by torchrun; idempotent.

    Returns (env, device). Outside torchrun nothing is initialised and the device is resolved as usual.
    """
    env = read_env()
    device = device_for(env, requested_device)
    if launched() and not is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)  # before init: NCCL binds the communicator to the current device
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, timeout=datetime.timedelta(minutes=timeout_minutes), **kwargs)
    return env, device


def destroy() -> None:
    if is_initialized():
        dist.destroy_process_group()


@contextlib.contextmanager
def process_group(requested_device: str = "auto") -> Iterator[tuple[DistEnv, torch.device]]:
    """`with process_group("auto") as (env, device):` the body runs inside torchrun's process group
    (joined when launched by torchrun, left afterwards, also on an error); in a single process it
    only resolves the device. Every command, and a Python user of hpdm_core, sets up alike."""
    env, device = init(requested_device) if launched() else (DistEnv(), resolve_device(requested_device))
    try:
        yield env, device
    finally:
        destroy()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if is_initialized():
        dist.barrier()


def _comm_device() -> torch.device:
    """Where collectives need their tensors: the current GPU for NCCL, the CPU for gloo."""
    if is_initialized() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# ----------------------------------------------------------------------------- reductions and gathers

def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum of `tensor` over all ranks (a new tensor, same device and dtype; float64 stays float64)."""
    if not is_initialized():
        return tensor.clone()
    buffer = tensor.detach().to(_comm_device(), copy=True).contiguous()
    dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
    return buffer.to(tensor.device)


def all_reduce_mean(tensor: torch.Tensor) -> torch.Tensor:
    return all_reduce_sum(tensor) / world_size()


def merge_feature_stats(stats):
    """metrics.frechet.FeatureStats summed over all ranks: equal to one process having seen every clip."""
    merged = all_reduce_sum(stats.to_tensor().double())
    return type(stats).from_tensor(merged, stats.dim)


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank src's `obj` on every rank (e.g. a path or a config only the main process computed)."""
    if not is_initialized():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_comm_device() if dist.get_backend() == "nccl" else None)
    return box[0]


def gather_to_main(obj: Any) -> list[Any] | None:
    """Every rank's picklable `obj`, in rank order, on rank 0; None on the others."""
    if not is_initialized():
        return [obj]
    out = [None] * world_size() if is_main() else None
    dist.gather_object(obj, out, dst=0)
    return out


# ----------------------------------------------------------------------------- sharding by sample index

def shard_range(num: int, rank: int, world_size: int) -> range:
    """Contiguous shard: rank r gets indices [r * n / W, (r + 1) * n / W); sizes differ by at most one."""
    if num < 0 or world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"cannot shard {num} items for rank {rank} of {world_size}")
    return range(num * rank // world_size, num * (rank + 1) // world_size)


def shard(indices: Iterable[int] | int, rank: int | None = None, world: int | None = None) -> list[int]:
    """This rank's part of `indices` (a count n means range(n)); defaults to the current process group."""
    items = list(range(indices)) if isinstance(indices, int) else list(indices)
    rank = globals()["rank"]() if rank is None else rank
    world = world_size() if world is None else world
    positions = shard_range(len(items), rank, world)
    return [items[i] for i in positions]


# ----------------------------------------------------------------------------- model wrapping

def wrap_ddp(module: nn.Module, device: torch.device, find_unused_parameters: bool = False) -> nn.Module:
    """DistributedDataParallel around `module` (weights broadcast from rank 0; gradients averaged).

    HPDM registers no parameter that a training forward leaves unused (a block that sees only level 0
    has no fusion projection), so the default find_unused_parameters=False holds and every gradient
    is all-reduced each step.
    """
    if not is_initialized():
        return module
    ids = [device.index] if device.type == "cuda" else None
    # No buffer changes during training (the Fourier frequencies are constants): skip their broadcast.
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, broadcast_buffers=False,
                                               find_unused_parameters=find_unused_parameters)


def fully_shard_blocks(model: nn.Module, blocks: Iterable[nn.Module], reshard_after_forward: bool = True) -> nn.Module:
    """FSDP2: shard each block as its own unit (gathered just before it runs), then the root.

    The root unit holds what is left (tokenizer, embeddings, fusion projections, output head). Works
    in place: `model`'s parameters become DTensors sharded over the ranks' first dimension.
    """
    from torch.distributed.fsdp import fully_shard

    if not is_initialized():
        raise BadInputError("--fsdp needs a process group: launch with torchrun (e.g. --nproc_per_node=2)")
    for block in blocks:
        fully_shard(block, reshard_after_forward=reshard_after_forward)
    fully_shard(model, reshard_after_forward=reshard_after_forward)
    return model


# ----------------------------------------------------------------------------- full (gathered) states

def _is_dtensor(value: Any) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(value, DTensor)


def _full(value: Any) -> Any:
    """A DTensor gathered to its full CPU tensor (a collective: all ranks call it); others unchanged."""
    if _is_dtensor(value):
        return value.full_tensor().cpu()
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: _full(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_full(v) for v in value)
    return value


def full_model_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's full state dict on the CPU under plain names, whether sharded (FSDP) or not.

    Collective under FSDP: every rank must call it; all ranks receive the full dict.
    """
    if any(_is_dtensor(p) for p in model.parameters()):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        # cpu_offload=False: every rank gets the tensors (with True only rank 0 would), so any rank
        # can write the file or hand the weights to the EMA.
        state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=False))
        return {k: v.detach().cpu() for k, v in state.items()}
    return {k: v.detach().cpu() for k, v in model.state_dict().items()}


def load_full_model_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a plain full state dict into `model`, sharding it when the model is FSDP-sharded."""
    if any(_is_dtensor(p) for p in model.parameters()):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=True))
    else:
        model.load_state_dict(state)


def full_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """optimizer.state_dict() with every sharded state tensor gathered: the same layout (states keyed
    by parameter position) as an unsharded run writes, so either can resume the other. Collective."""
    return _full(optimizer.state_dict())


def load_full_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Load a full optimizer state dict; state tensors of sharded parameters are re-sharded like them."""
    from torch.distributed.tensor import distribute_tensor

    params = [p for group in optimizer.param_groups for p in group["params"]]
    sharded = {i for i, p in enumerate(params) if _is_dtensor(p)}
    if not sharded:
        optimizer.load_state_dict(state)
        return
    per_param = {}
    for index, values in state["state"].items():
        index = int(index)
        param = params[index]
        if index in sharded:
            values = {k: distribute_tensor(v.to(param.device_mesh.device_type), param.device_mesh, param.placements)
                      if isinstance(v, torch.Tensor) and v.shape == param.shape else v for k, v in values.items()}
        per_param[index] = values
    optimizer.load_state_dict({"state": per_param, "param_groups": state["param_groups"]})
