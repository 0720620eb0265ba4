"""The claim protocol of watch mode: which watcher works on which video under which name, and the filing of a
finished video into done/ or failed/. Safe between threads, processes and hosts sharing one watch folder.

    claims = Claims(in_dir)
    claim = claims.claim("clip.mp4", "clip")   # None: another watcher has the video or the name
    ...
    file_away(claim.video, in_dir / "done", claim.stem)
    claims.finish(claim)

See docs/watch.md for the folder layout, restarts and what is never lost.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import one_line
from .sidecars import SIDECAR_SUFFIXES, sidecar_paths

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no host-local mutex for reclaiming
    fcntl = None

log = logging.getLogger("v2v")

PROCESSING = ".processing"
LOCK_SUFFIX = ".lock"  # .processing/NAME.lock: the video a claim holds
NAME_SUFFIX = ".name"  # .processing/STEM.name: the job name a claim holds
ERROR_SUFFIX = ".error.txt"  # failed/STEM.error.txt: why a video failed
CLAIM_GRACE = 60.0  # seconds a claim may take to be made: a younger unreadable or half-made one may be in progress


# ---------------------------------------------------------------------------------------------- owners
def _proc_start(pid: int) -> tuple[str, str] | None:
    """(state, start time in ticks since boot) of a process, from /proc; None where there is no /proc entry."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()  # after "pid (comm) ", comm may hold spaces
    return fields[0], fields[19]


def _owner() -> dict:
    pid = os.getpid()
    ps = _proc_start(pid)
    return {"pid": pid, "host": socket.gethostname(), "start": ps[1] if ps else None}


def _owner_alive(info: dict) -> bool | None:
    """True/False for an owner on this host; None when it lives on another host (cannot be checked)."""
    if info.get("host") != socket.gethostname():
        return None
    pid = info.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # alive, another user's
    except OSError:
        return False
    ps = _proc_start(pid)
    if ps is None:
        return not Path("/proc/self/stat").exists()  # no /proc at all: trust kill(0)
    state, start = ps
    if state in ("Z", "X"):
        return False  # killed, not yet reaped
    return info.get("start") in (None, start)  # a reused pid starts at another time


