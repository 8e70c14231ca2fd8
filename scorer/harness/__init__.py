"""The organisers' evaluation harness: run a stranger's submission on the hidden test set.

anonymise  the test input with label-free paths, and the private map back
sandbox    the limits, what a run ends in, the capped log, the runner interface, the
           kill-until-gone loop
runners    which runner to use here (choose_runner: `mura evaluate` and the demo)
docker_runner / bwrap_runner   the two sandboxes (a Docker engine, or bubblewrap without one)
cgroups / seccomp   bubblewrap's limits (a delegated cgroup v2 group, or cgroup v1 groups) and
                    system-call filter
evaluate   the fixed pipeline: anonymise -> run -> log -> map back -> score -> record
progress   what `mura evaluate` says on stderr as it works (stages, the live line)
cli        `mura evaluate`

Torch-free like all of scorer/: the submission runs as a separate process inside the sandbox.
"""
