"""Folder watch mode: restyle every video dropped into a folder, one at a time, with the models loaded once.

    from v2v.watch import watch
    summary = watch("inbox", prompt="claymation astronaut", once=True)   # what is there now, then return
    watch("inbox", "outbox", prompt="anime", stop=event)                 # until event.set() (or Ctrl-C)

The folder, while watched::

    IN_DIR/clip.mp4               a video waiting (taken once its size and mtime stay unchanged for `settle` s)
    IN_DIR/clip.json | clip.txt   its sidecar: options for this video alone (json), or its prompt (txt)
    IN_DIR/.processing/clip.mp4.lock   the claim of the watcher working on clip.mp4 (pid, host, process start)
    IN_DIR/restyled/clip.restyled.mp4  the result (OUT_DIR; default IN_DIR/restyled)
    IN_DIR/done/clip.mp4          the input (and its sidecar) once restyled
    (clip-2.restyled.mp4 and done/clip-2.mp4 for a clip.mp4 dropped again: a result is never replaced)
    IN_DIR/failed/clip.mp4 + clip.error.txt   the input (and its sidecar) that could not be restyled, and why

Decisions (kept here because the CLI and the tests rely on them):

* **Claims.** A video is claimed by creating ``.processing/NAME.lock`` atomically (written aside, then
  hard-linked into place, which fails when the name exists; ``O_EXCL`` where hard links are not supported).
  The video stays where it is while processed and is moved to done/ or failed/ before the lock is removed, so
  two watchers (threads, processes or hosts) never take the same video, and a stale directory listing cannot
  take a finished one (the claimer re-checks the video's size and mtime after claiming).
* **Restarts.** A lock whose owner is gone (same host; pid dead, a zombie, or a different process start time)
  is reclaimed on every scan, under a host-local ``flock``: the video becomes pending again, so a job killed
  mid-way (kill -9 included) is redone, never lost. If the killed job had already written its output (the lock
  records the output's state at claim time), the video is moved to done/ without a second restyle: never
  produced twice. Outputs are written by the pipeline through temp file + rename, so a killed job leaves no
  partial output. Locks of other hosts are never reclaimed (a pid there cannot be checked): delete the lock
  file by hand if that host is gone; the watcher logs where it is.
* **Stopping.** ``stop.set()`` lets the current video finish, then ``watch`` returns. Ctrl-C
  (KeyboardInterrupt) abandons the current video: the pipeline deletes its temp output, the claim is released
  (the video stays in IN_DIR for the next run) and :class:`~v2v.errors.Interrupted` is raised, carrying the
  summary so far as ``.summary``.
* **Errors.** An error about one video (bad input, bad sidecar, out of memory...) moves it to failed/ with
  NAME.error.txt (the one-line message) and the watcher goes on. Errors that would fail every video stop the
  watcher and are raised, leaving the video in IN_DIR: an :class:`OutputError` (OUT_DIR unwritable, disk
  full) and a model that cannot be found or loaded when the sidecar did not choose the models.
* **Sidecars.** ``clip.json`` (an object of RestyleOptions fields, ``prompt`` included, and ``"preset"``: a
  config preset) and ``clip.txt`` (the prompt) beside ``clip.mp4``. Precedence: clip.json > clip.txt >
  clip.json's preset > the watch options > the Restyler's own defaults (the CLI puts the config and --preset there). A sidecar cannot send results elsewhere: ``output``-like keys and a ``keep_pose`` path are errors;
  ``"keep_pose": true`` writes OUT_DIR/NAME.pose.mp4. A sidecar is part of the video's stability check (drop it
  before or with the video) and moves with its video (copied instead when another video shares its name).
* **What is a video.** Files directly in IN_DIR whose extension is in :data:`VIDEO_EXTENSIONS` (any case).
  Ignored: names starting with '.', partial downloads (:data:`PARTIAL_SUFFIXES`, e.g. ``clip.mp4.part``),
  folders, everything else.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .errors import (InputNotFound, Interrupted, InvalidOptions, ModelLoadError, ModelNotFound, OutputError,
                     V2VError, one_line)
from .options import FIELD_TYPES, RestyleOptions, coerce, option_names

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no host-local mutex for reclaiming
    fcntl = None

log = logging.getLogger("v2v")

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                              ".m2ts", ".flv", ".wmv", ".3gp", ".ogv"})
PARTIAL_SUFFIXES = frozenset({".part", ".partial", ".crdownload", ".download", ".opdownload", ".filepart",
                              ".tmp", ".temp", ".!qb", ".!ut"})
PROCESSING, DONE, FAILED, RESTYLED = ".processing", "done", "failed", "restyled"
NAME_SUFFIX = ".name"  # .processing/STEM.name: the job name a claim holds
OUTPUT_KEYS = frozenset({"output", "out", "out_dir", "output_dir", "input"})  # never allowed in a sidecar
MODEL_KEYS = frozenset({"models", "base", "motion", "controlnet", "pose_model", "pose", "pose_runtime", "lightning",
                        "steps", "device", "dtype"})  # a sidecar setting one of these owns its model errors


# ---------------------------------------------------------------------------------------------- results
@dataclass
class WatchedVideo:
    """What happened to one video."""

    name: str  # the file name as dropped into IN_DIR ("clip.mp4")
    status: str  # "done" or "failed"
    input: Path  # where the input is now (IN_DIR/done/... or IN_DIR/failed/...)
    output: Path | None = None  # the restyled video (done only)
    error: str | None = None  # the one-line reason (failed only)
    error_file: Path | None = None  # IN_DIR/failed/NAME.error.txt (failed only)
    seconds: dict[str, float] = field(default_factory=dict)  # RestyleResult.seconds; {"total": ...} when failed
    result: object | None = None  # the RestyleResult (None when failed, or finished by a killed earlier run)


@dataclass
class WatchSummary:
    """What one ``watch`` call did, in order."""

    videos: list[WatchedVideo] = field(default_factory=list)
    reclaimed: list[str] = field(default_factory=list)  # names whose dead watcher's claim was taken back
    stopped: str = ""  # "once" (nothing left), "stop" (the stop event) or "interrupted" (Ctrl-C)

    @property
    def done(self) -> list[WatchedVideo]:
        return [v for v in self.videos if v.status == "done"]

    @property
    def failed(self) -> list[WatchedVideo]:
        return [v for v in self.videos if v.status == "failed"]


# ---------------------------------------------------------------------------------------------- helpers
def is_candidate(path: Path) -> bool:
    """A file name watch mode would take: a video extension, not hidden, not a partial download."""
    name = path.name
    if name.startswith(".") or name.endswith("~"):
        return False
    if any(s.lower() in PARTIAL_SUFFIXES for s in path.suffixes):  # clip.mp4.part, clip.part.mp4
        return False
    return path.suffix.lower() in VIDEO_EXTENSIONS


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


def _stat_sig(path: Path) -> tuple | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


def _create_exclusive(path: Path, text: str, tmp: Path) -> bool:
    """Create ``path`` holding ``text`` in one step (written as ``tmp``, then linked); False when it exists."""
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


def _move_exclusive(src: Path, dst: Path) -> None:
    """Move ``src`` to ``dst`` unless ``dst`` exists (FileExistsError): two watchers filing at once never
    replace each other's files."""
    try:
        os.link(src, dst)
    except (FileExistsError, FileNotFoundError):
        raise
    except OSError:  # no hard links on this file system: the check and the move are two steps
        if dst.exists():
            raise FileExistsError(dst) from None
        os.replace(src, dst)
        return
    os.unlink(src)


