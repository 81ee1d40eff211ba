"""Training under a launcher: ``torchrun --nproc-per-node N`` or ``accelerate launch`` start N processes of
the same `annotune finetune` command, and the Trainer (through Accelerate) trains one DDP model across them
(NCCL on GPUs, gloo on CPUs), each process on its share of every batch.

What annotune adds: each machine's first process resolves the base model first (a GGUF file is
materialised once per machine, not raced); rank 0 alone evaluates on the dev split;
every rank's trained adapter is fingerprinted and the fingerprints gathered into the manifest (DDP keeps the
replicas identical: different fingerprints mean a broken launch); rank 0 alone writes the run folder, and
the other ranks wait for it before they return.
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext


def world_size() -> int:
    """Processes in this launch (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def main_process_first():
    """A context in which each machine's local rank 0 runs first and its other ranks after it (a no-op
    without a launcher)."""
    if world_size() == 1:
        return nullcontext()
    from accelerate import PartialState

    return PartialState().local_main_process_first()


def wait_for_everyone() -> None:
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def adapter_sha256(model) -> str:
    """sha256 of the trainable weights (the LoRA adapter), by name."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        if p.requires_grad:
            h.update(name.encode())
            h.update(p.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()


def launch_summary(model) -> dict | None:
    """For the manifest, on a launched run: world size, backend and each rank's adapter fingerprint
    (gathered from every rank: a collective call). None without a launcher. The backend is as torch states
    it, e.g. ``cpu:gloo`` or ``cuda:nccl``."""
    if world_size() == 1:
        return None
    import torch.distributed as dist

    digests: list = [None] * dist.get_world_size()
    dist.all_gather_object(digests, adapter_sha256(model))
    return {"world_size": dist.get_world_size(), "backend": str(dist.get_backend_config()),
            "adapter_sha256": digests,
            "replicas_identical": len(set(digests)) == 1}


__all__ = ["adapter_sha256", "is_main_process", "launch_summary", "main_process_first", "wait_for_everyone",
           "world_size"]
