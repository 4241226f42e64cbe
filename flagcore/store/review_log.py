"""The review log: every review also appended, as one JSON line, to ``<store>.reviews.jsonl``.

The store is the place reviews are read from; the log is a second, plain copy that survives a
damaged store file. ``Store.add_review`` appends each review after its transaction commits, still
under the writer lock (so lines are in review-id order), then flushes and fsyncs the file.
``flagcore store restore`` reads it back (:func:`read_review_log`) and adds the reviews a backup
lacks; a review is known by :func:`review_key`, so nothing is added twice.
"""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flagcore.errors import FlagcoreError
from flagcore.store.codec import from_json, to_json

# the fields of a log line (one review), in the order they are written
LOG_FIELDS = (
    "review_id",
    "run_id",
    "run_key",  # the run's request key: a review is never restored onto another run of the same id
    "reviewer",
    "verdict",
    "comment",
    "created_at",
    "identity_source",
    "hifa_snapshot",
)


def iso_utc(when: Any) -> str:
    """A timestamp (datetime, pandas Timestamp or ISO 8601 text) as ISO 8601 in UTC, microseconds."""
    if isinstance(when, str):
        when = datetime.fromisoformat(when)
    if not isinstance(when, datetime):
        raise FlagcoreError(f"not a timestamp: {when!r}")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).isoformat(timespec="microseconds")


def review_key(review: dict) -> tuple[int, str, str, str, str]:
    """What makes a review the same review: (run_id, reviewer, verdict, created_at, comment)."""
    return (
        int(review["run_id"]),
        str(review["reviewer"]),
        str(review["verdict"]),
        iso_utc(review["created_at"]),
        str(review.get("comment") or ""),
    )


def append_review(log: Path, review: dict) -> None:
    """Append one review as a JSON line; flushed and fsynced before this returns (the folder too,
    when this line created the file)."""
    line = to_json({k: review.get(k) for k in LOG_FIELDS} | {"created_at": iso_utc(review["created_at"])})
    created = not log.exists()
    fd = os.open(log, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        # a line cut short by a crash gets its own line end, so this review starts a line of its own
        end = os.lseek(fd, 0, os.SEEK_END)
        cut = end > 0 and os.pread(fd, 1, end - 1) != b"\n"
        os.write(fd, (("\n" if cut else "") + line + "\n").encode("utf-8"))
        os.fsync(fd)
    finally:
        os.close(fd)
    if created:
        dfd = os.open(log.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def read_review_log(log: Path) -> list[dict]:
    """Every review in a log, in the order written. A line cut short by a crash mid-write (not
    JSON) is skipped; a JSON line that is not a review raises FlagcoreError naming the line."""
    if not log.exists():
        return []
    lines = log.read_text(encoding="utf-8").split("\n")
    out = []
    for i, text in enumerate(lines, 1):
        if not text.strip():
            continue
        try:
            rec = json.loads(text)
        except ValueError:
            continue  # a write that never finished
        try:
            review_key(rec)
        except (ValueError, KeyError, TypeError) as e:
            raise FlagcoreError(f"{log}: line {i} is not a review ({type(e).__name__}: {e})") from None
        if isinstance(rec.get("hifa_snapshot"), str):
            rec["hifa_snapshot"] = from_json(rec["hifa_snapshot"])
        out.append(rec)
    return out
