"""The store file: where it lives, its version, and short-lived connections that wait out a lock.

DuckDB lets one process hold a file read-write or many hold it read-only, never both, so every
connection is short-lived: opened for one read or one write and closed at once. Reads open
read-only; a write holds the file for one transaction, so an interrupted write leaves nothing
behind. Opening a file costs tens of milliseconds (DuckDB starts a database instance with its
threads; 70-130 ms on 2 busy cores), so the reads of one short task (a dashboard page's script run)
may share one read-only connection: :meth:`StoreFile.reading` holds it, on the calling thread,
from the block's first read to its end; code that writes inside such a block runs under
:func:`unshared_reads` (DuckDB refuses a read-write connection to a file the process holds open
read-only). Both retry on DuckDB's lock error with exponential backoff, up to ``busy_timeout`` seconds,
then raise :class:`StoreBusy` with a one-line message. The schema is brought up to date
(:mod:`flagcore.store.schema`) the first time a newer flagcore writes to an older file.

A damaged file (truncated, zeroed, unreadable blocks) raises :class:`StoreDamaged`: one line that
names the file and the way back (``flagcore store restore``, from a backup and the review log
``<store>.reviews.jsonl``). A store file that is gone or empty while its review log holds reviews
counts as damaged too: nothing writes a new store over a lost one.
"""

from __future__ import annotations

import fcntl
import os
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from flagcore.errors import FlagcoreError
from flagcore.store.schema import SCHEMA_VERSION, migrate, read_schema_version

DEFAULT_PATH = Path("data") / "flagcore.duckdb"
ENV_VAR = "FLAGCORE_STORE"


class StoreBusy(FlagcoreError):
    """The store stayed locked by another process for longer than the busy timeout."""


class StoreDamaged(FlagcoreError):
    """The store file cannot be read (truncated, zeroed, corrupt) or was lost beside its review log."""


# what DuckDB says of a file it cannot read; other errors (bad SQL, constraints) are not damage
_DAMAGE_WORDS = (
    "not a valid DuckDB database",
    "Could not read enough bytes",
    "Corrupt",
    "corrupt",
    "checksum",
    "Checksum",
)


def review_log_path(store_path: str | os.PathLike) -> Path:
    """The review log beside a store file: ``<store>.reviews.jsonl``."""
    return Path(f"{store_path}.reviews.jsonl")


def is_damage_error(e: BaseException) -> bool:
    """Whether a DuckDB error says the file itself cannot be read (not a lock, not bad SQL)."""
    if not isinstance(e, duckdb.Error) or is_lock_error(e):
        return False
    msg = str(e)
    return isinstance(e, duckdb.IOException) or any(w in msg for w in _DAMAGE_WORDS)


