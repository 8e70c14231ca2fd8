"""Looks around from inside the sandbox and reports what it can see (not hostile: it writes a
valid answer). The test puts into needles.txt what must stay invisible (the real study folders,
the organiser's folder names) and into targets.txt the organiser's paths to try to open.

Prints its report as one line `REPORT {json}` (the sandbox's /output is deleted after the
run): every path it can see outside /proc, /sys, /dev and its own /submission; the paths whose
names contain a needle; the readable files (outside /usr and the interpreter's prefixes) whose
contents contain one; what opening each target did; the listing, modes and mtimes of /data;
and who it is on the host: its uid outside any user namespace (/proc/self/uid_map), its
capabilities, whether it may open the host's sysctls for writing (opened and closed at once,
nothing written) and whether it may make a user namespace."""

import ctypes
import json
import os
import sys
from pathlib import Path

needles = [line.strip() for line in Path("needles.txt").read_text().splitlines() if line.strip()]
targets = [line.strip() for line in Path("targets.txt").read_text().splitlines() if line.strip()]
skip = {"/proc", "/sys", "/dev", "/submission"}
shared = ("/usr", sys.prefix, sys.base_prefix)  # system and interpreter files, not the organiser's
paths, named, contents, unreadable = [], [], [], 0
for root, dirs, files in os.walk("/"):
    dirs[:] = sorted(d for d in dirs if os.path.join(root, d) not in skip)
    for name in dirs + files:
        path = os.path.join(root, name)
        paths.append(path)
        if any(needle in path for needle in needles):
            named.append(path)
    if root.startswith(shared):
        continue
    for name in files:
        path = os.path.join(root, name)
        try:
            if os.path.islink(path) or os.path.getsize(path) > 4 << 20:
                continue
            data = Path(path).read_bytes()
        except OSError:
            unreadable += 1
            continue
        if any(needle.encode() in data for needle in needles):
            contents.append(path)
opened = {}
for target in targets:
    try:
        opened[target] = f"read {len(Path(target).read_bytes())} bytes"
    except OSError as exc:
        opened[target] = type(exc).__name__
data = {}
for root, dirs, files in os.walk("/data"):
    for name in sorted(dirs) + sorted(files):
        info = os.lstat(os.path.join(root, name))
        data[os.path.join(root, name)] = {"mode": oct(info.st_mode), "mtime": info.st_mtime}


def outside_uid(uid: int) -> int | None:
    """`uid` as the host sees it: /proc/self/uid_map lines are `inside outside count`."""
    for line in Path("/proc/self/uid_map").read_text().splitlines():
        inside, outside, count = map(int, line.split())
        if inside <= uid < inside + count:
            return outside + uid - inside
    return None


sysctls = {}
for sysctl in ("kernel/core_pattern", "vm/drop_caches", "kernel/panic"):
    try:
        os.close(os.open(f"/proc/sys/{sysctl}", os.O_WRONLY))
        sysctls[sysctl] = "opened for writing"
    except OSError as exc:
        sysctls[sysctl] = type(exc).__name__
libc = ctypes.CDLL(None, use_errno=True)
CLONE_NEWUSER = 0x10000000
pid = os.fork()
if pid == 0:  # in a child: a user namespace made here would change nothing of the parent's
    os._exit(0 if libc.unshare(CLONE_NEWUSER) == 0 else 1)
userns = "made" if os.waitpid(pid, 0)[1] == 0 else "refused"
lines = Path("/proc/self/status").read_text().splitlines()
status = dict(line.split(":\t", 1) for line in lines if ":\t" in line)
report = {
    "paths": len(paths),
    "named": named,
    "contents": contents,
    "unreadable": unreadable,
    "opened": opened,
    "data": data,
    "listing": os.listdir("/data/test"),
    "uid": os.getuid(),
    "host_uid": outside_uid(os.getuid()),
    "capabilities": {key: status[key].strip() for key in ("CapEff", "CapPrm", "CapBnd", "CapAmb")},
    "no_new_privs": status.get("NoNewPrivs", "").strip(),
    "sysctls": sysctls,
    "user_namespace": userns,
    "cpu_topology": os.access("/sys/devices/system/cpu/online", os.R_OK),
}
print("REPORT", json.dumps(report), flush=True)
images = [line.strip() for line in Path(sys.argv[1]).read_text().splitlines() if line.strip()]
studies = dict.fromkeys(image.rpartition("/")[0] + "/" for image in images)
with open(sys.argv[2], "w") as out:
    out.writelines(f"{study},0\n" for study in studies)
