"""A study's owner: the one driver allowed to write a study into a store.

A driver (``oodstudy run`` or ``resume``) takes the study's *lease* before it writes
anything and gives it back when it stops; a second driver finds the lease and is
refused with one line naming the owner.  The lease is a small JSON file in the store,
``<store>/_leases/<study>.json`` (a tool-private folder: readers and ``validate`` skip
"_" entries), holding who owns the study (host, boot id, pid and the pid's start time),
since when, and a heartbeat the owner rewrites every :data:`HEARTBEAT_S` seconds.

Taking it:

- local and shared filesystems: the record is written to a temp file, then hard-linked
  to the lease's name, which fails if the name exists: only one process can win;
- object stores (S3, GCS), which have no create-if-absent here: the taker writes its
  record with a random token, waits :data:`SETTLE_S` seconds and reads it back; it owns
  the study only if its token is still there (S3 reads are strongly consistent after a
  write, so of two takers racing, the last writer wins and the other backs off).  Two
  takers could both win only if one took more than SETTLE_S between its read and its
  write.

A lease is *stale* (its owner is gone) when its owner ran on this machine (same host
and boot) and that process no longer exists, or, for an owner elsewhere, when its
heartbeat is older than :data:`STALE_AFTER_S`.  A SIGKILLed driver or a lost node thus
never blocks ``resume`` for longer than that; a stale lease is taken over (renamed
aside first on a local filesystem, so two resumers cannot both take it).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from dataclasses import asdict, dataclass

import pyarrow.fs as pafs

from study.errors import StoreError
from study.store.uri import OBJECT_STORES, open_filesystem

LEASE_DIR = "_leases"
HEARTBEAT_S = 10.0  # the owner rewrites its heartbeat this often
STALE_AFTER_S = 60.0  # a lease whose heartbeat is older than this belongs to a driver that is gone
SETTLE_S = 2.0  # object stores: how long a taker waits before reading its write back


def boot_id() -> str:
    """This machine's boot id (Linux), so that a pid is compared only within one boot."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """When process ``pid`` started (clock ticks since boot, from /proc), or None if it
    does not exist; "" where /proc is not there (then only its existence is checked)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
        return stat.rsplit(")", 1)[1].split()[19]  # field 22 of stat(5), counted after the comm field
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


@dataclass
class Owner:
    """Who holds a study's lease."""

    study: str
    command: str  # "run" | "resume"
    host: str
    boot: str
    pid: int
    pid_start: str | None
    since: float  # epoch seconds
    heartbeat: float  # epoch seconds
    token: str

    @classmethod
    def me(cls, study: str, command: str) -> "Owner":
        now = time.time()
        pid = os.getpid()
        return cls(study, command, socket.gethostname(), boot_id(), pid, process_start(pid), now, now, uuid.uuid4().hex)

    def is_alive(self, now: float | None = None) -> bool:
        """Is the owner still there? On this machine: its process exists (and is the same
        process, by start time). Elsewhere: its heartbeat is recent."""
        if self.host == socket.gethostname() and self.boot == boot_id():
            start = process_start(self.pid)
            return start is not None and (not start or not self.pid_start or start == self.pid_start)
        return (time.time() if now is None else now) - self.heartbeat < STALE_AFTER_S

    def describe(self, now: float | None = None) -> str:
        """``pid 123 on host h (`oodstudy run` since 2026-12-06 10:02:03 UTC, heartbeat 4 s ago)``."""
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since))
        age = max(0.0, (time.time() if now is None else now) - self.heartbeat)
        return (
            f"pid {self.pid} on host {self.host} (`oodstudy {self.command}` since {since}, heartbeat {age:.0f} s ago)"
        )


