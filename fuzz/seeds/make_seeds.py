#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets whose inputs are plain byte formats (tar streams,
shim frames) into fuzz/corpus/<target>/. A few valid inputs each, so
the fuzzer starts from the shapes real peers send. Run from anywhere: python3 fuzz/seeds/make_seeds.py
(The SPDY and WebSocket seeds come from the streaming crate's own encoders: runtime/streaming/src/
fuzz_seeds.rs, written with `CRIUS_WRITE_FUZZ_SEEDS=1 cargo test -p crius-streaming fuzz_seeds`.)
"""
import io
import json
import os
import struct
import tarfile

CORPUS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def tar(fmt, members, pax_headers=None):
    """A tar stream of `members` [(TarInfo, bytes)] ending in the two zero blocks (no record padding)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, pax_headers=pax_headers or {}) as t:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            t.addfile(info, io.BytesIO(data) if info.isreg() else None)
    raw = buf.getvalue().rstrip(b"\0")
    return raw + b"\0" * (-len(raw) % 512) + b"\0" * 1024


def info(name, kind=tarfile.REGTYPE, link="", uid=0, mode=0o644):
    i = tarfile.TarInfo(name)
    i.type, i.linkname, i.uid, i.gid, i.mode, i.mtime = kind, link, uid, uid, mode, 1_700_000_000
    return i


def put_tar(name, data):
    # The target's first byte is its mode: odd sets every header's checksum before the walk.
    put("tar_header", name, b"\x01" + data)


def tar_seeds():
    deep = "d/" * 70 + "file"
    put_tar("gnu-long-name-and-link.tar", tar(tarfile.GNU_FORMAT, [
        (info("dir/", tarfile.DIRTYPE, mode=0o755), b""),
        (info(deep), b"long name\n"),
        (info("l", tarfile.SYMTYPE, link=deep + "-target"), b""),
        (info("h", tarfile.LNKTYPE, link=deep), b""),
    ]))
    put_tar("pax-local-and-global.tar", tar(tarfile.PAX_FORMAT, [
        (info("caf\u00e9/" + "x" * 120), b"pax path\n"),
        (info("big-uid", uid=1 << 30), b"u"),
        (info("run/fifo", tarfile.FIFOTYPE, mode=0o620), b""),
        (info("dev/null", tarfile.CHRTYPE, mode=0o666), b""),
    ], pax_headers={"comment": "global header"}))
    put_tar("ustar-prefix.tar", tar(tarfile.USTAR_FORMAT, [
        (info("p" * 120 + "/name"), b"prefix+name\n"),
        (info(".wh..wh..opq"), b""),
    ]))
    # GNU base-256 numeric fields (uid over the 7 octal digits).
    put_tar("gnu-base256.tar", tar(tarfile.GNU_FORMAT, [
        (info("b256", uid=1 << 40), b"b"),
    ]))


def frame(msg):
    body = json.dumps(msg, separators=(",", ":")).encode()
    return struct.pack(">I", len(body)) + body


def shim_seeds():
    # The first byte picks the message type the reader expects (see fuzz_targets/shim_frame.rs).
    put("shim_frame", "requests", bytes([0]) + b"".join(frame({"version": 1, "request": r}) for r in [
        {"op": "state"}, {"op": "start"}, {"op": "kill", "signal": 9, "all": True},
        {"op": "reopen_log"}, {"op": "resize", "width": 80, "height": 24}, {"op": "shutdown"},
    ]))
    put("shim_frame", "responses", bytes([1]) + b"".join(frame({"version": 1, "response": r}) for r in [
        {"kind": "ok"},
        {"kind": "state", "pid": 42, "status": "exited",
         "exit": {"exit_code": 137, "finished_at": 1700000000123456789, "oom_killed": True}},
        {"kind": "error", "code": "wrong_state", "message": "not created"},
    ]))
    put("shim_frame", "create-reports", bytes([2]) + frame({"result": "created", "pid": 7, "shim_pid": 6})
        + frame({"result": "failed", "message": "no such file"}))
    put("shim_frame", "exec-reports", bytes([3]) + frame({"event": "started", "pid": 9})
        + frame({"event": "exited", "exit_code": 130}) + frame({"event": "failed", "message": "x"}))
    put("shim_frame", "exec-request", bytes([4]) + frame({
        "version": 1, "id": "c1", "youki_root": "/run/crius/youki", "bundle": "/var/lib/crius/c1",
        "scratch_dir": "/run/crius/c1/exec", "args": ["sh", "-c", "echo hi"],
        "console_socket": "/run/crius/c1/console.sock"}))
    put("shim_frame", "shim-config", bytes([5]) + frame({
        "version": 1, "id": "c1", "bundle": "/b", "youki_root": "/y", "shim_dir": "/s",
        "log_path": "/var/log/pods/c1.log", "terminal": False, "stdin": True, "stdin_once": True,
        "cgroup_path": "/sys/fs/cgroup/kubepods/c1", "systemd_cgroup": False,
        "shim_cgroup": {"dirs": ["/sys/fs/cgroup/crius-shims"]}, "kill_all_on_exit": True}))
    put("shim_frame", "exit-status", bytes([6]) + frame(
        {"exit_code": 0, "finished_at": 1700000000000000000, "oom_killed": False}))


if __name__ == "__main__":
    tar_seeds()
    shim_seeds()
