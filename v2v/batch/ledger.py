"""``OUT_DIR/batch.jsonl``: one JSON line per job a batch ran (its input, output, status, error, seconds, worker,
GPU...), appended as each job ends, so that a rerun knows what is done; and the lock that keeps two batches from
writing to one OUT_DIR at once.

    {"input": "/clips/a.mp4", "output": "/out/a.restyled.mp4", "status": "done", "error": null, "seconds": 41.2,
     "worker": "v2v-batch-3f2a-0", "pid": 4121, "node": "10.0.0.5", "gpu": ["0"], "attempts": 1, "key": "...", ...}

A line is written with one ``write`` call on a file opened for appending; a driver killed while writing leaves at
most a last line cut short, which is skipped (and warned about) when the file is read back.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
from pathlib import Path

from ..errors import OutputError, one_line

log = logging.getLogger("v2v")

LEDGER = "batch.jsonl"
LOCK = ".batch.lock"
STATUSES = ("done", "failed", "skipped", "interrupted")
# what atomic_output and write_sidecar leave while they write: .NAME.1a2b3c4d.part.mp4, .NAME.json.1a2b3c4d.tmp
TEMP_FILE = re.compile(r"\..+\.[0-9a-f]{8}(\.part(\..*)?|\.tmp)")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def read_ledger(out_dir: Path) -> list[dict]:
    """Every record in ``OUT_DIR/batch.jsonl``, oldest first ([] when there is none)."""
    path = Path(out_dir) / LEDGER
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as e:
        raise OutputError(f"'{path}' cannot be read ({one_line(e)}): move it away to start the batch afresh") \
            from None
    records = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            log.warning("batch: %s line %d is not a record (cut short by a stop?): skipped", path.name, n)
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def latest_by_key(records: list[dict]) -> dict[str, dict]:
    """The last record of each job (by its done-key): what a rerun goes by."""
    return {r["key"]: r for r in records if isinstance(r.get("key"), str)}


class Ledger:
    """``OUT_DIR/batch.jsonl`` held by one batch: the lock taken, then records appended one line at a time.
    ``with Ledger(out_dir) as ledger: ledger.write({...})``."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LEDGER
        self._lock = None

    def __enter__(self) -> Ledger:
        self.lock()
        return self

    def __exit__(self, *exc) -> None:
        self.unlock()

    def lock(self) -> None:
        """Hold ``OUT_DIR/.batch.lock`` (flock) for this batch; OutputError when another batch holds it."""
        try:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            fh = open(self.out_dir / LOCK, "a+")
        except OSError as e:
            raise OutputError(f"output folder '{self.out_dir}' cannot be created or written ({one_line(e)}): check "
                              "its permissions or choose another --out") from None
        try:
            import fcntl
        except ImportError:  # Windows: no flock; one batch per folder is then the user's to keep
            self._lock = fh
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.close()
            raise OutputError(f"another v2v batch is writing to '{self.out_dir}': wait for it to end, or choose "
                              "another --out") from None
        self._lock = fh

    def unlock(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing releases the flock
            self._lock = None

    def sweep(self) -> list[str]:
        """Remove the temp files a killed batch left in OUT_DIR (only while holding the lock: no batch is writing)."""
        removed = []
        for p in self.out_dir.iterdir():
            if p.is_file() and TEMP_FILE.fullmatch(p.name):
                p.unlink(missing_ok=True)
                removed.append(p.name)
            elif p.is_dir() and TEMP_FILE.fullmatch(p.name):
                import shutil

                shutil.rmtree(p, ignore_errors=True)
                removed.append(p.name)
        if removed:
            log.info("batch: removed %d temp file(s) left by a batch that was stopped: %s", len(removed),
                     ", ".join(sorted(removed)))
        return removed

    def write(self, record: dict) -> dict:
        """Append one record (with its time) as one line."""
        record = {**record, "time": now()}
        line = json.dumps(record, ensure_ascii=False, default=str) + "\n"
        try:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:
            raise OutputError(f"cannot write '{self.path}' ({one_line(e)}): check the disk and the folder") from None
        return record
