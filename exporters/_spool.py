"""An on-disk spool: at-least-once delivery of log records across process restarts.

Layout of one spool (one directory, owned by one process at a time)::

    <spool_dir>/<backend>/<instance>/
        lock                      flock()ed by the owning process while it runs
        ack                       "<segment> <offset>": everything before it was delivered
        00000000000000000001.seg  append-only segment files, oldest first
        00000000000000000002.seg

A segment is a sequence of frames ``[u32 payload length][u32 crc32][payload]``, payload =
``[f64 created][u16 key length][key][body]`` (little endian). The worker thread appends a
batch with one ``write`` and one ``fsync``, sends it, then moves the ack offset (written to a
temporary file, fsynced and renamed over ``ack``). Fully acknowledged segments are deleted.

Crash behaviour: a process killed at any point leaves either complete frames (sent again
by the next process: *at least once*, the backends' idempotency takes care of duplicates)
or a torn frame at the end of its last segment. A frame whose length or checksum is wrong
ends the reading of its segment: the rest of that segment is skipped and counted as one
damaged region. A new process never appends to an old segment; it starts a new one.

Instances: on start a process takes the first ``<instance>`` directory whose lock is free
(for instance the one a killed process left) and delivers what it holds; if every one is
locked by a live process it creates a new one. So N processes of a service sharing one
``spool_dir`` use N directories, and a restarted process adopts its predecessor's records.
A child created by ``fork`` never touches its parent's spool (it claims its own).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import struct
import time
import zlib
from pathlib import Path
from typing import NamedTuple

from ._buffer import Entry

__all__ = ["Spool", "Position", "SEGMENT_BYTES"]

SEGMENT_BYTES = 8 * 1024 * 1024
_HEADER = struct.Struct("<II")   # payload length, crc32(payload)
_META = struct.Struct("<dH")     # created, key length
_SUFFIX = ".seg"
_MAX_FRAME = 64 * 1024 * 1024    # a larger length field can only be garbage


class Position(NamedTuple):
    segment: int
    offset: int


def _segment_name(number: int) -> str:
    return f"{number:020d}{_SUFFIX}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def encode_frame(entry: Entry) -> bytes:
    payload = _META.pack(entry.created, len(entry.key)) + entry.key + entry.body
    return _HEADER.pack(len(payload), zlib.crc32(payload)) + payload


def _decode_payload(payload: bytes) -> Entry:
    created, key_len = _META.unpack_from(payload)
    start = _META.size
    return Entry(payload[start:start + key_len], payload[start + key_len:], created)


class Spool:
    """One process's spool directory. Not thread-safe: only the shipper's worker thread uses it.

    Open it with :meth:`claim`; then ``append`` batches, ``read`` the oldest unsent records,
    and ``ack`` what was delivered. ``pending`` counts records written and not yet acked.
    """

    def __init__(self, directory: Path, lock_fd: int, *, max_bytes: int,
                 segment_bytes: int = SEGMENT_BYTES) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self._lock_fd = lock_fd
        self.pending = 0
        self.damaged = 0          # damaged regions found while reading, not yet reported
        self._disk_bytes = 0
        self._segments: list[int] = []
        self._read = Position(0, 0)
        self._read_fd: int | None = None
        self._read_fd_segment = -1
        self._write_fd = -1
        self._write_segment = 0
        self._write_offset = 0
        self._open()

    # --- claiming a directory ---------------------------------------------------------------

    @classmethod
    def claim(cls, root: str | os.PathLike[str], **options: int) -> Spool:
        """Lock the first free instance directory under ``root`` (creating one if none is free)."""
        base = Path(root)
        base.mkdir(parents=True, exist_ok=True)
        for candidate in sorted(p for p in base.iterdir() if p.is_dir()):
            fd = cls._try_lock(candidate)
            if fd is not None:
                return cls(candidate, fd, **options)
        while True:
            candidate = base / f"{time.time_ns():020d}-{os.getpid()}"
            candidate.mkdir()
            fd = cls._try_lock(candidate)
            if fd is not None:
                _fsync_dir(base)
                return cls(candidate, fd, **options)

    @staticmethod
    def _try_lock(directory: Path) -> int | None:
        # flock (not fcntl/lockf): the lock belongs to the open file description, so a forked
        # child closing its copy of the descriptor does not release the parent's lock.
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        return fd

    # --- opening ----------------------------------------------------------------------------

    def _open(self) -> None:
        self._segments = sorted(int(p.name[:-len(_SUFFIX)]) for p in self.directory.glob("*" + _SUFFIX)
                                if p.name[:-len(_SUFFIX)].isdigit())
        ack = self._read_ack()
        for number in [n for n in self._segments if n < ack.segment]:
            self._unlink(number)
        if self._segments and ack.segment < self._segments[0]:
            ack = Position(self._segments[0], 0)
        self._read = ack if self._segments else Position(0, 0)
        self._disk_bytes = sum(self._path(n).stat().st_size for n in self._segments)
        self.pending = self._count_from(self._read)
        self._new_segment((self._segments[-1] if self._segments else 0) + 1)
        if not self._read.segment:
            self._read = Position(self._write_segment, 0)

    def _read_ack(self) -> Position:
        try:
            segment, offset = (self.directory / "ack").read_text().split()
            return Position(int(segment), int(offset))
        except (OSError, ValueError):
            return Position(0, 0)   # no (readable) ack: deliver everything still on disk

    def _count_from(self, start: Position) -> int:
        count = 0
        for number in self._segments:
            if number < start.segment:
                continue
            data = self._path(number).read_bytes()
            offset = start.offset if number == start.segment else 0
            while True:
                frame = self._frame_at(data, offset)
                if frame is None:
                    break
                count += 1
                offset = frame[1]
        return count

    # --- writing ----------------------------------------------------------------------------

    def free_bytes(self) -> int:
        return max(0, self.max_bytes - self._disk_bytes)

    def append(self, entries: list[Entry]) -> None:
        """Write ``entries`` durably (one write, one fsync). Raises OSError (nothing half-written stays)."""
        if not entries:
            return
        if self._write_offset >= self.segment_bytes:
            self._new_segment(self._write_segment + 1)
        data = b"".join(encode_frame(e) for e in entries)
        try:
            view = memoryview(data)
            while view:
                written = os.write(self._write_fd, view)
                view = view[written:]
            os.fsync(self._write_fd)
        except OSError:
            # Cut a torn write back off, so frames appended later stay readable.
            with contextlib.suppress(OSError):
                os.ftruncate(self._write_fd, self._write_offset)
            raise
        self._write_offset += len(data)
        self._disk_bytes += len(data)
        self.pending += len(entries)

    def _new_segment(self, number: int) -> None:
        if self._write_fd >= 0:
            os.close(self._write_fd)
        self._write_fd = os.open(self._path(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        _fsync_dir(self.directory)
        self._write_segment, self._write_offset = number, 0
        if number not in self._segments:
            self._segments.append(number)

    # --- reading and acknowledging ----------------------------------------------------------

    def read(self, max_records: int, max_bytes: int) -> tuple[list[Entry], Position]:
        """The oldest unacknowledged entries (from one segment) and the position just after them.

        Reading does not move the acknowledged position: call :meth:`ack` once they are delivered.
        """
        while True:
            segment, offset = self._read
            end = self._segment_end(segment)
            if offset >= end:
                following = [n for n in self._segments if n > segment]
                if not following:
                    return [], self._read
                self._read = Position(following[0], 0)
                continue
            # A chunk always holds a whole frame: records are smaller than a batch (the handler
            # enforces it), so a frame that does not fit is damaged.
            chunk = os.pread(self._reader(segment), min(end - offset, max_bytes + 64 * 1024), offset)
            entries: list[Entry] = []
            used = total = 0
            while len(entries) < max_records:
                frame = self._frame_at(chunk, used)
                if frame is None:
                    break
                entry, next_used = frame
                if entries and total + entry.size > max_bytes:
                    break
                entries.append(entry)
                total += entry.size
                used = next_used
            if entries:
                return entries, Position(segment, offset + used)
            # A torn or corrupted frame: nothing after it in this segment can be trusted. Skip it.
            self.damaged += 1
            self._read = Position(segment, end)

    @staticmethod
    def _frame_at(data: bytes, offset: int) -> tuple[Entry, int] | None:
        """The frame starting at ``offset`` of ``data`` and the offset after it; None if not a whole valid
        frame."""
        if offset + _HEADER.size > len(data):
            return None
        length, crc = _HEADER.unpack_from(data, offset)
        start, stop = offset + _HEADER.size, offset + _HEADER.size + length
        if length < _META.size or length > _MAX_FRAME or stop > len(data):
            return None
        payload = data[start:stop]
        if zlib.crc32(payload) != crc:
            return None
        key_len = _META.unpack_from(payload)[1]
        if _META.size + key_len > length:
            return None
        return _decode_payload(payload), stop

    def ack(self, position: Position, count: int) -> None:
        """Everything before ``position`` was delivered (``count`` records): persist it."""
        tmp = self.directory / "ack.tmp"
        with open(tmp, "w") as out:
            out.write(f"{position.segment} {position.offset}\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, self.directory / "ack")
        _fsync_dir(self.directory)
        self._read = position
        self.pending = max(0, self.pending - count)
        for number in [n for n in self._segments if n < position.segment]:
            self._unlink(number)

    def _segment_end(self, number: int) -> int:
        if number == self._write_segment:
            return self._write_offset
        try:
            return self._path(number).stat().st_size
        except FileNotFoundError:
            return 0

    def _reader(self, number: int) -> int:
        if self._read_fd_segment != number:
            self._close_reader()
            self._read_fd = os.open(self._path(number), os.O_RDONLY)
            self._read_fd_segment = number
        assert self._read_fd is not None
        return self._read_fd

    def _close_reader(self) -> None:
        if self._read_fd is not None:
            os.close(self._read_fd)
        self._read_fd, self._read_fd_segment = None, -1

    def _unlink(self, number: int) -> None:
        if number == self._read_fd_segment:
            self._close_reader()
        path = self._path(number)
        with contextlib.suppress(FileNotFoundError):
            self._disk_bytes -= path.stat().st_size
            path.unlink()
        self._segments.remove(number)

    def _path(self, number: int) -> Path:
        return self.directory / _segment_name(number)

    # --- closing ----------------------------------------------------------------------------

    def close(self) -> None:
        """Close the files and release the directory for the next process."""
        self._close_fds()
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)
        self._lock_fd = -1

    def abandon(self) -> None:
        """In a forked child: drop the inherited descriptors without releasing the parent's lock."""
        self._close_fds()
        with contextlib.suppress(OSError):
            os.close(self._lock_fd)   # closing our copy leaves the parent's flock in place
        self._lock_fd = -1

    def _close_fds(self) -> None:
        self._close_reader()
        if self._write_fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._write_fd)
            self._write_fd = -1