class StudyLease:
    """The lease of ``study`` in the store at ``uri``: :meth:`read`, :meth:`acquire`,
    :meth:`release`; while held, a daemon thread renews the heartbeat."""

    def __init__(self, uri: str, study: str) -> None:
        self.uri, self.study = uri, study
        self.fs, root = open_filesystem(uri)
        self.directory = f"{root}/{LEASE_DIR}"
        self.path = f"{self.directory}/{study}.json"
        self.object_store = self.fs.type_name in OBJECT_STORES
        self.owner: Owner | None = None  # set while this process holds the lease
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- reading ---------------------------------------------------------------------

    def read(self) -> Owner | None:
        """The current owner's record, or None when nobody holds the lease. A record that
        cannot be parsed (a write cut short) reads as an owner long gone."""
        try:
            with self.fs.open_input_stream(self.path) as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as err:
            if self.fs.get_file_info(self.path).type == pafs.FileType.NotFound:
                return None
            raise StoreError(
                f"cannot read the lease of study {self.study} at {self.path}: {err}; check the store's permissions"
            ) from None
        try:
            return Owner(**json.loads(data))
        except (ValueError, TypeError):
            return Owner(self.study, "?", "?", "", 0, None, 0.0, 0.0, "")

    def live_owner(self) -> Owner | None:
        """The owner if it is still alive, else None (no lease, or a stale one)."""
        owner = self.read()
        return owner if owner is not None and owner.is_alive() else None

    # -- taking and giving back ------------------------------------------------------

    def acquire(self, command: str) -> Owner:
        """Take the lease for this process (``command`` is "run" or "resume"), taking over a
        stale one; StoreError naming the live owner when another driver holds it."""
        me = Owner.me(self.study, command)
        try:
            if not self.object_store:
                self.fs.create_dir(self.directory, recursive=True)
            won = self._take_object(me) if self.object_store else self._take_local(me)
        except OSError as err:
            raise StoreError(
                f"cannot take the lease of study {self.study} in {self.uri}: {err}; check that the store is writable"
            ) from None
        if not won:
            raise self.held_error(self.read() or me)
        self.owner = me
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, name=f"lease-{self.study}", daemon=True)
        self._thread.start()
        return me

    def held_error(self, owner: Owner) -> StoreError:
        return StoreError(
            f"study {self.study} in {self.uri} is being run by another driver, {owner.describe()}; "
            f"wait for it to end (see it with: oodstudy status {self.study} --store {self.uri}), stop it, "
            "or pick a new --name"
        )

    def _take_local(self, me: Owner) -> bool:
        for _ in range(3):
            temp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
            with open(temp, "w") as out:
                out.write(json.dumps(asdict(me)))
            try:
                os.link(temp, self.path)  # fails if the lease exists: only one taker wins, with a whole record
                return True
            except FileExistsError:
                pass
            finally:
                os.unlink(temp)
            owner = self.read()
            if owner is not None and owner.is_alive():
                return False
            aside = f"{self.path}.{uuid.uuid4().hex[:8]}.stale"
            try:
                os.rename(self.path, aside)  # only one taker's rename of the stale lease succeeds
                os.unlink(aside)
            except FileNotFoundError:
                pass  # another taker moved it first; try to create again
        return False

    def _take_object(self, me: Owner) -> bool:
        owner = self.read()
        if owner is not None and owner.is_alive():
            return False
        self._write(me)
        time.sleep(SETTLE_S)
        now = self.read()
        return now is not None and now.token == me.token

    def _write(self, owner: Owner) -> None:
        body = json.dumps(asdict(owner)).encode()
        if self.object_store:
            with self.fs.open_output_stream(self.path) as out:  # one PUT: all or nothing
                out.write(body)
            return
        temp = f"{self.path}.{uuid.uuid4().hex[:8]}.tmp"
        with self.fs.open_output_stream(temp) as out:
            out.write(body)
        self.fs.move(temp, self.path)

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            owner = self.owner
            if owner is None:
                return
            try:
                current = self.read()
                if current is None or current.token != owner.token:
                    return  # taken over (this driver looked dead): stop renewing
                owner.heartbeat = time.time()
                self._write(owner)
            except (OSError, StoreError):
                continue  # a full disk or a network blip: try again at the next beat

    def release(self) -> None:
        """Give the lease back (only if this process still holds it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        owner, self.owner = self.owner, None
        if owner is None:
            return
        try:
            current = self.read()
            if current is not None and current.token == owner.token:
                self.fs.delete_file(self.path)
        except (OSError, StoreError):
            pass  # left behind, it is stale as soon as this process ends

    def __enter__(self) -> "StudyLease":
        return self

    def __exit__(self, *exc) -> None:
        self.release()
