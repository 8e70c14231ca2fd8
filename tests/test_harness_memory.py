"""The memory limit: where it holds for the whole run (docker, bubblewrap's cgroups), the run is
stopped as soon as it kills a process; where it holds only per process (bubblewrap without
cgroups), that is said before the run, recorded, and refused on request. cgroup v2 delegation
is found and used exactly as the kernel lays it out (checked on a tree laid out like one: this
host's cgroup v2 has no memory controller)."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pytest
from harness_helpers import (
    NO_CGROUPS,
    copy_submission,
    host_processes_with,
    make_hidden_test,
    runner_or_skip,
)

from scorer.errors import HostError
from scorer.harness import cgroups
from scorer.harness.evaluate import Submission, evaluate
from scorer.harness.progress import Progress
from scorer.harness.sandbox import Limits, MiB, wait_for_end
from scorer.settings import Settings

SETTINGS = Settings(resamples=100)
# Four workers of 96 MiB each (tests/hostile/memory_workers) under a 256 MiB limit.
LIMITS = Limits(timeout=60, memory=256 * MiB, cpus=1, pids=64, log_cap=64 * 1024)


@pytest.fixture(scope="module")
def hidden(tmp_path_factory):
    return make_hidden_test(tmp_path_factory.mktemp("hidden"), n=7)


@pytest.mark.required_in_ci
@pytest.mark.parametrize(
    "runner_name", ["bwrap", pytest.param("docker", marks=pytest.mark.unprivileged)]
)  # bubblewrap as a non-root organiser has no run-wide cap here: see the test below
def test_when_the_memory_limit_kills_a_process_the_whole_run_stops_at_once(runner_name, hidden, tmp_path):
    runner = runner_or_skip(runner_name)
    runner.check(LIMITS)
    assert runner.memory_cap().run_wide, runner.memory_cap()
    test_dir, gold, _ = hidden
    token = f"mura-test-{uuid.uuid4().hex}"
    submission = copy_submission("memory_workers", tmp_path, {"token.txt": token})
    run = tmp_path / "run"
    verdict = evaluate(Submission(submission, "mallory"), test_dir, gold, run, runner, LIMITS, SETTINGS)

    assert verdict.reason.startswith("killed: exceeded the memory limit of 256 MiB; "), verdict.reason
    # Stopped when the first worker was killed, not left to wait for it until the timeout.
    assert verdict.outcome.out_of_memory and not verdict.outcome.timed_out
    assert verdict.outcome.leftovers == [] and host_processes_with(token) == []
    outcome = json.loads((run / "outcome.json").read_text())
    assert outcome["memory_cap"]["run_wide"] is True
    assert outcome["run"]["out_of_memory"] is True and outcome["run"]["timed_out"] is False


@pytest.mark.required_in_ci
@pytest.mark.unprivileged
def test_a_per_process_cap_is_said_before_the_run_recorded_and_refused_on_request(hidden, tmp_path):
    runner = runner_or_skip(NO_CGROUPS)
    test_dir, gold, _ = hidden
    token = f"mura-test-{uuid.uuid4().hex}"
    submission = copy_submission("memory_workers", tmp_path, {"token.txt": token})
    limits = dataclasses.replace(LIMITS, timeout=3)
    refused = r"^--require-memory-cap: the bwrap sandbox has no run-wide memory cap here \(per process only "
    with pytest.raises(HostError, match=refused + r"\(prlimit --as\): "):
        evaluate(
            Submission(submission, "m"),
            test_dir,
            gold,
            tmp_path / "refused",
            runner,
            limits,
            SETTINGS,
            require_memory_cap=True,
        )
    assert not (tmp_path / "refused").exists()  # refused before anything was made or run

    said = io.StringIO()
    run = tmp_path / "run"
    verdict = evaluate(
        Submission(submission, "m"), test_dir, gold, run, runner, limits, SETTINGS, progress=Progress(said)
    )
    lines = said.getvalue().splitlines()
    assert lines[0].startswith("mura evaluate: WARNING: no run-wide memory cap: per process only"), lines
    assert lines[1].startswith("mura evaluate: staged "), lines  # said before anything was staged or run
    assert "256 MiB of memory per process" in lines[2], lines
    # What a per-process cap lets through: all four workers lived (384 MiB together).
    assert verdict.outcome.log.count(b"holds 96 MiB") == 4, verdict.outcome.log
    assert verdict.outcome.timed_out and host_processes_with(token) == []
    cap = json.loads((run / "outcome.json").read_text())["memory_cap"]
    assert cap["run_wide"] is False and "prlimit --as" in cap["how"]


def test_waiting_stops_the_run_once_the_memory_limit_killed_a_process(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    killed = threading.Event()
    threading.Timer(0.3, killed.set).start()
    try:
        reason = wait_for_end(
            proc, Limits(timeout=60), threading.Event(), proc.kill, tmp_path, out_of_memory=killed.is_set
        )
    finally:
        proc.kill()
        proc.wait()
    assert reason == "memory" and proc.returncode == -signal.SIGKILL


# --- cgroup v2, on a tree laid out like the kernel's ----------------------------------------------

USER_SERVICE = "user.slice/user-1000.slice/user@1000.service"
OWN = f"{USER_SERVICE}/app.slice/mura.scope"


def fake_cgroup2(
    tmp_path: Path, own: str = OWN, controllers: str = "cpuset cpu io memory pids", mount_root: str = "/"
) -> tuple[Path, Path, Path]:
    """A cgroup2 mount at tmp_path/fs holding `own` (with this process in it) and the files the
    kernel provides; returns (the mount, /proc/self/cgroup, /proc/self/mountinfo) as files."""
    mount = tmp_path / "fs"
    inside = Path(own).relative_to(mount_root.lstrip("/")) if mount_root != "/" else Path(own)
    folders = [mount, *(mount / Path(*inside.parts[: i + 1]) for i in range(len(inside.parts)))]
    for depth, folder in enumerate(folders):
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cgroup.controllers").write_text(f"{controllers}\n")
        (folder / "cgroup.subtree_control").write_text("" if folder == folders[-1] else "memory pids\n")
        (folder / "cgroup.procs").write_text(f"{os.getpid()}\n" if folder == folders[-1] else "")
        if depth > 0 or mount_root != "/":  # only the host's root group has no cgroup.type
            (folder / "cgroup.type").write_text("domain\n")
    proc_cgroup = tmp_path / "cgroup"
    proc_cgroup.write_text(f"0::/{own}\n")
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "25 30 0:23 / /proc rw,nosuid - proc proc rw\n"
        f"41 23 0:38 {mount_root} {mount} rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
    )
    return mount, proc_cgroup, mountinfo


def writable_only_under(monkeypatch, folder: Path) -> None:
    """What a user to whom systemd delegated `folder` may write (as root, everything is)."""
    monkeypatch.setattr(cgroups, "_writable", lambda path: Path(path).is_relative_to(folder))


def test_root_on_a_cgroup_v2_host_makes_its_groups_under_the_hosts_root_group(tmp_path):
    mount, proc_cgroup, mountinfo = fake_cgroup2(tmp_path)
    assert cgroups.own_cgroup_v2(proc_cgroup, mountinfo) == (mount, mount / OWN)
    assert cgroups.delegated_v2(proc_cgroup, mountinfo) == (mount, "")


def test_a_user_gets_the_highest_group_systemd_delegated_to_them(tmp_path, monkeypatch):
    mount, proc_cgroup, mountinfo = fake_cgroup2(tmp_path)
    writable_only_under(monkeypatch, mount / USER_SERVICE)
    assert cgroups.delegated_v2(proc_cgroup, mountinfo) == (mount / USER_SERVICE, "")


@pytest.mark.parametrize(
    "case",
    ["own group only", "no memory controller", "controllers off, processes inside", "not writable"],
)
def test_no_delegation_is_found_where_the_kernel_would_refuse_the_groups(case, tmp_path, monkeypatch):
    controllers = "cpu pids" if case == "no memory controller" else "cpuset cpu io memory pids"
    mount, proc_cgroup, mountinfo = fake_cgroup2(tmp_path, controllers=controllers)
    if case == "own group only":  # e.g. a scope with Delegate=yes: it holds this process itself
        writable_only_under(monkeypatch, mount / OWN)
    elif case == "controllers off, processes inside":  # "no internal processes": cannot enable them
        writable_only_under(monkeypatch, mount / USER_SERVICE)
        (mount / USER_SERVICE / "cgroup.subtree_control").write_text("pids\n")
        (mount / USER_SERVICE / "cgroup.procs").write_text("4242\n")
        for below in (mount / USER_SERVICE / "app.slice",):
            (below / "cgroup.subtree_control").write_text("pids\n")
            (below / "cgroup.procs").write_text("4343\n")
    elif case == "not writable":
        writable_only_under(monkeypatch, tmp_path / "elsewhere")
    parent, why = cgroups.delegated_v2(proc_cgroup, mountinfo)
    assert parent is None
    if case == "no memory controller":
        assert why == "cgroup v2 offers no memory controller"
    else:
        uid = os.geteuid()
        assert why == f"no cgroup v2 group above this process's own ({mount / OWN}) is delegated to uid {uid}"


def test_a_cgroup_namespace_mount_is_read_from_its_root_and_a_hybrid_host_has_no_v2_memory(tmp_path):
    # Mounted from /user.slice (mountinfo's fourth field): /proc/self/cgroup's path is below it.
    mount, proc_cgroup, mountinfo = fake_cgroup2(tmp_path, mount_root="/user.slice")
    own = mount / "user-1000.slice/user@1000.service/app.slice/mura.scope"
    assert cgroups.own_cgroup_v2(proc_cgroup, mountinfo) == (mount, own)
    # This host's kind: cgroup2 beside v1, with hugetlb only.
    hybrid = tmp_path / "hybrid"
    mount, proc_cgroup, mountinfo = fake_cgroup2(hybrid, own="", controllers="hugetlb")
    no_memory = "cgroup v2 offers no memory and pids controller"
    assert cgroups.delegated_v2(proc_cgroup, mountinfo) == (None, no_memory)


def test_a_v2_run_group_gets_the_limits_and_is_ended_whole(tmp_path, monkeypatch):
    mount, proc_cgroup, mountinfo = fake_cgroup2(tmp_path)
    writable_only_under(monkeypatch, mount / USER_SERVICE)
    (mount / USER_SERVICE / "cgroup.subtree_control").write_text("pids\n")  # memory not yet enabled
    (mount / USER_SERVICE / "cgroup.controllers").write_text("memory pids\n")  # no cpu delegated
    place, why = cgroups.locate(proc_cgroup, mountinfo)
    assert place == cgroups.Place(2, mount / USER_SERVICE, cpu=False) and why == ""
    group = place.create("run-x", 256 * MiB, 64, 1.5)

    kit = mount / USER_SERVICE / cgroups.PARENT
    assert (mount / USER_SERVICE / "cgroup.subtree_control").read_text() == "+memory"
    assert (kit / "cgroup.subtree_control").read_text() == "+memory +pids"
    assert group.folder == kit / "run-x"
    assert (group.folder / "memory.max").read_text() == str(256 * MiB)
    assert (group.folder / "pids.max").read_text() == "64"
    assert not (group.folder / "cpu.max").exists()  # no cpu controller: the runner pins CPUs instead
    assert group.procs_files() == [str(group.folder / "cgroup.procs")]
    # What the kernel reports.
    (group.folder / "memory.events").write_text("low 0\nhigh 0\nmax 9\noom 2\noom_kill 1\noom_group_kill 1\n")
    (group.folder / "pids.events").write_text("max 3\n")
    assert group.oom_kills() == 1 and group.pids_refused() == 3

    # Ended whole: cgroup.kill where the kernel has it, else frozen, killed, thawed.
    victim = subprocess.Popen(["sleep", "60"])
    try:
        (group.folder / "cgroup.procs").write_text(f"{victim.pid}\n")
        (group.folder / "cgroup.kill").write_text("")
        assert group.kill_all(patience=0.2) == {victim.pid}  # this tree's kernel never empties it
        assert (group.folder / "cgroup.kill").read_text() == "1" and victim.poll() is None
        (group.folder / "cgroup.kill").unlink()
        group.kill_all(patience=0.2)
        assert victim.wait(timeout=10) == -signal.SIGKILL
        assert (group.folder / "cgroup.freeze").read_text() == "0"  # thawed again
    finally:
        victim.kill()
        victim.wait()


def test_cpu_max_is_set_where_the_cpu_controller_is_delegated(tmp_path):
    mount, proc_cgroup, mountinfo = fake_cgroup2(tmp_path)
    place, _ = cgroups.locate(proc_cgroup, mountinfo)
    assert place == cgroups.Place(2, mount, cpu=True)
    group = place.create("run-y", 512 * MiB, 32, 1.5)
    assert (group.folder / "cpu.max").read_text() == f"150000 {cgroups.CPU_PERIOD}"
    assert (mount / cgroups.PARENT / "cgroup.subtree_control").read_text() == "+memory +pids +cpu"
