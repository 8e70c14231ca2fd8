"""Training, `mura train`: the MURA paper's recipe (SPEC §2), on one device or on torchrun.

Per view: every image is a sample with its study's label, weighted by its study type's
w_T1 / w_T0 (data.loss_weights). Adam (0.9, 0.999), lr 1e-4, batch 8; after each epoch the
validation loss decides: the learning rate is divided by 10 when it has not improved
(`--plateau-patience` epochs, 0 by default: "each time the validation loss plateaus after an
epoch"), and the checkpoint with the lowest validation loss is kept (best.pt). Validation also
reports the study-level kappa, by predict's rule (reference_model.aggregation): the mean of a
study's view probabilities, abnormal iff > 0.5.

A run folder holds: config.json, log.jsonl (one line per epoch), last.pt (everything needed to
resume, written every epoch) and best.pt. Each epoch's shuffling and augmentation are seeded by
(seed, epoch), so a resumed run repeats exactly what an uninterrupted one does.

Distributed: `torchrun --nproc_per_node N -m reference_model.train DATA --out RUN ...` (`mura
train`'s command line: reference_model/train.py) runs DistributedDataParallel (NCCL on GPUs,
gloo on CPUs); rank 0 validates, logs and writes checkpoints; at the end the ranks compare a
checksum of their weights. `--batch-size` is the global batch, as in the paper (8 images per
optimiser step however many processes): each of N processes takes batch/N, and a batch that N
does not divide is refused. The ranks agree on every check before training (a run folder that
already holds a run, unreadable data, a bad option): all of them stop with the same message,
none is left waiting for the others.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import distributed as dist
from torch.utils.data import DataLoader, DistributedSampler

from reference_model.aggregation import StudyMean, study_label
from reference_model.config import TrainConfig, TrainError
from reference_model.data import DataError, ImageRecord, MuraImages, loss_weights, read_split
from reference_model.model import ModelError, autocast, build_model, load_torch_file, select_device
from reference_model.outputs import OutputError, check_output_folder
from reference_model.preprocess import ImageError
from scorer.metrics import cohen_kappa, confusion_counts

CHECKPOINT_FORMAT = "mura-checkpoint"
# What ends a run with a one-line message (`mura train`: exit 3) rather than a traceback.
USER_ERRORS = (TrainError, DataError, ModelError, ImageError)


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
    return total / max(count, 1), study_kappa(records, np.concatenate(probabilities))


def study_kappa(records: Sequence[ImageRecord], views: np.ndarray) -> float | None:
    """Cohen's kappa of the studies' answers (reference_model.aggregation: predict's rule) from
    the views' probabilities against the studies' labels; None where it is undefined."""
    by_study: dict[str, StudyMean] = {}
    labels: dict[str, int] = {}
    for record, p in zip(records, views):
        by_study.setdefault(record.study, StudyMean()).add(float(p))
        labels[record.study] = record.label
    predicted = [study_label(mean.probability) for mean in by_study.values()]
    kappa = float(cohen_kappa(*confusion_counts([labels[s] for s in by_study], predicted)))
    return None if math.isnan(kappa) else kappa


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


@dataclass
class State:
    """What changes as a run trains, and what last.pt keeps of it to resume."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.ReduceLROnPlateau
    scaler: torch.amp.GradScaler
    start_epoch: int = 1
    best: float = math.inf  # the lowest validation loss so far


@dataclass
class Data:
    records: list[ImageRecord]  # the training split's images
    valid_records: list[ImageRecord]
    weights: dict[str, tuple[float, float]]  # the paper's loss weights per study type


def _train(config: TrainConfig, out: Path, process: Process, resume: bool) -> dict:
    data, state = _prepare(config, out, process, resume)
    start_parameters = weights_checksum(state.model, parameters_only=True)
    net = _distributed(state.model, process)
    workers = _workers(config, process)
    train_set = MuraImages(config.data, data.records, config.image_size, True, data.weights)
    valid_set = MuraImages(config.data, data.valid_records, config.image_size, False, data.weights)
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
    for epoch in range(state.start_epoch, config.epochs + 1):
        started = time.perf_counter()
        loader = _epoch_loader(config, train_set, workers, process, epoch)
        train_loss, images = _train_one_epoch(config, state, net, loader, process, epoch)
        val_loss, val_kappa = _validate_on_rank_0(state.model, valid_loader, data.valid_records, process)
        lr = state.optimizer.param_groups[0]["lr"]
        state.scheduler.step(val_loss)
        improved = val_loss < state.best
        state.best = min(state.best, val_loss)
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
            _save_epoch(out, config, state, record)
    if process.world > 1:
        _check_ranks_agree(out, state.model, process, start_parameters)
    return record


def _prepare(config: TrainConfig, out: Path, process: Process, resume: bool) -> tuple[Data, State]:
    """The data, the model and its optimiser (from last.pt with `resume`): every check before
    the first collective; _agree then stops all ranks or none."""
    failure: Exception | None = None
    try:
        if process.main:
            _check_run_folder(out, resume)
        records = read_split(config.data, config.train_split)
        data = Data(records, read_split(config.data, config.valid_split), loss_weights(records))
        state = _new_state(config, process)
        if resume:
            _resume(state, config, out)
    except USER_ERRORS as exc:
        failure = exc
    _agree(process, failure)
    return data, state


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


def _new_state(config: TrainConfig, process: Process) -> State:
    """The network (ImageNet weights where there are some), Adam (0.9, 0.999), the plateau
    schedule and, for fp16 on GPUs without bf16, a gradient scaler."""
    torch.manual_seed(config.seed)  # the same initial weights on every rank and every rerun
    model = build_model(config.arch, config.pretrained or True).to(process.device)
    if process.device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, betas=(0.9, 0.999))
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=0.1, patience=config.plateau_patience
    )
    fp16 = process.device.type == "cuda" and not torch.cuda.is_bf16_supported()
    return State(model, optimizer, scheduler, torch.amp.GradScaler("cuda", enabled=fp16))