def _remove_own(path: Path, token: str) -> None:
    """Remove a claim file when it still holds ``token`` (another claim may have taken its place since)."""
    try:
        if json.loads(path.read_text()).get("token") == token:
            path.unlink()
    except (OSError, ValueError, AttributeError):
        pass


def _free_stem(folder: Path, stem: str, names: list[str]) -> str:
    """``stem``, or ``stem-2``, ``stem-3``... so that none of ``folder/(stem + n)`` exists for n in names."""
    candidate, k = stem, 1
    while any((folder / f"{candidate}{n}").exists() for n in names):
        k += 1
        candidate = f"{stem}-{k}"
    return candidate


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


# ---------------------------------------------------------------------------------------------- sidecars
def read_sidecars(video: Path) -> tuple[dict, list[Path]]:
    """This video's own options from ``NAME.json`` and/or ``NAME.txt`` beside it, and the sidecar files found.

    Raises InvalidOptions (one line, naming the file) for a malformed sidecar. ``keep_pose`` comes back as a bool.
    """
    js, txt = video.with_suffix(".json"), video.with_suffix(".txt")
    found = [p for p in (js, txt) if p.is_file()]
    options: dict = {}
    if txt.is_file():
        try:
            text = " ".join(txt.read_text(encoding="utf-8-sig").split())
        except (OSError, UnicodeDecodeError) as e:
            raise InvalidOptions(f"{txt.name}: cannot be read as UTF-8 text ({one_line(e)})") from None
        if not text:
            raise InvalidOptions(f"{txt.name} is empty: write the prompt in it, or remove it")
        options["prompt"] = text
    if js.is_file():
        try:
            data = json.loads(js.read_text(encoding="utf-8-sig"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InvalidOptions(f"{js.name} is not valid JSON: {one_line(e)}") from None
        if isinstance(data, list) and data and all(isinstance(f, dict) and "people" in f for f in data):
            raise InvalidOptions(f"{js.name} holds keypoints (OpenPose JSON), not options: rename "
                                 f"it {video.stem}.pose.json and put {{\"pose_json\": \"{video.stem}.pose.json\"}} "
                                 f"in {js.name}")
        if not isinstance(data, dict):
            raise InvalidOptions(f"{js.name} must hold a JSON object of options, e.g. {{\"prompt\": \"anime\"}}")
        from .settings import SCHEMA, input_matches, parse_record

        if data.get("schema") == SCHEMA:  # a run's record (NAME.restyled.json): restyle this video the same way
            recorded = parse_record(data, js.name)
            # keypoints detected in the recorded input: another video's, unless it is this one
            if "pose_json" in recorded and not input_matches(data, video):
                raise InvalidOptions(f"{js.name}: the record restyles with the keypoints in "
                                     f"{recorded['pose_json']}, taken from another video than {video.name}: "
                                     f"remove \"pose_json\" from its \"options\" to detect this video's poses")
            log.info("%s: %s is a v2v settings record: restyling with its settings (not its input or output)",
                     video.name, js.name)
            if "prompt" in recorded and txt.is_file():
                log.info("%s: the prompt in %s wins over %s", video.name, js.name, txt.name)
            return {**options, **recorded}, found
        outside = sorted(set(data) & OUTPUT_KEYS)
        if outside:
            raise InvalidOptions(f"{js.name}: \"{outside[0]}\" cannot be set in a sidecar: results always go to "
                                 "the watch output folder")
        unknown = sorted(set(data) - option_names() - {"preset"})
        if unknown:
            raise InvalidOptions(f"{js.name}: unknown option(s): {', '.join(unknown)}")
        for key, value in data.items():
            if key == "preset":  # a config preset for this video (expanded by Watcher.settings_for)
                if not isinstance(value, str) or not value:
                    raise InvalidOptions(f"{js.name}: \"preset\" must be a preset name")
                options[key] = value
            elif key == "keep_pose":
                if not isinstance(value, bool):
                    raise InvalidOptions(f"{js.name}: \"keep_pose\" must be true or false in watch mode (the pose "
                                         "video goes to the watch output folder as NAME.pose.mp4)")
                options[key] = value
            else:
                options[key] = coerce(key, value, FIELD_TYPES[key], js.name, video.parent)
        if "prompt" in data and txt.is_file():
            log.info("%s: the prompt in %s wins over %s", video.name, js.name, txt.name)
    return options, found


# ---------------------------------------------------------------------------------------------- the watcher
@dataclass
class _Claim:
    name: str
    video: Path
    lock: Path
    token: str
    stem: str  # the job's name: NAME, or NAME-2... when an earlier NAME's result is there (see Watcher.job_stem)

    @property
    def reservation(self) -> Path:
        """The file that holds the job's name (see Watcher.claim)."""
        return self.lock.with_name(f"{self.stem}{NAME_SUFFIX}")


class Watcher:
    """The state of one watch over IN_DIR. :func:`watch` is the front door; this class is its machinery."""

    def __init__(self, in_dir, out_dir=None, *, restyler=None, settle: float = 2.0, poll: float = 1.0,
                 keep_pose: bool = False, config=None, on_video=None, **options):
        self.in_dir = Path(in_dir).expanduser()
        if not self.in_dir.is_dir():
            raise InputNotFound(f"watch folder '{self.in_dir}' does not exist or is not a folder")
        self.in_dir = self.in_dir.resolve()
        self.out_dir = (Path(out_dir).expanduser() if out_dir is not None else self.in_dir / RESTYLED).resolve()
        self.proc_dir, self.done_dir, self.failed_dir = (self.in_dir / PROCESSING, self.in_dir / DONE,
                                                         self.in_dir / FAILED)
        if self.out_dir in (self.in_dir, self.proc_dir, self.done_dir, self.failed_dir):
            raise InvalidOptions(f"output folder '{self.out_dir}' must not be the watch folder or its "
                                 f"{DONE}/, {FAILED}/ or {PROCESSING}/: choose another --out")
        if settle < 0 or poll <= 0:
            raise InvalidOptions(f"settle must be >= 0 and poll > 0 seconds, got settle={settle}, poll={poll}")
        keep_pose = bool(keep_pose) if keep_pose in (None, 0, 1) else keep_pose
        if not isinstance(keep_pose, bool):
            raise InvalidOptions("keep_pose in watch mode is true or false: each video's pose video goes to the "
                                 "output folder as NAME.pose.mp4")
        unknown = set(options) - option_names() - {"prompt"}
        if unknown:
            raise InvalidOptions(f"unknown option(s): {', '.join(sorted(unknown))}")
        self.options = {k: v for k, v in options.items() if v is not None}  # None: the default
        self.keep_pose = keep_pose
        self.config = config  # v2v.config.Config: the presets a sidecar's "preset" names (None: the user config)
        self.on_video = on_video  # on_video(event, name, WatchedVideo | None): "started", then "done"/"failed"
        self.settle, self.poll = float(settle), float(poll)
        self._restyler = restyler
        self._check(self.options, "watch options", placeholder_prompt=True)  # fail fast, before claiming anything
        for d in (self.proc_dir, self.done_dir, self.failed_dir, self.out_dir):
            try:
                d.mkdir(parents=True, exist_ok=True)
                probe = d / f".v2v-write-test-{uuid.uuid4().hex[:8]}"
                probe.open("xb").close()
                probe.unlink()
            except OSError as e:
                raise OutputError(f"folder '{d}' cannot be created or written ({one_line(e)}): check its "
                                  "permissions or choose another folder") from None
        self._seen: dict[str, tuple[tuple, float]] = {}  # name -> (signature, monotonic time first seen so)
        self._foreign_logged: set[str] = set()
        self.summary = WatchSummary()

    # ------------------------------------------------------------------ options
    @property
    def restyler(self):
        if self._restyler is None:
            from .pipeline import Restyler

            self._restyler = Restyler()
        return self._restyler

    def _check(self, options: dict, source: str, placeholder_prompt: bool = False) -> None:
        """Validate merged options the way the pipeline will (so a bad sidecar fails before any work)."""
        defaults = dict(getattr(self._restyler, "defaults", {}) or {})
        merged = {**defaults, **options}
        merged.pop("keep_pose", None)
        if placeholder_prompt:
            merged.setdefault("prompt", "(checked per video)")
        try:
            RestyleOptions(**merged).validate()
        except InvalidOptions as e:
            raise InvalidOptions(f"{source}: {e}") from None
        except TypeError as e:  # a value of the wrong type reached a comparison
            raise InvalidOptions(f"{source}: invalid option value ({one_line(e)})") from None

    def settings_for(self, video: Path, stem: str | None = None) -> tuple[dict, list[Path], set[str]]:
        """(options for restyle, sidecar files, keys the sidecar set) for one video; InvalidOptions when malformed.
        ``stem``: the job's name for its outputs (default: the video's)."""
        own, sidecars = read_sidecars(video)
        if "preset" in own:  # the sidecar's preset: over the watch options, under the sidecar's own keys
            from .config import load_config

            name = own.pop("preset")
            try:
                preset = (self.config if self.config is not None else load_config()).preset(name)
            except InvalidOptions as e:
                raise InvalidOptions(f"{sidecars[0].name}: {e}") from None
            own = {**preset, **own}
        options = {**self.options, **own}
        keep_pose = options.pop("keep_pose", self.keep_pose)
        no_prompt = "prompt" not in options and "prompt" not in (getattr(self._restyler, "defaults", {}) or {})
        self._check(options, sidecars[0].name if own and sidecars else "options", placeholder_prompt=no_prompt)
        if no_prompt:
            raise InvalidOptions(f"no prompt for {video.name}: give watch a prompt (-p) or put "
                                 f"{video.stem}.txt (the prompt) or {video.stem}.json beside it")
        if keep_pose:
            options["keep_pose"] = self.out_dir / f"{stem or video.stem}.pose.mp4"
        elif (getattr(self._restyler, "defaults", {}) or {}).get("keep_pose"):
            options["keep_pose"] = None  # a Restyler default path would send every pose video to one file
        return options, sidecars, set(own)

    def output_for(self, video: Path, fmt: str | None = None, stem: str | None = None) -> Path:
        """OUT_DIR/NAME.restyled.mp4, or the extension of ``fmt`` (default: the watch options' --format); ``stem``:
        the job's name in place of the video's (NAME-2 when an earlier NAME's result is there)."""
        from .pipeline import default_output

        fmt = fmt or self.options.get("format") or (getattr(self._restyler, "defaults", {}) or {}).get("format")
        return self.out_dir / default_output(Path((stem or video.stem) + video.suffix), fmt).name

    def job_stem(self, video: Path) -> str:
        """The name a new job for ``video`` writes its results under: NAME, or NAME-2, NAME-3... when a result of an
        earlier video of that name is there (NAME.restyled.* or NAME.pose.* in OUT_DIR, NAME.* filed in done/) or
        another claim has it (clip.mp4 and clip.mov at once): a video dropped again never replaces an earlier
        result, and its input is filed in done/ under the same name as its result."""
        taken = {p.name[:-len(NAME_SUFFIX)] for p in self.proc_dir.glob(f"*{NAME_SUFFIX}")}

        def used(stem: str) -> bool:
            esc = _glob_escape(stem)
            return (stem in taken or any(self.out_dir.glob(f"{esc}.restyled*"))
                    or any(self.out_dir.glob(f"{esc}.pose.*")) or self._done_stem(video, stem) is None)

        stem, k = video.stem, 1
        while used(stem):
            k += 1
            stem = f"{video.stem}-{k}"
        return stem

    # ------------------------------------------------------------------ scanning
    def _signature(self, path: Path) -> tuple | None:
        sig = _stat_sig(path)
        if sig is None:
            return None
        return sig + (_stat_sig(path.with_suffix(".json")), _stat_sig(path.with_suffix(".txt")))

    def scan(self) -> tuple[list[tuple[str, tuple]], float | None]:
        """Videos ready to take (name, signature), oldest first; and seconds until the next one may settle."""
        now = time.monotonic()
        try:
            entries = list(os.scandir(self.in_dir))
        except OSError as e:
            raise InputNotFound(f"watch folder '{self.in_dir}' cannot be read ({one_line(e)})") from None
        ready, wait, present = [], None, set()
        for entry in entries:
            path = Path(entry.path)
            if not is_candidate(path):
                continue
            try:
                if not entry.is_file():
                    continue
            except OSError:
                continue
            if (self.proc_dir / f"{entry.name}.lock").exists():
                continue  # another watcher (or thread) has it
            sig = self._signature(path)
            if sig is None:
                continue
            present.add(entry.name)
            seen = self._seen.get(entry.name)
            if seen is None or seen[0] != sig:
                self._seen[entry.name] = (sig, now)
                since = now
            else:
                since = seen[1]
            left = self.settle - (now - since)
            if left <= 0:
                ready.append((sig[1], entry.name, sig))
            else:
                wait = left if wait is None else min(wait, left)
        for name in set(self._seen) - present:
            del self._seen[name]
        ready.sort()
        return [(name, sig) for _, name, sig in ready], wait

    # ------------------------------------------------------------------ claims
    def claim(self, name: str, sig: tuple) -> _Claim | None:
        """Take ``name`` for this watcher, atomically; None when another has it or it changed since ``sig``.

        Two exclusive files make a claim: first the job's name (``.processing/STEM.name``: no two jobs write
        STEM.restyled.mp4), then the video (``.processing/NAME.lock``). A name another claim holds gives way: the
        next scan takes the video again under the next free name."""
        video = self.in_dir / name
        lock = self.proc_dir / f"{name}.lock"
        token = uuid.uuid4().hex
        stem = self.job_stem(video)
        out = _stat_sig(self.output_for(video, stem=stem))
        record = json.dumps({**_owner(), "token": token, "claimed": time.time(), "video": name, "stem": stem,
                             "output_before": list(out) if out else None})
        reservation = self.proc_dir / f"{stem}{NAME_SUFFIX}"
        tmp = self.proc_dir / f".claim-{token}"  # (a killed watcher's is removed by reclaim)
        if not _create_exclusive(reservation, record, tmp):
            return None
        if not _create_exclusive(lock, record, tmp):
            _remove_own(reservation, token)
            return None
        claim = _Claim(name, video, lock, token, stem)
        if self._signature(video) != sig:  # taken and finished by another watcher, or changed: not ours now
            self.release(claim)
            self._seen.pop(name, None)
            return None
        return claim

    def release(self, claim: _Claim) -> None:
        """Give a claim back (the video stays in IN_DIR and will be taken again)."""
        _remove_own(claim.lock, claim.token)
        _remove_own(claim.reservation, claim.token)

    def _finish(self, claim: _Claim) -> None:
        """The claim's work is filed: its lock goes, then its name (the result or done/ now holds the name)."""
        claim.lock.unlink(missing_ok=True)
        _remove_own(claim.reservation, claim.token)

    @staticmethod
    def _read_lock(lock: Path) -> dict | None:
        try:
            data = json.loads(lock.read_text())
            return data if isinstance(data, dict) else None
        except (OSError, ValueError):
            return None

    def reclaim(self) -> list[str]:
        """Take back the claims of dead watchers on this host. Returns the video names reclaimed."""
        taken = []
        try:
            locks = [Path(e.path) for e in os.scandir(self.proc_dir) if e.name.endswith(".lock")
                     and not e.name.startswith(".")]
        except OSError:
            return taken
        for lock in locks:
            info = self._read_lock(lock)
            if info is None:  # unreadable: an O_EXCL claim being written, or one killed while written
                try:
                    if time.time() - lock.stat().st_mtime < 60:
                        continue
                except OSError:
                    continue
            else:
                alive = _owner_alive(info)
                if alive is None:
                    if lock.name not in self._foreign_logged:
                        self._foreign_logged.add(lock.name)
                        log.info("%s is claimed by pid %s on host %s; if that watcher is gone, delete %s",
                                 lock.name[:-5], info.get("pid"), info.get("host"), lock)
                    continue
                if alive:
                    continue
            with _host_mutex(self.proc_dir):
                again = self._read_lock(lock)
                if (again or {}).get("token") != (info or {}).get("token") or not lock.exists():
                    continue  # reclaimed by someone else meanwhile
                name = lock.name[:-len(".lock")]
                video = self.in_dir / name
                stem = (info or {}).get("stem")
                stem = stem if isinstance(stem, str) and stem else video.stem
                out = self.output_for(video, stem=stem)
                before = (info or {}).get("output_before")
                now_out = _stat_sig(out)
                if info is not None and video.is_file() and now_out is not None and list(now_out) != before:
                    # the killed job wrote its output but died before moving its input: finish it, do not redo it
                    log.info("watch: %s was restyled by a watcher that stopped before filing it: moving it to "
                             "%s/", name, DONE)
                    moved = self._file_away(video, self.done_dir, self._done_stem(video, stem))
                    self.summary.videos.append(WatchedVideo(name, "done", moved, output=out))
                else:
                    log.info("watch: taking back %s from a watcher that stopped (pid %s)", name,
                             (info or {}).get("pid"))
                lock.unlink(missing_ok=True)
                _remove_own(self.proc_dir / f"{stem}{NAME_SUFFIX}", (info or {}).get("token"))
                self._seen.pop(name, None)
                taken.append(name)
        # names held by a watcher killed before it took its video, and claim files left half-made
        for leftover in [*self.proc_dir.glob(f"*{NAME_SUFFIX}"), *self.proc_dir.glob(".claim-*")]:
            info = self._read_lock(leftover)
            if info is not None and _owner_alive(info) is False:
                with _host_mutex(self.proc_dir):
                    _remove_own(leftover, info.get("token"))
        self.summary.reclaimed.extend(taken)
        return taken

    # ------------------------------------------------------------------ filing
    @staticmethod
    def _filed(video: Path) -> list[str]:
        """What is filed under a video's name: the video, its sidecars, a failure's reason."""
        return [video.suffix, ".json", ".txt", ".error.txt"]

    def _free_stem(self, video: Path, folder: Path) -> str:
        return _free_stem(folder, video.stem, self._filed(video))

    def _done_stem(self, video: Path, stem: str) -> str | None:
        """The job's own name for filing in done/ when it is still free there (else None: a free one)."""
        return stem if _free_stem(self.done_dir, stem, self._filed(video)) == stem else None

    def _file_away(self, video: Path, folder: Path, stem: str | None = None) -> Path | None:
        """Move ``video`` and its sidecars into ``folder`` as ``stem`` (default: a free one); returns its new path,
        or None when the video is no longer there (removed or moved away while it was restyled)."""
        sidecars = [p for p in (video.with_suffix(".json"), video.with_suffix(".txt")) if p.is_file()]
        stem = stem or self._free_stem(video, folder)
        while True:
            target = folder / f"{stem}{video.suffix}"
            try:
                _move_exclusive(video, target)
                break
            except FileExistsError:  # filed there by another watcher meanwhile
                stem = self._free_stem(video, folder)
            except FileNotFoundError:
                log.warning("watch: %s was removed from %s while it was restyled: nothing to move to %s/",
                            video.name, self.in_dir, folder.name)
                return None
        # another video with the same stem (clip.mp4 + clip.mov) still needs the sidecar: copy it then
        siblings = [p for p in self.in_dir.glob(f"{_glob_escape(video.stem)}.*")
                    if p.stem == video.stem and p != video and is_candidate(p) and p.is_file()]
        for side in sidecars:
            dest = folder / f"{stem}{side.suffix}"
            try:
                if siblings:
                    shutil.copy2(side, dest)
                else:
                    os.replace(side, dest)
            except OSError as e:
                log.warning("watch: could not file %s beside %s: %s", side.name, target, one_line(e))
        return target

    def _fail(self, claim: _Claim, message: str, seconds: float) -> WatchedVideo:
        while True:  # the reason first, under a name no other failure holds: a kill after this leaves the video
            stem = self._free_stem(claim.video, self.failed_dir)
            error_file = self.failed_dir / f"{stem}.error.txt"
            if _create_exclusive(error_file, message + "\n", error_file.with_name(f".{uuid.uuid4().hex}.tmp")):
                break
        moved = self._file_away(claim.video, self.failed_dir, stem)
        if moved is not None and moved.stem != stem:  # another failure took the video's name meanwhile
            error_file = error_file.replace(moved.with_name(f"{moved.stem}.error.txt"))
        if moved is None:  # the video was taken away mid-way: no reason to file without it
            error_file.unlink(missing_ok=True)
            return WatchedVideo(claim.name, "failed", claim.video, error=f"removed while it was restyled ({message})",
                                seconds={"total": seconds})
        log.warning("watch: %s failed after %.1f s: %s (moved to %s/)", claim.name, seconds, message, FAILED)
        return WatchedVideo(claim.name, "failed", moved, error=message, error_file=error_file,
                            seconds={"total": seconds})

    # ------------------------------------------------------------------ one video
    def process(self, claim: _Claim) -> WatchedVideo:
        """Restyle one claimed video and file it. Raises for Ctrl-C and for errors that would fail every video."""
        t0 = time.perf_counter()
        own: set[str] = set()
        if self.on_video:
            self.on_video("started", claim.name, None)
        try:
            options, _, own = self.settings_for(claim.video, claim.stem)
            out = self.output_for(claim.video, options.get("format"), claim.stem)
            log.info("watch: restyling %s -> %s", claim.name, out)
            result = self.restyler.restyle(claim.video, out, prompt=options.pop("prompt", None), **options)
        except KeyboardInterrupt:  # Interrupted too: the pipeline has already removed its temp output
            self.release(claim)
            raise
        except (OutputError, ModelNotFound, ModelLoadError) as e:
            if isinstance(e, OutputError) or not (own & MODEL_KEYS):
                self.release(claim)  # would fail every video: stop, leave this one in place
                raise
            item = self._fail(claim, one_line(e), time.perf_counter() - t0)
        except V2VError as e:
            item = self._fail(claim, one_line(e), time.perf_counter() - t0)
        except Exception as e:  # a bug: file the video, keep going, keep the traceback in the debug log
            log.debug("watch: %s raised", claim.name, exc_info=True)
            item = self._fail(claim, f"internal error ({type(e).__name__}: {one_line(e)}); rerun with --debug "
                              "and report it", time.perf_counter() - t0)
        else:
            seconds = dict(getattr(result, "seconds", None) or {})
            seconds.setdefault("total", time.perf_counter() - t0)
            output = Path(getattr(result, "output", None) or out)
            moved = self._file_away(claim.video, self.done_dir, self._done_stem(claim.video, claim.stem)) or claim.video
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k != "total")
            log.info("watch: %s done in %.1f s (%s) -> %s", claim.name, seconds["total"], stages or "-", output)
            item = WatchedVideo(claim.name, "done", moved, output=output, seconds=seconds, result=result)
        self._finish(claim)
        self._seen.pop(claim.name, None)
        self.summary.videos.append(item)
        if self.on_video:
            self.on_video(item.status, claim.name, item)
        return item

    # ------------------------------------------------------------------ the loop
    def run(self, *, once: bool = False, stop: threading.Event | None = None) -> WatchSummary:
        stop = stop or threading.Event()
        busy = False  # a video in progress (for the Ctrl-C message)
        log.info("watch: watching %s (results to %s)%s", self.in_dir, self.out_dir,
                 "; once" if once else "; Ctrl-C to stop")
        try:
            while not stop.is_set():
                self.reclaim()
                ready, wait = self.scan()
                took = False
                for name, sig in ready:
                    if stop.is_set():
                        break
                    claim = self.claim(name, sig)
                    if claim is None:
                        continue
                    took = busy = True
                    self.process(claim)
                    busy = False
                    break  # rescan after every video: the folder changes while we work
                if took:
                    continue
                if once and not ready and wait is None:
                    self.summary.stopped = "once"
                    return self.summary
                stop.wait(min(self.poll, wait) if wait is not None else self.poll)
            self.summary.stopped = "stop"
            return self.summary
        except KeyboardInterrupt:
            self.summary.stopped = "interrupted"
            err = Interrupted("interrupted: the video in progress was put back and will be taken on the next run"
                              if busy else "interrupted: no video was in progress")
            err.summary = self.summary
            raise err from None


def _glob_escape(text: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def watch(in_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, restyler=None,
          once: bool = False, poll: float = 1.0, settle: float = 2.0, stop: threading.Event | None = None,
          keep_pose: bool = False, config=None, on_video=None, **options) -> WatchSummary:
    """Restyle every video dropped into ``in_dir``, one at a time, with one Restyler (models loaded once).

    ``out_dir``: where NAME.restyled.mp4 go (default IN_DIR/restyled). ``restyler``: a Restyler to reuse (its
    own defaults apply under ``options``); default a new one. ``once``: process what is there (waiting for
    files still being written), then return. ``poll``: seconds between folder scans. ``settle``: seconds a
    file's size and mtime (and its sidecar's) must stay unchanged before it is taken. ``stop``: set it to return
    after the current video. ``keep_pose``: also write OUT_DIR/NAME.pose.mp4. ``options``: RestyleOptions
    fields for every video (``prompt`` included), under each video's sidecar. ``config``: the
    :class:`v2v.config.Config` whose presets a sidecar's ``"preset"`` names (default: the user's config file).
    ``on_video(event, name, item)``: called with "started" (item None) and then "done" or "failed" (the
    :class:`WatchedVideo`) for each video.

    Returns a :class:`WatchSummary`. Raises InputNotFound (no such folder), InvalidOptions (bad options),
    OutputError / ModelNotFound / ModelLoadError (errors that would fail every video; the video stays in
    IN_DIR), Interrupted on Ctrl-C (``.summary`` holds what was done).
    """
    w = Watcher(in_dir, out_dir, restyler=restyler, settle=settle, poll=poll, keep_pose=keep_pose, config=config,
                on_video=on_video, **options)
    return w.run(once=once, stop=stop)
