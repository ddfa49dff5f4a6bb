"""torch.distributed under torchrun: detect the launch, set up the group, shard, reduce.

cnnspec brings no launcher of its own: `torchrun --nproc_per_node=N -m cnnspec run spec.yaml`
sets RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR, and this module reads them.
"""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place in the run; a single process is rank 0 of 1."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


SINGLE = World()


def launched() -> bool:
    """True when torchrun (or any torch.distributed launcher) started this process with peers."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def current_world() -> World:
    """This process's place, from the launcher's environment (joining the group is ``init``'s job)."""
    if not launched():
        return SINGLE
    return World(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))


def init(world: World, device: torch.device) -> None:
    """Join the process group: NCCL on CUDA, Gloo on CPU. A no-op for a single process."""
    if world.distributed and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # a peer that dies is noticed by torchrun, which ends the others; the timeout is a backstop
        timeout = timedelta(minutes=10)
        store = attempt_store(world, timeout)
        if store is None:
            dist.init_process_group(backend, timeout=timeout)
        else:
            dist.init_process_group(backend, store=store, rank=world.rank, world_size=world.size, timeout=timeout)


def attempt_store(world: World, timeout: timedelta) -> dist.Store | None:
    """Under torchrun's agent store, a part of it that is this attempt's alone (None elsewhere).

    torchrun's agents keep one store for every attempt of a job (always with the static
    rendezvous; with c10d too in torch 2.14: pytorch/pytorch#135712), so workers restarted after a
    failure would find their predecessors' keys there and try to connect to the dead processes'
    ports ("Connection refused", or a hang). Every attempt agrees on a fresh prefix instead."""
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
        return None
    agent = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world.size,
                          is_master=False, timeout=timeout)
    name = agree_on_attempt(agent, world, time.monotonic() + timeout.total_seconds())
    return dist.PrefixStore(f"cnnspec/{name}/", agent)


_ATTEMPT = "cnnspec/attempt"


def agree_on_attempt(store: dist.Store, world: World, deadline: float) -> str:
    """A name that every rank of this attempt agrees on and no earlier attempt used.

    Rank 0 draws it; another rank may read an earlier attempt's name at first, so it echoes the
    name it read with a nonce of its own, and only rank 0 of this attempt (whose name it is)
    echoes that back: a rank goes on when its own nonce returns with the name."""
    if world.main:
        name = uuid.uuid4().hex
        store.set(_ATTEMPT, name)
        waiting = set(range(1, world.size))
        while waiting:
            for rank in sorted(waiting):
                if store.check([f"cnnspec/join/{rank}"]):
                    read, _, nonce = store.get(f"cnnspec/join/{rank}").decode().partition(":")
                    if read == name:
                        store.set(f"cnnspec/go/{rank}", f"{name}:{nonce}")
                        waiting.discard(rank)
            if waiting:
                _pause(deadline)
        return name
    nonce, joined, go = uuid.uuid4().hex, None, f"cnnspec/go/{world.rank}"
    while True:
        name = store.get(_ATTEMPT).decode()  # waits for the first attempt's rank 0
        if name != joined:
            store.set(f"cnnspec/join/{world.rank}", f"{name}:{nonce}")
            joined = name
        if store.check([go]) and store.get(go).decode() == f"{name}:{nonce}":
            return name
        _pause(deadline)


def _pause(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise RuntimeError("the processes of this torchrun attempt did not all start in time")
    time.sleep(0.01)


def device_for(world: World, device: torch.device) -> torch.device:
    """One GPU per process on a node: cuda:LOCAL_RANK (made current, as NCCL wants before it starts)."""
    if world.distributed and device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
        return torch.device("cuda", world.local_rank)
    return device


def shard(perm: torch.Tensor, world: World, batch_size: int, limit: int | None = None) -> tuple[torch.Tensor, int]:
    """This rank's samples of an epoch and its number of full batches (at most ``limit``:
    train.limit_batches, the first batches of the epoch's order).

    Every rank takes the same number of whole batches (DDP needs equal step counts); the
    shards are disjoint and together cover the epoch except the remainder of
    len(perm) / (world.size * batch_size), which the next epoch's reshuffle covers.
    """
    per_rank = len(perm) // world.size
    steps = max(1, per_rank // batch_size)  # a split smaller than a batch is one short step
    steps = min(steps, limit) if limit is not None else steps
    take = steps * batch_size if per_rank >= batch_size else per_rank
    mine = perm[world.rank * take:(world.rank + 1) * take] if world.distributed else perm[:take]
    return mine, steps


def all_sum(values: list[float | int], device: torch.device, world: World) -> list[float]:
    """Sum numbers over all ranks (float64, so sums of accuracies stay exact)."""
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    if world.distributed:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def any_rank(flag: bool, device: torch.device, world: World) -> bool:
    """True if the flag is set on any rank (a stop request, say)."""
    if not world.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def broadcast(obj: Any, world: World) -> Any:
    """Rank 0's value of a picklable object, on every rank."""
    if not world.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj: Any, world: World) -> list[Any]:
    """Every rank's value of a picklable object, in rank order, on every rank."""
    if not world.distributed:
        return [obj]
    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj)
    return out


def close(world: World, wait: bool = True) -> None:
    """Leave the group; ``wait`` for the others first, so no rank tears down a peer's link."""
    if world.distributed and dist.is_initialized():
        if wait:
            dist.barrier()
        dist.destroy_process_group()