# ---------------------------------------------------------------------------------------------- exclusive files
def stat_sig(path: Path) -> tuple | None:
    """(size, mtime, inode) of a file, None when there is none: what tells one version of a file from another."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def create_exclusive(path: Path, text: str, tmp: Path | None = None) -> bool:
    """Create ``path`` holding ``text`` in one step (written as ``tmp``, then linked); False when it exists."""
    tmp = tmp or path.with_name(f".{uuid.uuid4().hex}.tmp")
    try:
        tmp.write_text(text)
        try:
            os.link(tmp, path)  # atomic, fails when the file exists; safe over NFS too
        except FileExistsError:
            return False
        except OSError:  # no hard links on this file system: O_EXCL
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "w") as f:
                f.write(text)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def move_exclusive(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` unless ``dst`` exists (FileExistsError): two watchers filing at once never
    replace each other's files."""
    try:
        os.link(src, dst)
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError:  # no hard links on this file system: hold the name with O_EXCL, then rename onto it
        os.close(os.open(dst, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
        try:
            os.replace(src, dst)
        except BaseException:
            os.unlink(dst)
            raise
        return
    os.unlink(src)


def _remove_own(path: Path, token: str | None) -> None:
    """Remove a claim file when it still holds ``token`` (another claim may have taken its place since)."""
    try:
        if json.loads(path.read_text()).get("token") == token:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _read_record(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else None
    except (OSError, ValueError):
        return None


@contextmanager
def _host_mutex(proc_dir: Path):
    """A lock held by one process of this host at a time (flock; released by the kernel if we die)."""
    if fcntl is None:  # pragma: no cover
        yield
        return
    fd = -1
    try:
        fd = os.open(proc_dir / ".reclaim.lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a share without flock: fall back to one on local disk, keyed by the folder
        import hashlib
        import tempfile

        if fd >= 0:
            os.close(fd)
        key = hashlib.sha1(str(proc_dir.resolve()).encode()).hexdigest()[:16]
        fd = os.open(Path(tempfile.gettempdir()) / f"v2v-watch-{key}.lock", os.O_CREAT | os.O_RDWR, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        os.close(fd)  # closing releases the flock


# ---------------------------------------------------------------------------------------------- claims
@dataclass
class Claim:
    """A video taken by one watcher, and the name its results are written under."""

    name: str  # the video's file name in IN_DIR
    video: Path
    lock: Path  # .processing/NAME.lock
    token: str  # this claim's, in both of its files: a file holding another token is not ours
    stem: str  # the job's name: NAME, or NAME-2... when an earlier NAME's result is there

    @property
    def reservation(self) -> Path:
        """.processing/STEM.name: the file that holds the job's name."""
        return self.lock.with_name(f"{self.stem}{NAME_SUFFIX}")


class Claims:
    """The claims held in one watch folder's ``.processing/``, by every watcher of that folder."""

    def __init__(self, in_dir: Path):
        self.in_dir = Path(in_dir)
        self.dir = self.in_dir / PROCESSING
        self._foreign_logged: set[str] = set()

    def lock_path(self, name: str) -> Path:
        return self.dir / f"{name}{LOCK_SUFFIX}"

    def held(self, name: str) -> bool:
        """Whether a watcher (this one included) has the video ``name``."""
        return self.lock_path(name).exists()

    def reserved(self, taking: str | None = None) -> set[str]:
        """The job names held now, but for those held for the video ``taking`` in the last minute: another
        watcher taking that video at this moment, which either of us will give way to."""
        names = set()
        for path in self.dir.glob(f"*{NAME_SUFFIX}"):
            sig = stat_sig(path)
            # an older one outlived its claim (a watcher of another host killed before it took its video): taken
            if (taking is not None and sig is not None and time.time() - sig[1] / 1e9 < CLAIM_GRACE
                    and (_read_record(path) or {}).get("video") == taking):
                continue
            names.add(path.name[:-len(NAME_SUFFIX)])
        return names

    def claim(self, name: str, stem: str, prepare: Callable[[], dict | None] | None = None) -> Claim | None:
        """Take the job name ``stem``, then the video ``name``, each by creating its file exclusively; None when
        either is held (nothing is left behind then). ``prepare()`` runs once the name is held, when no other job
        can write under it: it returns more to record in the video's lock, or None to give the name back."""
        token = uuid.uuid4().hex
        record = {**_owner(), "token": token, "claimed": time.time(), "video": name, "stem": stem}
        claim = Claim(name, self.in_dir / name, self.lock_path(name), token, stem)
        tmp = self.dir / f".claim-{token}"  # a killed watcher's is removed by reclaim
        # the name first: no two jobs write STEM.restyled.mp4, even for two videos of one stem
        if not create_exclusive(claim.reservation, json.dumps(record), tmp):
            return None
        try:
            more = prepare() if prepare is not None else {}
        except BaseException:
            _remove_own(claim.reservation, token)
            raise
        if more is None or not create_exclusive(claim.lock, json.dumps({**record, **more}), tmp):
            _remove_own(claim.reservation, token)
            return None
        return claim

    def release(self, claim: Claim) -> None:
        """Give a claim back: the video stays in IN_DIR and will be taken again."""
        _remove_own(claim.lock, claim.token)
        _remove_own(claim.reservation, claim.token)

    def finish(self, claim: Claim) -> None:
        """End a claim whose video is filed: its lock goes, then its name (its results now hold that name)."""
        claim.lock.unlink(missing_ok=True)
        _remove_own(claim.reservation, claim.token)

    @contextmanager
    def mutex(self):
        """Held by one process of this host at a time: what reclaiming runs under."""
        with _host_mutex(self.dir):
            yield

    def reclaim(self, take_back: Callable[[str, str, dict | None], None] | None = None) -> list[str]:
        """Take back the claims of dead watchers on this host; returns the video names taken back.

        ``take_back(name, stem, record)`` runs for each under the host mutex before the claim's files go
        (``record`` None: the lock could not be read). Claims of other hosts are kept: their pids cannot be
        checked."""
        try:
            locks = [Path(e.path) for e in os.scandir(self.dir) if e.name.endswith(LOCK_SUFFIX)
                     and not e.name.startswith(".")]
        except OSError:
            return []
        taken = [name for name in (self._reclaim_one(lock, take_back) for lock in locks) if name]
        # names held by a watcher killed before it took its video, and claim files left half-made
        for leftover in [*self.dir.glob(f"*{NAME_SUFFIX}"), *self.dir.glob(".claim-*")]:
            info = _read_record(leftover)
            if info is not None and _owner_alive(info) is False:
                with self.mutex():
                    _remove_own(leftover, info.get("token"))
        return taken

    def _reclaim_one(self, lock: Path, take_back) -> str | None:
        seen = stat_sig(lock)
        info = _read_record(lock)
        if seen is None:
            return None
        if info is None:  # unreadable: an O_EXCL claim being written, or one killed while written
            if time.time() - seen[1] / 1e9 < CLAIM_GRACE:
                return None
        else:
            alive = _owner_alive(info)
            if alive is None:
                if lock.name not in self._foreign_logged:
                    self._foreign_logged.add(lock.name)
                    stem = info.get("stem")
                    name_file = f" and {self.dir / (stem + NAME_SUFFIX)}" if isinstance(stem, str) and stem else ""
                    log.info("%s is claimed by pid %s on host %s; if that watcher is gone, delete %s%s",
                             lock.name[:-len(LOCK_SUFFIX)], info.get("pid"), info.get("host"), lock, name_file)
                return None
            if alive:
                return None
        with self.mutex():
            # what was judged dead above may have been taken back by another watcher, and claimed again, since
            if stat_sig(lock) != seen or (_read_record(lock) or {}).get("token") != (info or {}).get("token"):
                return None
            name = lock.name[:-len(LOCK_SUFFIX)]
            stem = (info or {}).get("stem")
            stem = stem if isinstance(stem, str) and stem else Path(name).stem
            if take_back is not None:
                take_back(name, stem, info)
            lock.unlink(missing_ok=True)
            _remove_own(self.dir / f"{stem}{NAME_SUFFIX}", (info or {}).get("token"))
            return name


# ---------------------------------------------------------------------------------------------- filing
def filed_names(video: Path) -> list[str]:
    """What is filed under a video's name, after its stem: the video, its sidecars, a failure's reason."""
    return [video.suffix, *SIDECAR_SUFFIXES, ERROR_SUFFIX]


def stem_free(folder: Path, stem: str, names: list[str]) -> bool:
    return not any(os.path.lexists(folder / f"{stem}{n}") for n in names)  # a dangling link holds its name too


def free_stem(folder: Path, stem: str, names: list[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... so that none of ``folder/(stem + n)`` exists for n in names."""
    candidate, k = stem, 1
    while not stem_free(folder, candidate, names):
        k += 1
        candidate = f"{stem}-{k}"
    return candidate


def copy_exclusive(src: Path, dst: Path) -> None:
    """Copy ``src`` (content, mode, times) to ``dst`` unless ``dst`` exists (FileExistsError)."""
    tmp = dst.with_name(f".{uuid.uuid4().hex}.tmp")
    try:
        shutil.copy2(src, tmp)
        move_exclusive(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)


def _alone(video: Path) -> bool:
    return False


def file_away(video: Path, folder: Path, stem: str | None = None, *,
              shared: Callable[[Path], bool] = _alone) -> Path | None:
    """Move ``video`` and its sidecars into ``folder`` as ``stem`` (default, or when taken: a free one); returns
    its new path, or None when the video is no longer there. ``shared(video)``: whether another video still needs
    its sidecars (clip.mp4 and clip.mov beside one clip.json), which then stay in place as well."""
    filed = _file(video, folder, stem, None, shared)
    return filed[0] if filed else None


def file_failure(video: Path, folder: Path, message: str, *,
                 shared: Callable[[Path], bool] = _alone) -> tuple[Path, Path] | None:
    """Move ``video`` and its sidecars into ``folder`` (failed/) beside STEM.error.txt holding ``message``;
    returns (the video's new path, the reason's), or None when the video is no longer there."""
    return _file(video, folder, None, message, shared)


def _file(video: Path, folder: Path, stem: str | None, reason: str | None, shared) -> tuple | None:
    """File ``video`` as ``stem``: every file created exclusively, so two watchers filing under one name at once
    never replace each other's; the one that finds a name taken gives back what it made there and takes another."""
    sidecars = [p for p in sidecar_paths(video) if p.is_file()]
    names = filed_names(video)
    stem = stem or free_stem(folder, video.stem, names)
    while True:
        made, copied = [], []
        target, error_file = folder / f"{stem}{video.suffix}", None
        try:
            if reason is not None:  # the reason first: a kill after it leaves the video in IN_DIR, to be redone
                error_file = folder / f"{stem}{ERROR_SUFFIX}"
                if not create_exclusive(error_file, reason + "\n"):
                    raise FileExistsError(error_file)
                made.append(error_file)
            for side in sidecars:  # copied while the video is still here: see the sibling check below
                dest = folder / f"{stem}{side.suffix}"
                try:
                    copy_exclusive(side, dest)
                except FileExistsError:
                    raise
                except OSError as e:
                    log.warning("watch: could not file %s beside %s: %s", side.name, target, one_line(e))
                    continue
                made.append(dest)
                copied.append(side)
            move_exclusive(video, target)
        except FileExistsError:  # filed under that name by another watcher meanwhile
            _remove(made)
            stem = free_stem(folder, video.stem, names)
            continue
        except FileNotFoundError:  # the video was removed while it was restyled
            _remove(made)
            return None
        break
    # a sidecar goes with the last video of its stem to leave IN_DIR; each one that left before has its copy
    if not shared(video):
        for side in copied:
            side.unlink(missing_ok=True)
    return target, error_file


def _remove(paths: list[Path]) -> None:
    for path in paths:
        path.unlink(missing_ok=True)
