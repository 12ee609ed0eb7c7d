"""Follow growing log files like `tail -F`: whole new lines, across rotation and truncation.

Each path is polled (a `stat` per path per poll, as `tail -F` does where it has no inotify):

- rotation by rename (logrotate's default): the path now names another file. The old file is
  read to its end first (the server may have written to it until it reopened), then the new one
  from its start;
- truncation, including copytruncate: the file is shorter than what was read. Reading starts
  again from 0 (what was written between the copy and the truncation is lost to every
  follower; logrotate documents that);
- a file that does not exist yet, or goes away: waited for, read from its start when it appears.

A line is handed out only once its newline has been written; a partial last line waits. The
position of each path (device, inode, offset, line number) is a `Position`, which the caller
stores and hands back to resume after a restart without reading anything twice. When the file
was rotated while nobody was following, the rest of the old file is looked for among its
rotated siblings (`access.log.1`, `access.log-20261128`: same directory, same inode).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from mlguard.sources.files import Chunk

READ_BYTES = 4 * 1024 * 1024  # per read; a poll reads at most a few of these per path
READS_PER_POLL = 4  # so that one huge backlog does not starve the other files
MAX_CARRY_BYTES = 1024 * 1024  # an unterminated line is kept up to this, the rest dropped


@dataclass
class Position:
    """Where reading of one path stands: the file (device, inode), the next byte and line."""

    path: str
    device: int
    inode: int
    offset: int
    line_no: int = 1


@dataclass
class FollowStats:
    rotations: int = 0
    truncations: int = 0
    bytes_read: int = 0


class _Followed:
    def __init__(self, path: str) -> None:
        self.path = path
        self.handle: BinaryIO | None = None
        self.device = self.inode = 0
        self.offset = 0
        self.line_no = 1
        self.carry = b""  # a line whose newline has not been written yet
        self.carry_start = 0  # the file offset where that line starts
        self.draining: BinaryIO | None = None  # the file rotated away, read to its end first
        self.draining_line_no = 1

    def position(self) -> Position | None:
        if self.handle is None:
            return None
        # The carried partial line is read again after a restart: the offset points at its start.
        start = self.carry_start if self.carry else self.offset
        return Position(self.path, self.device, self.inode, start, self.line_no)


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _rotated_sibling(path: str, device: int, inode: int) -> str | None:
    """A file next to `path` whose name starts with its name and that is the same file."""
    target = Path(path)
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return None
    for entry in entries:
        if entry.name != target.name and entry.name.startswith(target.name):
            try:
                st = entry.stat()
            except OSError:
                continue
            if st.st_ino == inode and st.st_dev == device:
                return entry.path
    return None


class LogFollower:
    """Poll `paths` for new whole lines. `start_at_end`: a file already there when following
    starts is read from its end (like `tail -F -n0`) unless a stored `Position` says where."""

    def __init__(
        self,
        paths: list[str],
        positions: dict[str, Position] | None = None,
        start_at_end: bool = True,
        read_bytes: int = READ_BYTES,
    ) -> None:
        self.stats = FollowStats()
        self.read_bytes = read_bytes
        self._files = [_Followed(p) for p in dict.fromkeys(paths)]
        stored = positions or {}
        for followed in self._files:
            self._open_first(followed, stored.get(followed.path), start_at_end)

    def _open(self, followed: _Followed, st: os.stat_result) -> bool:
        try:
            handle = open(followed.path, "rb")  # noqa: SIM115 - kept open while followed
        except OSError:
            return False
        opened = os.fstat(handle.fileno())
        if (opened.st_dev, opened.st_ino) != (st.st_dev, st.st_ino):
            handle.close()  # replaced between stat and open: the next poll sees the new one
            return False
        followed.handle, followed.device, followed.inode = handle, opened.st_dev, opened.st_ino
        followed.offset, followed.line_no, followed.carry = 0, 1, b""
        return True

    def _open_first(self, followed: _Followed, stored: Position | None, start_at_end: bool) -> None:
        st = _stat(followed.path)
        if stored is not None and (st is None or (st.st_dev, st.st_ino) != (stored.device, stored.inode)):
            # Rotated while nobody followed: finish the old file where it now lives.
            old = _rotated_sibling(followed.path, stored.device, stored.inode)
            if old is not None:
                try:
                    handle = open(old, "rb")  # noqa: SIM115 - closed when drained
                    handle.seek(stored.offset)
                    followed.draining, followed.draining_line_no = handle, stored.line_no
                except OSError:
                    pass
            stored = None
            start_at_end = False  # the current file is all new since then
        if st is None or not self._open(followed, st):
            return
        if stored is not None and stored.offset <= st.st_size:
            followed.offset, followed.line_no = stored.offset, stored.line_no
        elif stored is not None:
            self.stats.truncations += 1  # shorter than where we stopped: truncated meanwhile
        elif start_at_end:
            followed.offset = st.st_size
            followed.line_no = 0  # unknown: lines before were never counted
        assert followed.handle is not None
        followed.handle.seek(followed.offset)

    def bytes_behind(self) -> int:
        """Bytes written to the followed files and not read yet (the lag, in bytes)."""
        behind = 0
        for followed in self._files:
            st = _stat(followed.path)
            if (
                st is not None
                and followed.handle is not None
                and (st.st_dev, st.st_ino)
                == (
                    followed.device,
                    followed.inode,
                )
            ):
                behind += max(st.st_size - followed.offset, 0)
            elif st is not None:
                behind += st.st_size
        return behind

    def positions(self) -> list[Position]:
        return [p for p in (f.position() for f in self._files) if p is not None]

    def _read(self, followed: _Followed) -> Chunk | bool:
        """Whole new lines of the followed file from one read; else whether bytes were read."""
        assert followed.handle is not None
        try:
            block = followed.handle.read(self.read_bytes)
        except OSError:
            return False
        if not block:
            return False
        self.stats.bytes_read += len(block)
        if not followed.carry:
            followed.carry_start = followed.offset
        followed.offset += len(block)
        data = followed.carry + block
        cut = data.rfind(b"\n")
        if cut < 0:
            # A line without its newline yet; a huge one is kept only in part (it will be
            # reported as too long when it ends), so memory stays bounded.
            followed.carry = data[:MAX_CARRY_BYTES]
            return True
        end = cut + 1
        followed.carry = data[end : end + MAX_CARRY_BYTES]
        chunk = Chunk(followed.path, max(followed.line_no, 1), data, end)
        followed.line_no += chunk.lines
        if followed.carry:
            followed.carry_start = followed.offset - (len(data) - end)
        return chunk

    def _drain(self, followed: _Followed) -> Iterator[Chunk]:
        handle = followed.draining
        assert handle is not None
        while True:
            block = handle.read(self.read_bytes)
            if not block:
                break
            cut = block.rfind(b"\n")
            if cut < 0:
                break  # the old file's unterminated last line: nothing will ever finish it
            if cut + 1 < len(block):
                handle.seek(cut + 1 - len(block), os.SEEK_CUR)
            chunk = Chunk(followed.path, max(followed.draining_line_no, 1), block, cut + 1)
            followed.draining_line_no += chunk.lines
            yield chunk
        handle.close()
        followed.draining = None

    def poll(self) -> Iterator[Chunk]:
        """Every whole line written since the last poll, as chunks in file order."""
        for followed in self._files:
            if followed.draining is not None:
                yield from self._drain(followed)
            st = _stat(followed.path)
            if followed.handle is None:
                if st is not None and self._open(followed, st):
                    yield from self._read_all(followed)
                continue
            if st is not None and (st.st_dev, st.st_ino) != (followed.device, followed.inode):
                # Rotated: what the server wrote to the old file before reopening comes first,
                # all of it (the old file will not be looked at again).
                yield from self._read_all(followed, limit=None)
                followed.handle.close()
                followed.handle = None
                self.stats.rotations += 1
                if self._open(followed, st):
                    yield from self._read_all(followed)
                continue
            if st is not None and st.st_size < followed.offset:
                followed.handle.seek(0)
                followed.offset, followed.line_no, followed.carry = 0, 1, b""
                self.stats.truncations += 1
            yield from self._read_all(followed)

    def _read_all(self, followed: _Followed, limit: int | None = READS_PER_POLL) -> Iterator[Chunk]:
        reads = 0
        while limit is None or reads < limit:
            reads += 1
            got = self._read(followed)
            if got is False:
                break  # nothing more written yet
            if isinstance(got, Chunk):
                yield got

    def close(self) -> None:
        for followed in self._files:
            for handle in (followed.handle, followed.draining):
                if handle is not None:
                    handle.close()
            followed.handle = followed.draining = None


def history_before(path: str, position: Position | None, max_bytes: int) -> Chunk | None:
    """The whole lines in the last `max_bytes` before where following starts (the stored
    position when it is still the same file, else the end): the recent past, for context."""
    st = _stat(path)
    if st is None or max_bytes <= 0:
        return None
    end = st.st_size
    if position is not None:
        if (st.st_dev, st.st_ino) != (position.device, position.inode):
            return None  # rotated while stopped: the file there now is read from its start anyway
        end = min(position.offset, st.st_size)
    start = max(end - max_bytes, 0)
    try:
        with open(path, "rb") as handle:
            handle.seek(start)
            data = handle.read(end - start)
    except OSError:
        return None
    if start > 0:
        first = data.find(b"\n")
        data = data[first + 1 :] if first >= 0 else b""  # the first line is cut: start after it
    cut = data.rfind(b"\n")
    if cut < 0:
        return None
    return Chunk(path, 1, data, cut + 1)
