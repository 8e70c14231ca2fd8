"""`mura train`: the MURA paper's recipe (SPEC §2), on one device or on torchrun.

Per view: every image is a sample with its study's label, weighted by its study type's
w_T1 / w_T0 (data.loss_weights). Adam (0.9, 0.999), lr 1e-4, batch 8; after each epoch the
validation loss decides: the learning rate is divided by 10 when it has not improved
(`--plateau-patience` epochs, 0 by default: "each time the validation loss plateaus after an
epoch"), and the checkpoint with the lowest validation loss is kept (best.pt). Validation also
reports the study-level kappa: the mean of a study's view probabilities, abnormal iff > 0.5.

A run folder holds: config.json, log.jsonl (one line per epoch), last.pt (everything needed to
resume, written every epoch) and best.pt. Each epoch's shuffling and augmentation are seeded by
(seed, epoch), so a resumed run repeats exactly what an uninterrupted one does.

Distributed: `torchrun --nproc_per_node N -m reference_model.train DATA --out RUN ...` runs
DistributedDataParallel (NCCL on GPUs, gloo on CPUs); rank 0 validates, logs and writes
checkpoints; at the end the ranks compare a checksum of their weights. `--batch-size` is the
global batch, as in the paper (8 images per optimiser step however many processes): each of N
processes takes batch/N, and a batch that N does not divide is refused. The ranks agree on
every check before training (a run folder that already holds a run, unreadable data, a bad
option): all of them stop with the same message, none is left waiting for the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from reference_model.data import DataError, ImageError, MuraImages, loss_weights, read_split
from reference_model.model import (
    ModelError,
    autocast,
    build_model,
    check_architecture,
    load_torch_file,
    select_device,
)
from reference_model.outputs import OutputError, check_output_folder
from scorer.metrics import cohen_kappa, confusion_counts

CHECKPOINT_FORMAT = "mura-checkpoint"


class TrainError(Exception):
    """A user error; the message says what was expected and what to do."""


@dataclass
class TrainConfig:
    data: str
    out: str
    arch: str = "densenet169"
    image_size: int = 224
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-4
    plateau_patience: int = 0
    seed: int = 0
    workers: int | None = None
    max_steps: int | None = None  # per epoch: short runs for tests and smoke checks
    device: str | None = None
    pretrained: str | None = None  # a file; None: torchvision's cache if present
    train_split: str = "train"
    valid_split: str = "valid"

    def check(self, world: int = 1) -> None:
        """Every option, before anything is read; `world` is the number of processes."""
        check_architecture(self.arch)
        for name in ("image_size", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TrainError(
                    f"--{name.replace('_', '-')} must be at least 1, found {getattr(self, name)}"
                )
        if self.image_size < 32:
            raise TrainError(
                f"--image-size must be at least 32 (DenseNet downsamples 32x), found {self.image_size}"
            )
        if not self.lr > 0:
            raise TrainError(f"--lr must be positive, found {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise TrainError(f"--max-steps must be at least 1, found {self.max_steps}")
        if self.workers is not None and self.workers < 0:
            raise TrainError(
                f"--workers must be 0 (load in the training process) or more, found {self.workers}"
            )
        if self.batch_size % world:
            raise TrainError(
                f"--batch-size {self.batch_size} is the global batch, split over the {world} processes; "
                f"it must be a multiple of {world} (e.g. {world * max(1, self.batch_size // world)})"
            )
        if self.device is not None:
            select_device(self.device)  # a typo or a missing GPU: ModelError now, not a traceback later


# --- distributed plumbing --------------------------------------------------------------------


@dataclass(frozen=True)
class Process:
    rank: int = 0
    world: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_process(config: TrainConfig, world: int) -> Process:
    if world == 1:
        return Process(device=select_device(config.device))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available() and config.device in (None, "cuda"):
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        device = torch.device("cuda", local)
    else:
        dist.init_process_group("gloo")
        device = torch.device("cpu")
    return Process(dist.get_rank(), world, device)


def weights_checksum(model: torch.nn.Module, parameters_only: bool = False) -> str:
    """SHA-256 of the state dict (parameters and batch-norm buffers) or of the parameters only
    (what the optimiser changes; buffers change in any forward pass in training mode)."""
    digest = hashlib.sha256()
    tensors = model.named_parameters() if parameters_only else model.state_dict().items()
    for name, tensor in sorted(tensors, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


# --- one epoch -------------------------------------------------------------------------------


def _progress(iterable, total: int, desc: str, enabled: bool):
    if not enabled:
        return iterable
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, disable=None, file=sys.stderr)


def train_epoch(
    model, loader, optimizer, scaler, process: Process, max_steps: int | None, desc: str
) -> tuple[float, int]:
    """(sum of the per-image weighted losses, images) of this process's share of an epoch."""
    model.train()
    total, count = 0.0, 0
    steps = len(loader) if max_steps is None else min(max_steps, len(loader))
    for step, (images, labels, weights) in enumerate(_progress(loader, steps, desc, process.main)):
        if step >= steps:
            break
        images = images.to(process.device, non_blocking=True)
        if process.device.type == "cuda":
            images = images.to(memory_format=torch.channels_last)
        labels, weights = labels.to(process.device), weights.to(process.device)
        with autocast(process.device):
            logits = model(images).squeeze(1)
        loss = F.binary_cross_entropy_with_logits(logits.float(), labels, weight=weights)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.item() * labels.numel()
        count += labels.numel()
    return total, count


