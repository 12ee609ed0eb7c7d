"""Following growing files like `tail -F`: every whole line exactly once, across rotation by
rename, copytruncate, late files, restarts and unterminated lines."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from mlguard.sources.follow import MAX_CARRY_BYTES, LogFollower, Position, history_before


def _lines(follower: LogFollower) -> list[bytes]:
    out: list[bytes] = []
    for chunk in follower.poll():
        out += bytes(chunk.data[: chunk.end]).splitlines()
    return out


def _write(path: Path, *lines: str, end: bytes = b"\n") -> None:
    with open(path, "ab") as handle:
        for line in lines:
            handle.write(line.encode() + end)


def test_new_lines_only_and_partial_lines_wait(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    _write(log, "old 1", "old 2")
    follower = LogFollower([str(log)])  # starts at the end, like tail -F -n0
    assert _lines(follower) == []
    _write(log, "new 1")
    with open(log, "ab") as handle:
        handle.write(b"new 2 half")
    assert _lines(follower) == [b"new 1"]
    with open(log, "ab") as handle:
        handle.write(b" and the rest\n")
    assert _lines(follower) == [b"new 2 half and the rest"]
    assert _lines(follower) == []


def test_rotation_by_rename_reads_the_old_file_to_its_end_first(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    _write(log, "a1")
    follower = LogFollower([str(log)], start_at_end=False)
    assert _lines(follower) == [b"a1"]
    _write(log, "a2")  # written before the rotation, not read yet
    os.rename(log, tmp_path / "access.log.1")
    _write(tmp_path / "access.log.1", "a3")  # the server writes on until it reopens
    _write(log, "b1")
    assert _lines(follower) == [b"a2", b"a3", b"b1"]
    assert follower.stats.rotations == 1
    _write(log, "b2")
    assert _lines(follower) == [b"b2"]


def test_copytruncate_and_a_file_that_appears_later(tmp_path: Path) -> None:
    log, late = tmp_path / "access.log", tmp_path / "late.log"
    _write(log, "x" * 50, "y" * 50)
    follower = LogFollower([str(log), str(late)], start_at_end=False)
    assert len(_lines(follower)) == 2
    with open(log, "r+b") as handle:  # logrotate's copytruncate: copy, then truncate in place
        handle.truncate(0)
    _write(log, "after truncation")
    _write(late, "late 1")
    assert _lines(follower) == [b"after truncation", b"late 1"]
    assert follower.stats.truncations == 1


def test_resume_from_positions_and_from_a_rotated_sibling(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    _write(log, "1", "2")
    follower = LogFollower([str(log)], start_at_end=False)
    assert _lines(follower) == [b"1", b"2"]
    with open(log, "ab") as handle:
        handle.write(b"3 unterminated")
    assert _lines(follower) == []
    saved = {p.path: p for p in follower.positions()}
    follower.close()
    # Restarted: the unterminated line is read again from its start, once it ends.
    with open(log, "ab") as handle:
        handle.write(b"\n4\n")
    again = LogFollower([str(log)], saved)
    assert _lines(again) == [b"3 unterminated", b"4"]
    saved = {p.path: p for p in again.positions()}
    again.close()
    # Stopped, then rotated while stopped: the rest of the old file is found by its inode.
    _write(log, "5")
    os.rename(log, tmp_path / "access.log-20261128")
    _write(log, "new 1")
    third = LogFollower([str(log)], saved)
    assert _lines(third) == [b"5", b"new 1"]


def test_an_endless_line_is_kept_bounded(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    log.touch()
    follower = LogFollower([str(log)], read_bytes=256 * 1024)
    with open(log, "ab") as handle:
        handle.write(b"A" * (3 * MAX_CARRY_BYTES))
    for _ in range(5):
        assert _lines(follower) == []
    assert len(follower._files[0].carry) <= MAX_CARRY_BYTES
    _write(log, "tail", "next")
    lines = _lines(follower)
    # cut to the bound plus at most one read: reported later as a line too long to parse
    assert len(lines) == 2 and lines[1] == b"next" and len(lines[0]) <= MAX_CARRY_BYTES + 256 * 1024


def test_history_before_starts_at_a_whole_line(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    _write(log, *(f"line {i}" for i in range(100)))
    chunk = history_before(str(log), None, 50)
    assert chunk is not None
    lines = bytes(chunk.data[: chunk.end]).splitlines()
    assert lines and lines[-1] == b"line 99" and all(line.startswith(b"line ") for line in lines)
    st_ = log.stat()
    assert history_before(str(log), Position(str(log), st_.st_dev, st_.st_ino + 1, 10), 50) is None


@settings(max_examples=40, deadline=None)
@given(
    pieces=st.lists(st.binary(min_size=0, max_size=200), min_size=1, max_size=30),
    read_bytes=st.integers(min_value=1, max_value=64),
)
def test_any_writes_in_any_pieces_give_back_the_same_lines(
    tmp_path_factory: object, pieces: list[bytes], read_bytes: int
) -> None:
    """However the bytes arrive and however small the reads, each whole line comes out once,
    byte for byte (including invalid UTF-8 and escape sequences)."""
    path = Path(tmp_path_factory.mktemp("f")) / "access.log"  # type: ignore[attr-defined]
    path.touch()
    follower = LogFollower([str(path)], start_at_end=False, read_bytes=read_bytes)
    got: list[bytes] = []
    for piece in pieces:
        with open(path, "ab") as handle:
            handle.write(piece)
        for _ in range(200):  # small reads: poll until caught up
            new = _lines(follower)
            got += new
            if follower.bytes_behind() == 0:
                break
    written = b"".join(pieces)
    whole = written[: written.rfind(b"\n") + 1]
    assert got == whole.splitlines()
