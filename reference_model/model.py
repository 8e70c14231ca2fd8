"""The reference network: torchvision's DenseNet with a single-output head (SPEC §2).

ImageNet weights are used when they are on this machine -- in torchvision's cache
($TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints) or in a file passed
in. Nothing here ever reaches for the network: without weights the network starts from random
initialisation, with a warning that says where to put them.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import torch
import torchvision
from torch import nn

from reference_model.architectures import ARCHITECTURES

# Old DenseNet checkpoints name layers `norm.1`; current torchvision names them `norm1`.
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


class ModelError(Exception):
    """A model or weights file that cannot be used; the message says what to do."""


def check_architecture(arch: str) -> None:
    if arch not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {arch!r}; expected one of {', '.join(ARCHITECTURES)}")


def torch_home() -> Path:
    return Path(
        os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch")
    )


def cached_imagenet_weights(arch: str) -> Path | None:
    """torchvision's cached ImageNet checkpoint for `arch`, if this machine has it."""
    path = torch_home() / "hub" / "checkpoints" / ARCHITECTURES[arch]
    return path if path.is_file() else None


def build_model(arch: str = "densenet169", pretrained: str | Path | bool | None = True) -> nn.Module:
    """DenseNet-121/169/201 with its classifier replaced by a single output (a logit; the
    probability of abnormality is its sigmoid).

    pretrained: True -- ImageNet weights from torchvision's cache when present, else random
    initialisation with a warning; a path -- ImageNet weights from that file (an error if it
    cannot be used); False/None -- random initialisation, silently (e.g. before loading a
    bundle's own weights).
    """
    check_architecture(arch)
    model = getattr(torchvision.models, arch)(weights=None)
    if pretrained:
        path = Path(pretrained) if not isinstance(pretrained, bool) else cached_imagenet_weights(arch)
        if path is None:
            where = torch_home() / "hub" / "checkpoints" / ARCHITECTURES[arch]
            print(
                f"warning: no ImageNet weights for {arch} on this machine (looked for {where}); starting "
                "from random initialisation, which needs far more training; copy the file there or "
                "pass --pretrained FILE",
                file=sys.stderr,
            )
        else:
            load_imagenet_weights(model, path)
    model.classifier = nn.Linear(model.classifier.in_features, 1)
    return model


class EnsembleNet(nn.Module):
    """The members side by side: images (N, 3, H, W) -> probabilities (N, members). One module
    (and one ONNX graph) runs every member on the same batch of decoded images."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.cat([member(images) for member in self.members], dim=1))


def load_imagenet_weights(model: nn.Module, path: Path) -> None:
    if not path.is_file():
        raise ModelError(f"ImageNet weights file {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: say which, whatever torch raised
        raise ModelError(f"cannot read ImageNet weights from {path}: {exc}") from None
    state = {(_LEGACY_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelError(
            f"{path} does not hold ImageNet weights for this architecture: {str(exc)[:300]}"
        ) from None


def select_device(requested: str | None = None) -> torch.device:
    """The requested device, else CUDA when there is one, else the CPU."""
    if requested:
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ModelError(f"--device {requested} asked for CUDA, but no GPU is available here")
        return device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16); plain fp32 elsewhere."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
