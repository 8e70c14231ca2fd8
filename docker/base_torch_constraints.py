"""Print the pip constraints an image installs the kit with: the project's pins, except that a
base image's own torch and torchvision stay as they are.

A base that brings torch (a CUDA PyTorch image) built it for its CUDA; the project's pins are for
the local venv, and following them would put a second multi-GB torch, with CUDA libraries the base
did not choose, over the base's. So when the base has torch, torch and torchvision are pinned to
the versions installed (a torchvision the base lacks is left to pip, which picks the one built for
that torch); without torch in the base, the project's pins apply. A base torch that does not meet
the kit's requirement makes pip fail on the conflict: the base's torch is never replaced.

    python3 base_torch_constraints.py constraints.txt > /tmp/constraints.txt
"""

from __future__ import annotations

import contextlib
import re
import sys
from importlib import metadata
from pathlib import Path

TORCH_FAMILY = ("torch", "torchvision")


def normalised_name(requirement: str) -> str:
    """The distribution name a constraints line starts with, as pip compares names (PEP 503)."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower() if match else ""


def installed_versions(names: tuple[str, ...]) -> dict[str, str]:
    """The versions of `names` installed for this interpreter (the one pip installs into)."""
    found = {}
    for name in names:
        with contextlib.suppress(metadata.PackageNotFoundError):
            found[name] = metadata.version(name)
    return found


def constraints(project_pins: list[str], base: dict[str, str]) -> list[str]:
    """The project's pins, with the torch family's replaced by the base's when it has torch."""
    if "torch" not in base:
        return project_pins
    kept = [line for line in project_pins if normalised_name(line) not in TORCH_FAMILY]
    return kept + [f"{name}=={version}" for name, version in base.items()]


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python3 base_torch_constraints.py CONSTRAINTS.txt > OUT.txt", file=sys.stderr)
        return 2
    project_pins = Path(argv[0]).read_text().splitlines()
    base = installed_versions(TORCH_FAMILY)
    if "torch" in base:
        versions = ", ".join(f"{name} {version}" for name, version in base.items())
        print(
            f"keeping the base image's {versions}, not the project's pins; if pip finds them too old"
            " for the kit, build on a base with a newer torch, or with EXTRAS= (the kit without the model)",
            file=sys.stderr,
        )
    print("\n".join(constraints(project_pins, base)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