@torch.no_grad()
def validate(model, loader, records, process: Process) -> tuple[float, float | None]:
    """(weighted validation loss per image, study-level kappa)."""
    model.eval()
    probabilities, total, count = [], 0.0, 0
    for images, labels, weights in loader:
        images = images.to(process.device)
        if process.device.type == "cuda":
            images = images.to(memory_format=torch.channels_last)
        with autocast(process.device):
            logits = model(images).squeeze(1).float()
        labels, weights = labels.to(process.device), weights.to(process.device)
        total += float(F.binary_cross_entropy_with_logits(logits, labels, weight=weights, reduction="sum"))
        count += labels.numel()
        probabilities.append(torch.sigmoid(logits).cpu().numpy())
    views = np.concatenate(probabilities)
    by_study: dict[str, list[float]] = {}
    labels_by_study: dict[str, int] = {}
    for record, p in zip(records, views):
        by_study.setdefault(record.study, []).append(float(p))
        labels_by_study[record.study] = record.label
    studies = list(by_study)
    predicted = [int(np.mean(by_study[s]) > 0.5) for s in studies]
    kappa = float(cohen_kappa(*confusion_counts([labels_by_study[s] for s in studies], predicted)))
    return total / max(count, 1), None if math.isnan(kappa) else kappa


# --- checkpoints -----------------------------------------------------------------------------


def _save(payload: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)  # a killed run never leaves half a checkpoint


def load_checkpoint(path: str | Path) -> dict:
    """A training checkpoint (last.pt or best.pt), loaded with weights_only=True."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt"
    if not path.is_file():
        raise TrainError(f"checkpoint {path} does not exist; pass a run folder or its best.pt / last.pt")
    payload = load_torch_file(path, "a checkpoint written by `mura train` (best.pt or last.pt)", TrainError)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise TrainError(f"{path} is not a checkpoint written by `mura train`")
    return payload


# --- the run ---------------------------------------------------------------------------------


def train(config: TrainConfig, resume: bool = False) -> dict:
    """Train (or resume) a run; returns the last epoch's log record."""
    world = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun
    config.check(world)
    out = Path(config.out)
    process = start_process(config, world)
    try:
        return _train(config, out, process, resume)
    finally:
        if process.world > 1:
            dist.destroy_process_group()


def _check_run_folder(out: Path, resume: bool) -> None:
    try:
        check_output_folder(out, "--out")
    except OutputError as exc:
        raise TrainError(str(exc)) from None
    if not resume and (out / "last.pt").exists():
        raise TrainError(f"{out} already holds a run; pass --resume to continue it, or choose another --out")


def _agree(process: Process, failure: Exception | None) -> None:
    """Stop every rank when any rank failed its checks: a rank that stopped alone would leave
    the others waiting in DistributedDataParallel's first collective."""
    if process.world > 1:
        messages: list[str | None] = [None] * process.world
        dist.all_gather_object(messages, None if failure is None else str(failure))
        failed = [m for m in messages if m is not None]
        if failed and failure is None:
            raise TrainError(failed[0])
    if failure is not None:
        raise failure


