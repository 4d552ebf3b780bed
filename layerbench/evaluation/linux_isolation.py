"""The Linux calls the sandbox child needs, through ctypes (Python 3.11 has no os.unshare or mount): new user,
mount, PID, network and IPC namespaces, a read-only view of the filesystem, a private /proc, and dropping every
capability. Each step raises OSError when the kernel refuses it; the caller records what held."""
from __future__ import annotations

import ctypes
import os

CLONE_NEWNS, CLONE_NEWIPC, CLONE_NEWUSER = 0x00020000, 0x08000000, 0x10000000
CLONE_NEWPID, CLONE_NEWNET = 0x20000000, 0x40000000
MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_REC, MS_PRIVATE = 0x2, 0x4, 0x8, 0x4000, 0x40000
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (added in Linux 5.12)
PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS = 1, 4, 38
CAPABILITY_VERSION_3 = 0x20080522
INSIDE_ID = 1000  # the sandbox's uid and gid inside its user namespace (not 0: an exec there gains nothing)

# the namespaces tried, most isolated first; (flags, names) of each attempt
ATTEMPTS = (
    (CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWIPC,
     ("user", "mount", "pid", "network", "ipc")),
    (CLONE_NEWUSER | CLONE_NEWNET, ("user", "network")),
)


class _MountAttr(ctypes.Structure):
    _fields_ = [("attr_set", ctypes.c_uint64), ("attr_clr", ctypes.c_uint64), ("propagation", ctypes.c_uint64),
                ("userns_fd", ctypes.c_uint64)]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32), ("inheritable", ctypes.c_uint32)]


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
    libc.syscall.restype = ctypes.c_long
    libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    return libc


def _check(result: int, what: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{what}: {os.strerror(errno)}")


def _write(path: str, text: str) -> None:
    with open(path, "w", encoding="ascii") as f:
        f.write(text)


def enter_namespaces() -> tuple[tuple[str, ...], str | None]:
    """Unshare the most namespaces the kernel allows (a user namespace first, so no privilege is needed), and
    map this process's uid and gid to INSIDE_ID there. Returns (the namespaces entered, why the full set was
    refused, or None). The PID namespace applies to the children forked after this call."""
    libc, refused = _libc(), None
    uid, gid = os.geteuid(), os.getegid()
    for flags, names in ATTEMPTS:
        if libc.unshare(flags) == 0:
            _write("/proc/self/setgroups", "deny")
            _write("/proc/self/uid_map", f"{INSIDE_ID} {uid} 1")
            _write("/proc/self/gid_map", f"{INSIDE_ID} {gid} 1")
            return names, refused
        refused = refused or f"unshare: {os.strerror(ctypes.get_errno())}"
    return (), refused


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    encode = (lambda s: s.encode() if s is not None else None)
    _check(_libc().mount(encode(source), encode(target), encode(fstype), flags, encode(data)), f"mount {target}")


def _mount_setattr(path: str, recursive: bool, attr_set: int, attr_clr: int) -> None:
    attr = _MountAttr(attr_set, attr_clr, 0, 0)
    result = _libc().syscall(ctypes.c_long(SYS_MOUNT_SETATTR), ctypes.c_int(AT_FDCWD), ctypes.c_char_p(path.encode()),
                             ctypes.c_uint(AT_RECURSIVE if recursive else 0), ctypes.byref(attr),
                             ctypes.c_size_t(ctypes.sizeof(attr)))
    _check(int(result), f"mount_setattr {path}")


def private_folder(folder: str, folder_bytes: int) -> None:
    """In a new mount namespace: `folder` becomes a fresh tmpfs of at most `folder_bytes` (it vanishes with the
    namespace; nothing written there reaches the disk), and nothing mounted here reaches the host's mounts."""
    _mount(None, "/", None, MS_REC | MS_PRIVATE)
    _mount("tmpfs", folder, "tmpfs", MS_NOSUID | MS_NODEV, f"size={folder_bytes},mode=0700")


def read_only_except(folder: str) -> None:
    """Every mount read-only, without device files or set-uid programs, except the (private) `folder`."""
    _mount_setattr("/", True, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0)
    _mount_setattr(folder, False, 0, MOUNT_ATTR_RDONLY)


def private_proc() -> None:
    """As PID 1 of a new PID namespace: a /proc that shows only this namespace's processes."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


def die_with_parent(signal_number: int) -> None:
    _check(_libc().prctl(PR_SET_PDEATHSIG, signal_number, 0, 0, 0), "prctl PDEATHSIG")


def not_dumpable() -> None:
    """Processes of the same uid can no longer ptrace this one or read its memory through /proc."""
    _check(_libc().prctl(PR_SET_DUMPABLE, 0, 0, 0, 0), "prctl DUMPABLE")


def drop_privileges() -> None:
    """No capability left (the user namespace gave every one), and no exec can grant new ones."""
    _check(_libc().prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl NO_NEW_PRIVS")
    header, data = _CapHeader(CAPABILITY_VERSION_3, 0), (_CapData * 2)()
    _check(_libc().capset(ctypes.byref(header), data), "capset")
