"""Which sandbox runs a submission here: the one place `mura evaluate` and the demo ask.

A new runner is its own module (the Runner protocol in sandbox.py) plus its name here.
"""

from __future__ import annotations

from collections.abc import Callable

from scorer.errors import HostError
from scorer.harness import bwrap_runner, docker_runner
from scorer.harness.sandbox import Runner

RUNNERS = ("auto", "docker", "bwrap")  # what `mura evaluate --runner` takes: choose_runner's names


def choose_runner(
    name: str, image: str, *, needs_image: bool = False, say: Callable[[str], None] | None = None
) -> Runner:
    """The sandbox `name` names ("docker" with `image`, "bwrap"), or for "auto": docker when an
    engine answers (with `needs_image`: and has `image`, else bubblewrap, which `say` is told),
    else bubblewrap where it works, else a HostError that says what to install."""
    if name == "docker":
        return docker_runner.DockerRunner(image)
    if name == "bwrap":
        return bwrap_runner.BwrapRunner()
    no_docker = docker_runner.unavailable_reason()
    if no_docker is None and needs_image and not docker_runner.has_image(image):
        no_docker = f"the Docker engine has no {image} (`make image`)"
        if say is not None:
            say(f"a Docker engine answers but has no {image} (`make image`): using bubblewrap")
    if no_docker is None:
        return docker_runner.DockerRunner(image)
    no_bwrap = bwrap_runner.unavailable_reason()
    if no_bwrap is None:
        return bwrap_runner.BwrapRunner()
    raise HostError(
        f"no sandbox to run the submission in: {no_docker}, and {no_bwrap}; start a Docker engine "
        f"(and `make image`), or {bwrap_runner.install_hint()}"
    )
