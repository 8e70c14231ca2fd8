"""The reference network: a torchvision architecture (reference_model.architectures; the
paper's DenseNet-169 by default) with a single-output head (SPEC §2).

ImageNet weights are used when they are on this machine -- in torchvision's cache
($TORCH_HOME/hub/checkpoints, by default ~/.cache/torch/hub/checkpoints) or in a file passed
in. Nothing here ever reaches for the network: without weights the network starts from random
initialisation, with a warning that says where to put them.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from reference_model.architectures import DEFAULT_ARCHITECTURE, ModelError, architecture

# Old DenseNet checkpoints name layers `norm.1`; current torchvision names them `norm1`.
_LEGACY_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def torch_home() -> Path:
    return Path(
        os.environ.get("TORCH_HOME", Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "torch")
    )


def imagenet_weights_path(arch: str) -> Path:
    """Where torchvision's cache keeps the ImageNet checkpoint of `arch`."""
    return torch_home() / "hub" / "checkpoints" / architecture(arch).weights_file


def cached_imagenet_weights(arch: str) -> Path | None:
    """torchvision's cached ImageNet checkpoint for `arch`, if this machine has it."""
    path = imagenet_weights_path(arch)
    return path if path.is_file() else None


def build_model(arch: str = DEFAULT_ARCHITECTURE, pretrained: str | Path | bool | None = True) -> nn.Module:
    """The architecture `arch` with its head replaced by a single output (a logit; the
    probability of abnormality is its sigmoid).

    pretrained: True -- ImageNet weights from torchvision's cache when present, else random
    initialisation with a warning; a path -- ImageNet weights from that file (an error if it
    cannot be used); False/None -- random initialisation, silently (e.g. before loading a
    bundle's own weights).
    """
    spec = architecture(arch)
    model = getattr(torchvision.models, spec.name)(weights=None)
    if pretrained:
        path = Path(pretrained) if not isinstance(pretrained, bool) else cached_imagenet_weights(arch)
        if path is None:
            where = imagenet_weights_path(arch)
            print(
                f"warning: no ImageNet weights for {arch} on this machine (looked for {where}); starting "
                "from random initialisation, which needs far more training; copy the file there or "
                "pass --pretrained FILE",
                file=sys.stderr,
            )
        else:
            load_imagenet_weights(model, path)
    setattr(model, spec.head, nn.Linear(getattr(model, spec.head).in_features, 1))
    return model


def head(model: nn.Module, arch: str) -> nn.Linear:
    """The single-output layer build_model put in place of `arch`'s classifier."""
    return getattr(model, architecture(arch).head)


def feature_maps(model: nn.Module, arch: str, images: torch.Tensor) -> torch.Tensor:
    """(N, K, h, w): the maps whose spatial mean the head weighs (the logit is
    head(mean over h, w) for the architectures the kit knows), for class activation maps."""
    return F.relu(getattr(model, architecture(arch).features)(images))


class EnsembleNet(nn.Module):
    """The members side by side: images (N, 3, H, W) -> probabilities (N, members). One module
    (and one ONNX graph) runs every member on the same batch of decoded images."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(torch.cat([member(images) for member in self.members], dim=1))


def load_torch_file(path: Path, expected: str, error: type[Exception] = ModelError):
    """torch.load with weights_only=True (never unpickle code from a file), failing with the
    kit's own one-line message: torch's advises loading with weights_only=False, which is
    exactly what must not be done with a file from elsewhere."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise error(f"{path} does not exist; expected {expected}") from None
    except IsADirectoryError:
        raise error(f"{path} is a folder; expected {expected}") from None
    except PermissionError as exc:
        raise error(f"{path} cannot be read ({exc.strerror}); check its permissions") from None
    except Exception:  # corrupt, truncated, not torch's format, or objects other than tensors
        raise error(
            f"{path} is not a PyTorch state-dict file (or holds objects other than tensors); "
            f"expected {expected}"
        ) from None


def is_state_dict(state: object) -> bool:
    """A dict of tensors, as torch.save(model.state_dict()) writes."""
    return isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())


def state_dict_mismatch(
    model: nn.Module, state: dict, optional: Callable[[str], bool] = lambda key: False
) -> tuple[list[str], list[str], list[str]]:
    """The (missing, unexpected, wrong-shape) keys of `state` against `model`'s; a missing key
    that `optional` accepts does not count."""
    expected = model.state_dict()
    missing = sorted(k for k in set(expected) - set(state) if not optional(k))
    unexpected = sorted(set(state) - set(expected))
    wrong = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    return missing, unexpected, wrong


def load_imagenet_weights(model: nn.Module, path: Path) -> None:
    state = load_torch_file(path, "ImageNet weights saved with torch.save (e.g. torchvision's densenet*.pth)")
    if not is_state_dict(state):
        raise ModelError(f"{path} does not hold a state dict of tensors; expected ImageNet weights")
    state = {(_LEGACY_KEY.sub(r"\1\2", k)): v for k, v in state.items()}
    # torch fills in a missing num_batches_tracked (torchvision's published files have none).
    missing, unexpected, wrong = state_dict_mismatch(
        model, state, optional=lambda key: key.endswith("num_batches_tracked")
    )
    if missing or unexpected or wrong:
        example = (missing or unexpected or wrong)[0]
        raise ModelError(
            f"{path} does not hold ImageNet weights for this architecture: {len(missing)} weights "
            f"missing, {len(unexpected)} unexpected, {len(wrong)} of the wrong shape (e.g. {example}); "
            "pass the checkpoint of the architecture you train (--arch)"
        )
    model.load_state_dict(state)


def select_device(requested: str | None = None) -> torch.device:
    """The requested device (`cpu`, `cuda` or `cuda:N`), else CUDA when there is one, else the
    CPU. A typo or a GPU this machine does not have is a ModelError, not torch's RuntimeError."""
    if not requested:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except (RuntimeError, ValueError):
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise ModelError(f"--device {requested!r} is not a device; expected cpu, cuda or cuda:N")
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ModelError(
                f"--device {requested} asked for CUDA, but no GPU is available here; use --device cpu"
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ModelError(
                f"--device {requested}: this machine has {torch.cuda.device_count()} GPUs "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})"
            )
    return device


def autocast(device: torch.device):
    """Mixed precision on CUDA (bf16 where supported, else fp16); plain fp32 elsewhere."""
    if device.type != "cuda":
        return torch.autocast("cpu", enabled=False)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.autocast("cuda", dtype=dtype)