def _train(config: TrainConfig, out: Path, process: Process, resume: bool) -> dict:
    failure: Exception | None = None
    try:  # every check before the first collective; _agree then stops all ranks or none
        if process.main:
            _check_run_folder(out, resume)
        train_records = read_split(config.data, config.train_split)
        valid_records = read_split(config.data, config.valid_split)
        weights = loss_weights(train_records)

        torch.manual_seed(config.seed)  # the same initial weights on every rank and every rerun
        model = build_model(config.arch, config.pretrained or True).to(process.device)
        if process.device.type == "cuda":
            model = model.to(memory_format=torch.channels_last)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=0.1, patience=config.plateau_patience
        )
        fp16 = process.device.type == "cuda" and not torch.cuda.is_bf16_supported()
        scaler = torch.amp.GradScaler("cuda", enabled=fp16)
        start_epoch, best = 1, math.inf
        if resume:
            state = load_checkpoint(out / "last.pt")
            saved = state["config"]
            for key in ("arch", "image_size"):
                if saved[key] != getattr(config, key):
                    raise TrainError(
                        f"--resume: the run in {out} used {key}={saved[key]}, not {getattr(config, key)}"
                    )
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scheduler.load_state_dict(state["scheduler"])
            scaler.load_state_dict(state["scaler"])
            start_epoch, best = state["epoch"] + 1, state["best_val_loss"]
            if start_epoch > config.epochs:
                raise TrainError(
                    f"--resume: the run in {out} has done all {state['epoch']} epochs; raise --epochs"
                )
    except (TrainError, DataError, ModelError, ImageError) as exc:
        failure = exc
    _agree(process, failure)
    start_parameters = weights_checksum(model, parameters_only=True)
    per_process = config.batch_size // process.world  # the global batch, split (check() made it exact)

    net = model
    if process.world > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[process.device.index] if process.device.type == "cuda" else None
        )

    workers = (
        config.workers
        if config.workers is not None
        else (min(8, os.cpu_count() or 1) if process.device.type == "cuda" else 0)
    )
    train_set = MuraImages(config.data, train_records, config.image_size, True, weights)
    valid_set = MuraImages(config.data, valid_records, config.image_size, False, weights)
    valid_loader = DataLoader(
        valid_set,
        batch_size=config.batch_size * 2,
        num_workers=workers,
        pin_memory=process.device.type == "cuda",
    )

    if process.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(asdict(config), indent=2) + "\n")
    record: dict = {}
    for epoch in range(start_epoch, config.epochs + 1):
        started = time.perf_counter()
        # Each epoch's shuffle and augmentation depend only on (seed, epoch): resuming repeats them.
        torch.manual_seed(config.seed * 100_003 + epoch)
        generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
        sampler = None
        if process.world > 1:
            sampler = DistributedSampler(
                train_set, num_replicas=process.world, rank=process.rank, shuffle=True, seed=config.seed
            )
            sampler.set_epoch(epoch)
        loader = DataLoader(
            train_set,
            batch_size=per_process,
            shuffle=sampler is None,
            sampler=sampler,
            num_workers=workers,
            generator=generator,
            drop_last=len(train_set) // process.world > per_process,  # no batch of one for batch norm
            pin_memory=process.device.type == "cuda",
        )
        loss_sum, images = train_epoch(
            net, loader, optimizer, scaler, process, config.max_steps, f"epoch {epoch}/{config.epochs}"
        )
        if process.world > 1:  # the epoch's loss and image count over all ranks
            totals = torch.tensor([loss_sum, images], dtype=torch.float64)
            dist.all_reduce(totals)
            loss_sum, images = float(totals[0]), int(totals[1])
        train_loss = loss_sum / max(images, 1)
        if process.world > 1:
            # Batch-norm statistics are updated from each rank's own batches: take rank 0's, so
            # every rank holds the model that rank 0 validates and saves.
            for buffer in model.buffers():
                dist.broadcast(buffer.data, src=0)
        if process.main:
            val_loss, val_kappa = validate(model, valid_loader, valid_records, process)
        else:
            val_loss, val_kappa = 0.0, None
        if process.world > 1:  # every rank steps its scheduler on rank 0's validation loss
            shared = torch.tensor([val_loss], dtype=torch.float64)
            dist.broadcast(shared, src=0)
            val_loss = float(shared)
        lr = optimizer.param_groups[0]["lr"]
        scheduler.step(val_loss)
        improved = val_loss < best
        best = min(best, val_loss)
        record = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_images": images,
            "val_loss": val_loss,
            "val_kappa": val_kappa,
            "lr": lr,
            "best": improved,
            "seconds": round(time.perf_counter() - started, 2),
        }
        if process.main:
            meta = {"format": CHECKPOINT_FORMAT, "version": 1, "config": asdict(config), "epoch": epoch}
            if improved:
                _save(
                    {
                        **meta,
                        "kind": "best",
                        "model": model.state_dict(),
                        "val_loss": val_loss,
                        "val_kappa": val_kappa,
                    },
                    out / "best.pt",
                )
            _save(
                {
                    **meta,
                    "kind": "last",
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "best_val_loss": best,
                },
                out / "last.pt",
            )
            with (out / "log.jsonl").open("a") as log:
                log.write(json.dumps(record) + "\n")
            kappa = "n/a" if val_kappa is None else f"{val_kappa:.3f}"
            print(
                f"epoch {epoch}/{config.epochs}: train loss {train_loss:.4f}, val loss {val_loss:.4f}, "
                f"val kappa {kappa}, lr {lr:g}{' (best)' if improved else ''}",
                file=sys.stderr,
                flush=True,
            )
    if process.world > 1:
        sums = [None] * process.world
        dist.all_gather_object(sums, weights_checksum(model))
        agree = len(set(sums)) == 1
        if process.main:
            with (out / "log.jsonl").open("a") as log:
                summary = {
                    "ranks": process.world,
                    "weights_sha256": sums,
                    "ranks_agree": agree,
                    "start_parameters_sha256": start_parameters,
                    "parameters_sha256": weights_checksum(model, parameters_only=True),
                }
                log.write(json.dumps(summary) + "\n")
        if not agree:
            raise TrainError(f"the {process.world} ranks ended with different weights: {sums}")
    return record