def _resume(state: State, config: TrainConfig, out: Path) -> None:
    """Load last.pt of `out` into `state`: a run of the same architecture and input size, with
    epochs left to do."""
    saved = load_checkpoint(out / "last.pt")
    for key in ("arch", "image_size"):
        if saved["config"][key] != getattr(config, key):
            raise TrainError(
                f"--resume: the run in {out} used {key}={saved['config'][key]}, not {getattr(config, key)}"
            )
    state.model.load_state_dict(saved["model"])
    state.optimizer.load_state_dict(saved["optimizer"])
    state.scheduler.load_state_dict(saved["scheduler"])
    state.scaler.load_state_dict(saved["scaler"])
    state.start_epoch, state.best = saved["epoch"] + 1, saved["best_val_loss"]
    if state.start_epoch > config.epochs:
        raise TrainError(f"--resume: the run in {out} has done all {saved['epoch']} epochs; raise --epochs")


def _distributed(model: torch.nn.Module, process: Process) -> torch.nn.Module:
    """The module the optimiser steps through: DistributedDataParallel on torchrun."""
    if process.world == 1:
        return model
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[process.device.index] if process.device.type == "cuda" else None
    )


def _workers(config: TrainConfig, process: Process) -> int:
    """Loader processes: --workers, else 8 at most on a GPU and none on a CPU (there they would
    take cores from the arithmetic)."""
    if config.workers is not None:
        return config.workers
    return min(8, os.cpu_count() or 1) if process.device.type == "cuda" else 0


def _epoch_loader(
    config: TrainConfig, train_set: MuraImages, workers: int, process: Process, epoch: int
) -> DataLoader:
    """This process's share of the epoch, in an order (and with augmentations) that depend only
    on (seed, epoch): a resumed run repeats what an uninterrupted one does."""
    per_process = config.batch_size // process.world  # the global batch, split (check() made it exact)
    torch.manual_seed(config.seed * 100_003 + epoch)
    generator = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    sampler = None
    if process.world > 1:
        sampler = DistributedSampler(
            train_set, num_replicas=process.world, rank=process.rank, shuffle=True, seed=config.seed
        )
        sampler.set_epoch(epoch)
    return DataLoader(
        train_set,
        batch_size=per_process,
        shuffle=sampler is None,
        sampler=sampler,
        num_workers=workers,
        generator=generator,
        drop_last=len(train_set) // process.world > per_process,  # no batch of one for batch norm
        pin_memory=process.device.type == "cuda",
    )


def _train_one_epoch(
    config: TrainConfig, state: State, net: torch.nn.Module, loader: DataLoader, process: Process, epoch: int
) -> tuple[float, int]:
    """(training loss per image, images) of the epoch over all ranks; afterwards every rank
    holds rank 0's batch-norm statistics."""
    desc = f"epoch {epoch}/{config.epochs}"
    loss_sum, images = train_epoch(
        net, loader, state.optimizer, state.scaler, process, config.max_steps, desc
    )
    if process.world > 1:
        totals = torch.tensor([loss_sum, images], dtype=torch.float64)
        dist.all_reduce(totals)
        loss_sum, images = float(totals[0]), int(totals[1])
        # Batch-norm statistics are updated from each rank's own batches: take rank 0's, so
        # every rank holds the model that rank 0 validates and saves.
        for buffer in state.model.buffers():
            dist.broadcast(buffer.data, src=0)
    return loss_sum / max(images, 1), images


def _validate_on_rank_0(
    model: torch.nn.Module, loader: DataLoader, records: list[ImageRecord], process: Process
) -> tuple[float, float | None]:
    """Rank 0 validates; every rank gets its loss, to step its scheduler on the same number."""
    val_loss, val_kappa = validate(model, loader, records, process) if process.main else (0.0, None)
    if process.world > 1:
        shared = torch.tensor([val_loss], dtype=torch.float64)
        dist.broadcast(shared, src=0)
        val_loss = float(shared)
    return val_loss, val_kappa


def _save_epoch(out: Path, config: TrainConfig, state: State, record: dict) -> None:
    """best.pt when the validation loss improved, last.pt, the log line and the line on stderr."""
    meta = {"format": CHECKPOINT_FORMAT, "version": 1, "config": asdict(config), "epoch": record["epoch"]}
    model = state.model.state_dict()
    if record["best"]:
        best = {
            "kind": "best",
            "model": model,
            "val_loss": record["val_loss"],
            "val_kappa": record["val_kappa"],
        }
        _save({**meta, **best}, out / "best.pt")
    last = {
        "kind": "last",
        "model": model,
        "optimizer": state.optimizer.state_dict(),
        "scheduler": state.scheduler.state_dict(),
        "scaler": state.scaler.state_dict(),
        "best_val_loss": state.best,
    }
    _save({**meta, **last}, out / "last.pt")
    with (out / "log.jsonl").open("a") as log:
        log.write(json.dumps(record) + "\n")
    kappa = "n/a" if record["val_kappa"] is None else f"{record['val_kappa']:.3f}"
    print(
        f"epoch {record['epoch']}/{config.epochs}: train loss {record['train_loss']:.4f}, "
        f"val loss {record['val_loss']:.4f}, val kappa {kappa}, lr {record['lr']:g}"
        f"{' (best)' if record['best'] else ''}",
        file=sys.stderr,
        flush=True,
    )


def _check_ranks_agree(out: Path, model: torch.nn.Module, process: Process, start_parameters: str) -> None:
    """Every rank must end with the same weights; rank 0 logs the checksums."""
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