def default_path() -> Path:
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def attempts(timeout: float) -> Iterator[None]:
    """One step per attempt: the first at once, then after a jittered exponential backoff (20 ms
    doubling up to 1 s), until ``timeout`` seconds have passed; the caller stops early on success."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        yield
        if time.monotonic() >= deadline:
            return
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 1.0)


def is_lock_error(e: BaseException) -> bool:
    """Whether a DuckDB error says another connection holds the file: another process's lock, or, in
    this process, a connection of the other kind (read-only against read-write: DuckDB refuses one
    beside the other, e.g. a dashboard session's shared read while another session signs off)."""
    msg = str(e)
    return (
        "Could not set lock" in msg
        or "Conflicting lock" in msg
        or "database is locked" in msg
        or "different configuration than existing connections" in msg
    )


_CURRENT: set[str] = set()  # store files (path, inode, mtime) this process has seen at SCHEMA_VERSION
# per thread: store file -> the read-only connection its ``reading()`` block shares (None until the
# block's first read opens it)
_SHARED = threading.local()


def _shared_reads() -> dict[str, duckdb.DuckDBPyConnection | None]:
    if not hasattr(_SHARED, "files"):
        _SHARED.files = {}
    return _SHARED.files


@contextmanager
def unshared_reads() -> Iterator[None]:
    """Inside the block, this thread's reads open their own short-lived connections, as outside any
    :meth:`StoreFile.reading` block, and the connections its blocks share are closed first (the
    blocks reopen them at their next read after this one ends): wrap code that writes to a store
    (DuckDB refuses a read-write connection to a file the process holds open read-only)."""
    files = _shared_reads()
    for key, con in list(files.items()):
        if con is not None:
            files[key] = None
            con.close()
    _SHARED.files = {}
    try:
        yield
    finally:
        _SHARED.files = files


def shared_read_files() -> list[str]:
    """The store files this thread's :meth:`StoreFile.reading` blocks hold open now (tests)."""
    return [key for key, con in _shared_reads().items() if con is not None]


class StoreFile:
    """The store file at ``path``: its version and its connections (see the module docstring).

    :class:`flagcore.store.store.Store` adds every query and every write on top."""

    def __init__(self, path: str | os.PathLike | None = None, *, busy_timeout: float | None = None):
        self.path = Path(path) if path is not None else default_path()
        if busy_timeout is None:
            env_timeout = os.environ.get("FLAGCORE_BUSY_TIMEOUT", "30")
            try:
                busy_timeout = float(env_timeout)
            except ValueError:
                raise FlagcoreError(
                    f"FLAGCORE_BUSY_TIMEOUT must be a number of seconds, got {env_timeout!r}"
                ) from None
        self.busy_timeout = float(busy_timeout)

    def _version_key(self) -> str | None:
        # the file's identity and modification time: any write (a migration by a newer flagcore
        # included) makes this process check the schema again, plain reads do not
        try:
            st = self.path.stat()
        except OSError:
            return None
        return f"{self.path.resolve()}:{st.st_ino}:{st.st_mtime_ns}"

    def version(self) -> str:
        """The file's version: identity, size and modification time of the store file and of its
        write-ahead log. Every write changes it, so a cache keyed on it never serves a stale read."""
        parts = []
        for p in (self.path, Path(f"{self.path}.wal")):
            try:
                s = p.stat()
            except OSError:
                parts.append("-")
                continue
            parts.append(f"{s.st_ino}:{s.st_size}:{s.st_mtime_ns}")
        return "/".join(parts)

    @property
    def _schema_checked(self) -> bool:
        key = self._version_key()
        return key is not None and key in _CURRENT

    @_schema_checked.setter
    def _schema_checked(self, value: bool) -> None:
        key = self._version_key()
        if key is not None and value:
            _CURRENT.add(key)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"

    # ------------------------------------------------------------------ connections

    def _busy(self, holder: str) -> StoreBusy:
        return StoreBusy(
            f"{self.path}: the store is busy (another flagcore process {holder}) for over "
            f"{self.busy_timeout:g} s; try again when that process has finished"
        )

    @property
    def review_log(self) -> Path:
        """The review log beside the store: every review appended as one JSON line."""
        return review_log_path(self.path)

    def damaged(self, what: str) -> StoreDamaged:
        """The one-line error for a damaged or lost store file: what is wrong and how to recover."""
        log = self.review_log
        since = f"; the reviews since the backup come back from {log}" if log.exists() else ""
        return StoreDamaged(
            f"{self.path}: {what}; restore it with `flagcore store restore --from BACKUP_DIR "
            f"--store {self.path}`{since}"
        )

    def _damage(self, e: BaseException) -> StoreDamaged:
        first = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        return self.damaged(f"the store file is damaged ({first})")

    def _connect(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        for _ in attempts(self.busy_timeout):
            try:
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.Error as e:
                if not is_lock_error(e):
                    if "Permission denied" not in str(e) and is_damage_error(e):
                        raise self._damage(e) from None
                    first = str(e).splitlines()[0] if str(e) else type(e).__name__
                    raise FlagcoreError(f"{self.path}: cannot open the store ({first})") from None
        raise self._busy("holds it")

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def absent(self) -> bool:
        """Whether there is no store file yet (what reads answer with "nothing stored"); a store
        that was lost beside its review log raises :class:`StoreDamaged` instead."""
        if self.exists():
            return False
        self.refuse_if_lost()
        return True

    def refuse_if_lost(self) -> None:
        """Raise :class:`StoreDamaged` when the store file is gone or empty but its review log
        holds reviews: the store was lost, and a new one must not take its place unnoticed."""
        log = self.review_log
        if self.exists() or not log.exists() or log.stat().st_size == 0:
            return
        state = "is empty" if self.path.exists() else "is gone"
        raise self.damaged(
            f"the store file {state} but its review log holds reviews (move {log} away to start a new store)"
        )

    @contextmanager
    def _opened(self, read_only: bool) -> Iterator[duckdb.DuckDBPyConnection]:
        """A connection closed on exit; DuckDB's errors of a damaged file become :class:`StoreDamaged`,
        wherever the damage is met (opening, the schema check, a query, a commit)."""
        con = self._connect(read_only=read_only)
        try:
            yield con
        except duckdb.Error as e:
            if is_damage_error(e):
                raise self._damage(e) from None
            raise
        finally:
            con.close()

    @contextmanager
    def read(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A short-lived read-only connection; the store must exist (see :meth:`ensure`). Inside a
        :meth:`reading` block of this thread, the block's shared connection (opened by its first read)."""
        if not self.exists():
            self.refuse_if_lost()
            raise FlagcoreError(
                f"{self.path}: no store here yet; run `flagcore demo` or `flagcore evaluate` first"
            )
        if not self._schema_checked:
            self.ensure()
        shared = _shared_reads()
        key = self._shared_key()
        if key not in shared:
            with self._opened(read_only=True) as con:
                yield con
            return
        held = shared[key]
        if held is None:
            held = shared[key] = self._connect(read_only=True)
        try:
            yield held
        except duckdb.Error as e:
            if is_damage_error(e):
                raise self._damage(e) from None
            raise

    def _shared_key(self) -> str:
        return str(self.path.resolve())

    @contextmanager
    def reading(self) -> Iterator[None]:
        """Every read of this store inside the block, on this thread, through one read-only
        connection: opened by the block's first read (none if nothing is read), closed at its end.

        The connection holds the file's read lock while it is open, as each read's own connection
        did while it read: another process's write waits for it (backoff up to ``busy_timeout``).
        Wrap a write from this thread inside the block in :func:`unshared_reads`. Nested blocks
        share the outer one's connection.
        """
        shared = _shared_reads()
        key = self._shared_key()
        if key in shared:
            yield
            return
        shared[key] = None
        try:
            yield
        finally:
            con = shared.pop(key, None)
            if con is not None:
                con.close()

    @contextmanager
    def writer_lock(self) -> Iterator[None]:
        """Hold the store's writer lock: one flagcore writer at a time, whichever process it runs in.

        An ``flock`` on a sidecar file (``<store>.writer.lock``), taken before the read-write
        connection opens and released after it closes. DuckDB's own lock on the database file did not
        always keep two writers apart: CI once saw two concurrent ``flagcore review`` processes both
        exit 0 with review id 1, and one sign-off was gone. Waits like a locked file does (backoff
        up to ``busy_timeout``, then :class:`StoreBusy`).
        """
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{self.path}.writer.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for _ in attempts(self.busy_timeout):
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    continue
            else:
                raise self._busy("is writing")
            yield
        finally:
            os.close(fd)  # releases the flock

    @contextmanager
    def write(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction on a read-write connection, under the writer lock: committed on success,
        rolled back on any exception (KeyboardInterrupt included), and the file released at once
        either way."""
        with self.writer_lock(), self.transaction() as con:
            yield con

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """:meth:`write` without taking the writer lock: the caller holds it (and may do more under
        it after the commit, as ``Store.add_review`` appends to the review log)."""
        self.refuse_if_lost()
        if not self._schema_checked and not self._schema_is_current():
            self._migrate()
        with self._opened(read_only=False) as con:
            con.begin()
            try:
                yield con
                con.commit()
            except BaseException:
                con.rollback()
                raise

    def ensure(self) -> None:
        """Create the store or migrate it to ``SCHEMA_VERSION`` (under the writer lock)."""
        if self._schema_checked or self._schema_is_current():
            return
        self.refuse_if_lost()
        with self.writer_lock():
            if not self._schema_is_current():  # another process may have migrated it meanwhile
                self._migrate()

    def _schema_is_current(self) -> bool:
        """Whether the file exists at ``SCHEMA_VERSION`` (remembered); refuses a newer schema."""
        if not self.exists():
            return False
        with self._opened(read_only=True) as con:
            version = read_schema_version(con)
        if version > SCHEMA_VERSION:
            raise FlagcoreError(
                f"{self.path}: store schema v{version} is newer than this flagcore "
                f"(v{SCHEMA_VERSION}); upgrade flagcore"
            )
        if version == SCHEMA_VERSION:
            self._schema_checked = True
        return version == SCHEMA_VERSION

    def _migrate(self) -> None:
        """Create the store or bring it to ``SCHEMA_VERSION``; the caller holds the writer lock."""
        with self._opened(read_only=False) as con:
            migrate(con)
        self._schema_checked = True

    def schema_version(self) -> int:
        if not self.exists():
            return 0
        with self._opened(read_only=True) as con:
            return read_schema_version(con)

    def _frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        with self.read() as con:
            return con.execute(sql, list(params or [])).df()
