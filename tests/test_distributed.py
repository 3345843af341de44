"""torchrun / DDP on CPU with the gloo backend: two processes against one."""
import csv
import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from byol import BYOL, SimCLR, create_encoder, target_momentum
from byol.training.distributed import Process, gather_rows, shard, sync_batchnorm
from byol.optim.lars import LARS, parameter_groups

STEPS, BATCH = 3, 16


def make_model(method: str = "byol") -> torch.nn.Module:
    torch.manual_seed(0)
    encoder = create_encoder("narrow_resnet", 1, None, 16)
    if method == "simclr":  # its negatives come from every rank: the all-gather must be exact too
        return SimCLR(encoder, 256, 64, 32, temperature=0.5)
    return BYOL(encoder, 256, 64, 32)


def make_views() -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    return [(torch.randn(BATCH, 1, 16, 16, generator=generator), torch.randn(BATCH, 1, 16, 16, generator=generator))
            for _ in range(STEPS)]


def train(model: torch.nn.Module, step_model, views, rank: int = 0, world: int = 1) -> list[float]:
    optimizer = LARS(parameter_groups([(n, p) for n, p in model.named_parameters() if not n.startswith("target_")],
                                      1e-5), lr=0.5)
    losses, per_rank = [], BATCH // world
    for step, (view_1, view_2) in enumerate(views):
        mine = slice(rank * per_rank, (rank + 1) * per_rank)  # this rank's slice of the global batch
        loss = step_model(view_1[mine], view_2[mine])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        model.update_target(target_momentum(step, 100, 0.9))
        mean_loss = loss.detach().clone()
        if world > 1:
            dist.all_reduce(mean_loss)
            mean_loss /= world
        losses.append(mean_loss.item())
    return losses


def _rank(rank: int, world: int, port: int, out: str, method: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    model = sync_batchnorm(make_model(method), torch.device("cpu"))
    step_model = torch.nn.parallel.DistributedDataParallel(model)
    losses = train(model, step_model, make_views(), rank, world)
    target = torch.cat([p.detach().flatten() for n, p in model.named_parameters() if n.startswith("target_")]
                       or [torch.zeros(1)])  # SimCLR has no target
    targets = [torch.empty_like(target) for _ in range(world)]
    dist.all_gather(targets, target)
    if rank == 0:
        torch.save({"losses": losses, "state": model.state_dict(),
                    "targets_identical": all(torch.equal(t, targets[0]) for t in targets)}, out)
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("method", ["byol", "simclr"])
@pytest.mark.slow
def test_two_processes_take_the_same_steps_as_one_with_the_global_batch(tmp_path, method):
    mp.spawn(_rank, args=(2, free_port(), str(tmp_path / "ddp.pt"), method), nprocs=2)
    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each rank ran
    try:
        model = make_model(method)
        losses = train(model, model, make_views())
    finally:
        torch.set_num_threads(threads)  # later tests compare with subprocesses that use every core
    assert ddp["losses"] == pytest.approx(losses, rel=1e-4)
    for name, value in model.state_dict().items():
        if value.is_floating_point():
            assert torch.allclose(ddp["state"][name], value, atol=1e-4, rtol=1e-3), name
    assert ddp["targets_identical"]  # the EMA target stays bit-identical on every rank


def test_global_batchnorm_is_batchnorm_in_one_process():
    torch.manual_seed(0)
    layer = torch.nn.BatchNorm2d(3)
    x = torch.randn(8, 3, 5, 5)
    converted = sync_batchnorm(torch.nn.Sequential(layer), torch.device("cpu"))
    assert type(converted[0]).__name__ == "GlobalBatchNorm"
    assert torch.allclose(converted(x), torch.nn.functional.batch_norm(x, None, None, training=True), atol=1e-5)


def test_shards_cover_each_global_batch_once_and_gather_restores_order():
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    parts = [shard(order, 8, Process(rank, 2)) for rank in range(2)]
    assert [len(p) for p in parts] == [24, 24]  # 6 global batches of 8, 4 per rank; the partial one dropped
    assert torch.equal(torch.stack([p.view(6, 4) for p in parts], 1).reshape(-1), order[:48])
    assert gather_rows(torch.arange(5.0), 5, Process()).tolist() == list(range(5))


def torchrun(*args, nproc: int = 2, cwd=None):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "byol", *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=cwd)


@pytest.mark.slow
def test_torchrun_run_writes_once_and_resumes_in_one_process(tiny_idx, tmp_path):
    run = tmp_path / "run"
    flags = ["pretrain", "--data", str(tiny_idx), "--out", str(run), "--epochs", "2", "--batch-size", "32",
             "--hidden-dim", "32", "--knn-k", "10", "--knn-every", "1", "--no-linear-probe", "--device", "cpu"]
    result = torchrun(*flags, "--stop-after", "1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("k-NN top-1") == 1 and result.stdout.count("byol: fashion") + \
        result.stdout.count(f"byol: {tiny_idx.name}") == 1  # rank 0 alone prints
    assert "x 2 processes" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run", "tiny-idx"]  # nothing stray in the working dir
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1"]  # one writer
    checkpoint = torch.load(run / "checkpoints" / "last.pt", weights_only=False)
    assert set(checkpoint) == {"model", "optimizer", "epoch", "step", "row", "meter", "config"}
    assert not any(k.startswith("module.") for k in checkpoint["model"])
    # the two-process checkpoint resumes in one process
    from byol.commands.cli import main

    assert main(["pretrain", "--out", str(run), "--resume"]) == 0
    assert [r["epoch"] for r in csv.DictReader((run / "metrics.csv").open())] == ["1", "2"]
    assert json.loads((run / "results.json").read_text())["processes"] == 1


@pytest.mark.slow
def test_global_batch_must_split_over_the_processes(tiny_idx, tmp_path):
    result = torchrun("pretrain", "--data", str(tiny_idx), "--out", str(tmp_path / "run"), "--batch-size", "33",
                      "--device", "cpu", cwd=tmp_path)
    assert result.returncode != 0 and "does not split evenly over 2 processes" in result.stderr
    # our processes print the one line and exit 2; the traceback that follows is torchrun's own
    # report of a failed worker, and names none of our code
    assert "byol/" not in result.stderr.split("does not split evenly")[-1]
    assert not (tmp_path / "run").exists()


def test_every_rank_and_step_augments_with_its_own_reproducible_stream():
    from byol import PretrainConfig, augment, byol_views
    from byol.training.step import Plan

    images = torch.randint(0, 256, (8, 1, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    recipe = byol_views(blur=True)[0]

    def view(seed: int, step: int, rank: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(Plan(PretrainConfig(seed=seed), 16, 10, 8).augmentation_seed(step, rank))
        return augment(images, recipe, 16, torch.tensor([0.5]), torch.tensor([0.25]), generator)

    draws = {(step, rank): view(7, step, rank) for step in range(3) for rank in range(3)}
    keys = list(draws)
    for i, a in enumerate(keys):  # no two (step, rank) pairs draw the same views
        for b in keys[i + 1:]:
            assert not torch.equal(draws[a], draws[b]), (a, b)
    assert torch.equal(view(7, 2, 1), draws[(2, 1)])  # and the draws depend on nothing else: reproducible
    assert not torch.equal(view(8, 2, 1), draws[(2, 1)])  # another seed, other streams
