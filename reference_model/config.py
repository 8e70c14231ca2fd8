"""What a training run is asked to do, checked before anything is read.

Torch-free, so that the command line (reference_model.cli) takes its defaults from here without
importing torch; the run itself is reference_model.training.
"""

from __future__ import annotations

from dataclasses import dataclass

from reference_model.architectures import DEFAULT_ARCHITECTURE, architecture


class TrainError(Exception):
    """A user error; the message says what was expected and what to do."""


@dataclass
class TrainConfig:
    data: str
    out: str
    arch: str = DEFAULT_ARCHITECTURE
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
        stride = architecture(self.arch).stride
        for name in ("image_size", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise TrainError(
                    f"--{name.replace('_', '-')} must be at least 1, found {getattr(self, name)}"
                )
        if self.image_size < stride:
            raise TrainError(
                f"--image-size must be at least {stride} ({self.arch} downsamples {stride}x), "
                f"found {self.image_size}"
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
            from reference_model.model import select_device  # torch: the run needs it anyway

            select_device(self.device)  # a typo or a missing GPU: ModelError now, not a traceback later
