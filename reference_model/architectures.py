"""The networks the kit trains and ships: one description each, and the only place that knows
them. The model builds from it (the constructor, the ImageNet weights, the head it replaces),
CAM reads the head and the feature maps through it, training offers its names (`--arch`) and
takes its stride as the smallest input size, and a bundle's manifest is checked against it.
A new architecture is one entry in ARCHITECTURES (tests/test_model.py checks every entry
against torchvision).

Torch-free, so that the command line and a bundle's manifest can be read without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


class ModelError(Exception):
    """A model or weights file that cannot be used; the message says what to do."""


@dataclass(frozen=True)
class Architecture:
    name: str  # torchvision.models' constructor, and the name in --arch and a bundle's manifest
    weights_file: str  # torchvision's ImageNet checkpoint file (the name its downloader uses)
    head: str = "classifier"  # the attribute holding the final nn.Linear, replaced by one output
    # The module whose output, after a ReLU, the head sees averaged over space: CAM's feature maps.
    features: str = "features"
    stride: int = 32  # how far `features` downsamples: the smallest input that leaves a 1x1 map


ARCHITECTURES = {
    spec.name: spec
    for spec in (
        Architecture("densenet121", "densenet121-a639ec97.pth"),
        Architecture("densenet169", "densenet169-b2777c0a.pth"),
        Architecture("densenet201", "densenet201-c1103571.pth"),
    )
}
DEFAULT_ARCHITECTURE = "densenet169"  # the MURA paper's (SPEC §2)


def architecture(name: str) -> Architecture:
    """The description of `name`; a ModelError naming the known ones when there is none."""
    if name not in ARCHITECTURES:
        raise ModelError(f"unknown architecture {name!r}; expected one of {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[name]
