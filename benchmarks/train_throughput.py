"""Training throughput under DDP: the trainer's DDP path vs its old hand-averaged path vs a bare DDP loop.

Two gloo processes on the CPU train the same model (the synthetic baseline preset: ResNet-18, CE + weighted
regularised triplet) on the same batches, three ways, measured side by side in interleaved rounds:
  trainer, DDP path   `TrainIteration` + `TrainStepper` as `vireid train` runs them under torchrun: the loss computed
                      inside a DistributedDataParallel forward, bucketed all-reduce overlapping the backward
  trainer, averaged   the same with the Stepper's explicit flat all-reduce after the backward (the path before DDP,
                      still the one of cmGAN, D2RL and JSIA-ReID)
  bare DDP loop       what one writes by hand: DDP(model), forward, loss, zero_grad, backward, step
and prints images/s (both ranks' images) and the ratios; asserts nothing. Acceptance (issue 19): trainer DDP path /
bare DDP loop >= 0.95. Data loading is left out (the batches are made once, in memory).

    python benchmarks/train_throughput.py [--threads 1] [--steps 12] [--rounds 3] [--height 64 --width 32]
"""

from __future__ import annotations

import argparse
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

PRESET = Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "baseline.yaml"
NUM_CLASSES = 64
WORLD = 2


def make_batches(cfg, rank: int, n: int) -> list:
    """`n` random batches laid out as the sampler lays them out (P ids x K visible + K infrared), per rank."""
    from vireid.core import Batch

    g = torch.Generator().manual_seed(1000 + rank)
    p, k = cfg.sampler.num_ids, cfg.sampler.num_pos
    out = []
    for _ in range(n):
        ids = torch.randperm(NUM_CLASSES, generator=g)[:p]
        labels = ids.repeat_interleave(2 * k)
        mods = torch.tensor([0] * k + [1] * k, dtype=torch.int8).repeat(p)
        images = torch.randn(len(labels), 3, cfg.data.height, cfg.data.width, generator=g)
        out.append(Batch(images, labels, mods, camids=mods.long() * 2 + 1, indices=torch.arange(len(labels))))
    return out


def build(cfg):
    """A baseline with rank 0's weights on every rank (as the trainer broadcasts them)."""
    from vireid.methods import build_method
    from vireid.utils.distributed import broadcast_module

    torch.manual_seed(0)
    method = build_method(cfg, NUM_CLASSES).train()
    broadcast_module(method)
    return method


def trainer_step(cfg, use_ddp: bool) -> Callable:
    """One iteration as the trainer runs it under torchrun, through DDP or with explicit averaging."""
    from vireid.engine.stepper import TrainIteration, TrainStepper, wrap_ddp

    method = build(cfg)
    stepper = TrainStepper(method.optimizers(), distributed=not use_ddp)
    iteration = TrainIteration(method, stepper, wrap_ddp(method, torch.device("cpu")) if use_ddp else None)

    def step(batch) -> None:
        iteration(batch)
        stepper.global_step += 1

    return step


def bare_step(cfg) -> Callable:
    """What one would write by hand with DDP: same model, loss, optimizer."""
    from torch.nn.parallel import DistributedDataParallel

    from vireid.losses import cross_entropy, weighted_regularized_triplet

    method = build(cfg)
    model = DistributedDataParallel(method)
    optimizer = method.optimizers()["main"][0]

    def step(batch) -> None:
        pooled, feat = model(batch.images, batch.modalities)
        loss = cross_entropy(method.classifier(feat), batch.labels) + weighted_regularized_triplet(pooled, batch.labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return step


def timed(step: Callable, batches: list, n: int) -> float:
    """Images per second of `n` steps over both ranks (ranks start and stop together)."""
    dist.barrier()
    t0 = time.perf_counter()
    for i in range(n):
        step(batches[i % len(batches)])
    dist.barrier()
    return n * len(batches[0]) * WORLD / (time.perf_counter() - t0)


def worker(rank: int, args: argparse.Namespace, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(args.threads)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    from vireid.config import load_config

    cfg = load_config(PRESET, [f"data.height={args.height}", f"data.width={args.width}", "method.variant=agw",
                               "model.pretrained=none", "train.device=cpu"])
    batches = make_batches(cfg, rank, 4)
    steps = {"trainer, DDP path": trainer_step(cfg, use_ddp=True),
             "trainer, averaged": trainer_step(cfg, use_ddp=False),
             "bare DDP loop": bare_step(cfg)}
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():
        timed(fn, batches, args.warmup)
    for _ in range(args.rounds):  # interleaved rounds so machine noise hits all alike
        for name, fn in steps.items():
            rates[name].append(timed(fn, batches, args.steps))
    if rank == 0:
        report(cfg, args, {name: sorted(r)[len(r) // 2] for name, r in rates.items()}, len(batches[0]))
    dist.destroy_process_group()


def report(cfg, args: argparse.Namespace, rate: dict[str, float], per_rank: int) -> None:
    """Print the medians and the ratios."""
    print(f"{WORLD} gloo processes x {args.threads} thread(s), {cfg.model.arch}, batch {per_rank} per rank of "
          f"{args.height}x{args.width}, {args.rounds} rounds of {args.steps} steps (median round)")
    for name, r in rate.items():
        print(f"{name:18s}: {r:8.1f} img/s")
    ddp, bare, avg = rate["trainer, DDP path"], rate["bare DDP loop"], rate["trainer, averaged"]
    print(f"ratio trainer DDP path / bare DDP loop = {ddp / bare:.3f}  (target >= 0.95)")
    print(f"ratio trainer DDP path / trainer averaged = {ddp / avg:.3f}  (the old hand-averaged path = 1)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads per rank (2 ranks share the machine)")
    p.add_argument("--steps", type=int, default=12, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--height", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    args = p.parse_args()
    mp.spawn(worker, args=(args, free_port()), nprocs=WORLD, join=True)


if __name__ == "__main__":
    main()