# --- the command -----------------------------------------------------------------------------

import click  # noqa: E402

from reference_model.errors import UserError  # noqa: E402


def _options(function):
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    decorators = [
        click.argument("data", type=click.Path(path_type=Path)),
        click.option("--out", required=True, type=click.Path(path_type=Path), help="The run folder."),
        click.option(
            "--arch",
            type=click.Choice(["densenet121", "densenet169", "densenet201"]),
            default=defaults["arch"],
            show_default=True,
        ),
        click.option("--image-size", type=int, default=defaults["image_size"], show_default=True),
        click.option("--epochs", type=int, default=defaults["epochs"], show_default=True),
        click.option(
            "--batch-size",
            type=int,
            default=defaults["batch_size"],
            show_default=True,
            help="The global batch (the paper's 8); on torchrun each of N processes takes batch/N.",
        ),
        click.option("--lr", type=float, default=defaults["lr"], show_default=True),
        click.option(
            "--plateau-patience",
            type=int,
            default=0,
            show_default=True,
            help="Epochs without a better validation loss before the lr is divided by 10.",
        ),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--workers", type=int, default=None, help="Loader processes (default: 0 on CPU)."),
        click.option("--max-steps", type=int, default=None, help="At most this many batches per epoch."),
        click.option("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if present)."),
        click.option(
            "--pretrained",
            type=click.Path(path_type=Path),
            default=None,
            help="ImageNet weights file (default: torchvision's cache, if present).",
        ),
        click.option("--resume", is_flag=True, help="Continue the run in --out from its last.pt."),
    ]
    for decorator in reversed(decorators):
        function = decorator(function)
    return function


@click.command("train")
@_options
def command(data: Path, out: Path, resume: bool, **options) -> None:
    """Train the reference model on the MURA tree under DATA (the folder holding MURA-v1.1/)."""
    config = TrainConfig(
        data=str(data),
        out=str(out),
        **{k: (str(v) if isinstance(v, Path) else v) for k, v in options.items()},
    )
    try:
        record = train(config, resume=resume)
    except (TrainError, DataError, ModelError, ImageError) as exc:
        raise UserError(str(exc)) from None
    if record:
        click.echo(f"done: {out} (best checkpoint {out / 'best.pt'}; per-epoch log {out / 'log.jsonl'})")


if __name__ == "__main__":  # torchrun --nproc_per_node N -m reference_model.train ...
    command()
