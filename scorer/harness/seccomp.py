"""The bubblewrap sandbox's seccomp filter (classic BPF, handed to `bwrap --seccomp FD`).

It closes what an unprivileged uid may still do that Docker's default profile forbids, and
makes the CPU limit hold where no cgroup enforces it:

- no new user namespaces (`unshare` / `clone` with CLONE_NEWUSER: EPERM): inside one a process
  is "root" over the namespaces it makes, the kernel's largest attack surface for a local user;
  `clone3` answers ENOSYS (its flags sit behind a pointer a filter cannot read; glibc then
  falls back to `clone`);
- `sched_setaffinity` succeeds without doing anything: a process cannot widen the CPU set the
  runner pinned it to (ONNX Runtime and OpenMP pin their threads by default, so an error would
  only fill the log with warnings);
- system calls of another ABI (i386, x32) kill the process: the filter's numbers are the
  native ABI's.

The numbers are per architecture; on a machine that is neither x86_64 nor aarch64 there is no
filter (`program()` returns None) and the sandbox relies on the unprivileged uid alone.
"""

from __future__ import annotations

import platform
import struct

# linux/filter.h, linux/seccomp.h, linux/audit.h, linux/sched.h
_LD_W_ABS = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JGE_K = 0x35  # BPF_JMP | BPF_JGE | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K
_ALLOW = 0x7FFF0000
_KILL_PROCESS = 0x80000000
_ERRNO = 0x00050000  # | errno; errno 0 returns success without running the call
_EPERM, _ENOSYS = 1, 38
_NR, _ARCH, _ARG0 = 0, 4, 16  # offsets in struct seccomp_data (arg 0's low word, little-endian)
_CLONE_NEWUSER = 0x10000000
_X32_BIT = 0x40000000

# machine -> (AUDIT_ARCH, unshare, clone, clone3, sched_setaffinity)
_ABIS = {
    "x86_64": (0xC000003E, 272, 56, 435, 203),
    "aarch64": (0xC00000B7, 97, 220, 435, 122),
}


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("=HBBI", code, jt, jf, k)


def program(machine: str | None = None) -> bytes | None:
    """The filter for this machine (`struct sock_filter[]`), or None where it has no numbers."""
    abi = _ABIS.get(machine or platform.machine())
    if abi is None:
        return None
    arch, unshare, clone, clone3, setaffinity = abi
    ops = [
        _op(_LD_W_ABS, _ARCH),
        _op(_JEQ_K, arch, jt=1),
        _op(_RET_K, _KILL_PROCESS),
        _op(_LD_W_ABS, _NR),
    ]
    if arch == _ABIS["x86_64"][0]:
        ops += [_op(_JGE_K, _X32_BIT, jf=1), _op(_RET_K, _KILL_PROCESS)]
    ops += [
        _op(_JEQ_K, clone3, jf=1),
        _op(_RET_K, _ERRNO | _ENOSYS),
        _op(_JEQ_K, setaffinity, jf=1),
        _op(_RET_K, _ERRNO | 0),
        _op(_JEQ_K, unshare, jt=1),
        _op(_JEQ_K, clone, jf=3),
        _op(_LD_W_ABS, _ARG0),
        _op(_JSET_K, _CLONE_NEWUSER, jf=1),
        _op(_RET_K, _ERRNO | _EPERM),
        _op(_RET_K, _ALLOW),
    ]
    return b"".join(ops)
