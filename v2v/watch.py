"""Drop-folder mode: restyle every video dropped into a folder, one at a time, with the models loaded once.

    summary = watch("inbox", prompt="claymation astronaut", once=True)   # what is there now, then return
    watch("inbox", "outbox", prompt="anime", stop=event)                 # until event.set() (or Ctrl-C)

The loop is here; claims and filing are in v2v.claims, sidecars in v2v.sidecars. See docs/watch.md.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from .claims import PROCESSING, Claim, Claims, file_away, file_failure, filed_names, stat_sig, stem_free
from .errors import (InputNotFound, Interrupted, InvalidOptions, ModelLoadError, ModelNotFound, OutputError,
                     V2VError, one_line)
from .options import RestyleOptions, option_names
from .sidecars import MODEL_KEYS, read_sidecars, sidecar_paths

log = logging.getLogger("v2v")

VIDEO_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts", ".mts",
                              ".m2ts", ".flv", ".wmv", ".3gp", ".ogv"})
PARTIAL_SUFFIXES = frozenset({".part", ".partial", ".crdownload", ".download", ".opdownload", ".filepart",
                              ".tmp", ".temp", ".!qb", ".!ut"})
DONE, FAILED, RESTYLED = "done", "failed", "restyled"


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


# ---------------------------------------------------------------------------------------------- what is a video
def is_candidate(path: Path) -> bool:
    """A file name watch mode would take: a video extension, not hidden, not a partial download."""
    name = path.name
    if name.startswith(".") or name.endswith("~"):
        return False
    if any(s.lower() in PARTIAL_SUFFIXES for s in path.suffixes):  # clip.mp4.part, clip.part.mp4
        return False
    return path.suffix.lower() in VIDEO_EXTENSIONS


# ---------------------------------------------------------------------------------------------- the watcher
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
        self.claims = Claims(self.in_dir)
        self._seen: dict[str, tuple[tuple, float]] = {}  # name -> (signature, monotonic time first seen so)
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
        from .media.outputs import default_output

        fmt = fmt or self.options.get("format") or (getattr(self._restyler, "defaults", {}) or {}).get("format")
        return self.out_dir / default_output(Path((stem or video.stem) + video.suffix), fmt).name

    def job_stem(self, video: Path) -> str:
        """The name a new job for ``video`` writes its results under: NAME, or NAME-2, NAME-3... when NAME is held
        by another claim or has results of an earlier video (so a video dropped again replaces none of them)."""
        taken = self.claims.reserved(taking=video.name)  # another watcher taking this video too: no NAME-2 for it
        stem, k = video.stem, 1
        while stem in taken or self._stem_used(video, stem):
            k += 1
            stem = f"{video.stem}-{k}"
        return stem

    def _stem_used(self, video: Path, stem: str) -> bool:
        """Whether results of a job named ``stem`` are there: STEM.restyled.* or STEM.pose.* in OUT_DIR, or a
        video of that name filed in done/ (its input goes there under its result's name)."""
        esc = _glob_escape(stem)
        return (any(self.out_dir.glob(f"{esc}.restyled*")) or any(self.out_dir.glob(f"{esc}.pose.*"))
                or not stem_free(self.done_dir, stem, filed_names(video)))

    # ------------------------------------------------------------------ scanning
    def _signature(self, path: Path) -> tuple | None:
        sig = stat_sig(path)
        if sig is None:
            return None
        return sig + tuple(stat_sig(p) for p in sidecar_paths(path))  # a sidecar is part of a video's stability

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
            if self.claims.held(entry.name):
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
    def claim(self, name: str, sig: tuple) -> Claim | None:
        """Take ``name`` for this watcher under a free job name; None when another watcher has it, or its name
        (the next scan offers it again, to be named anew), or when it changed since ``sig``."""
        video = self.in_dir / name
        stem = self.job_stem(video)

        def still_free() -> dict | None:  # the name is held now: a job that had it since job_stem left its results
            if self._stem_used(video, stem):
                return None
            out = self._planned_output(video, stem)
            before = stat_sig(out)
            return {"output": str(out), "output_before": list(before) if before else None}

        claim = self.claims.claim(name, stem, still_free)
        if claim is None:
            return None
        if self._signature(video) != sig:  # taken and finished by another watcher, or changed: not ours now
            self.release(claim)
            self._seen.pop(name, None)
            return None
        return claim

    def release(self, claim: Claim) -> None:
        """Give a claim back (the video stays in IN_DIR and will be taken again)."""
        self.claims.release(claim)

    def reclaim(self) -> list[str]:
        """Take back the claims of dead watchers on this host. Returns the video names reclaimed."""
        taken = self.claims.reclaim(self._take_back)
        self.summary.reclaimed.extend(taken)
        return taken

    def _planned_output(self, video: Path, stem: str) -> Path:
        """Where the job for ``video`` will write (its sidecar may choose the format); recorded in its claim, so a
        restart after a kill finds that result."""
        try:
            fmt = self.settings_for(video, stem)[0].get("format")
        except V2VError:  # a bad sidecar fails the job before anything is written
            fmt = None
        return self.output_for(video, fmt, stem)

    def _take_back(self, name: str, stem: str, record: dict | None) -> None:
        """A dead watcher's video: pending again, or filed in done/ when its result was written before it died."""
        video = self.in_dir / name
        recorded = (record or {}).get("output")
        out = Path(recorded) if isinstance(recorded, str) and recorded else self.output_for(video, stem=stem)
        before = (record or {}).get("output_before")
        now_out = stat_sig(out)
        if record is not None and video.is_file() and now_out is not None and list(now_out) != before:
            log.info("watch: %s was restyled by a watcher that stopped before filing it: moving it to %s/", name,
                     DONE)
            moved = self._file_done(video, stem)
            self.summary.videos.append(WatchedVideo(name, "done", moved, output=out))
        else:
            log.info("watch: taking back %s from a watcher that stopped (pid %s)", name, (record or {}).get("pid"))
        self._seen.pop(name, None)

    # ------------------------------------------------------------------ filing
    def _shares_sidecars(self, video: Path) -> bool:
        """Whether another video of ``video``'s stem (clip.mov beside clip.mp4) is still in IN_DIR."""
        return any(p.stem == video.stem and p != video and is_candidate(p) and p.is_file()
                   for p in self.in_dir.glob(f"{_glob_escape(video.stem)}.*"))

    def _file_done(self, video: Path, stem: str) -> Path | None:
        """File a restyled video in done/ under its job's name (a free one if that is taken there now)."""
        free = stem_free(self.done_dir, stem, filed_names(video))
        moved = file_away(video, self.done_dir, stem if free else None, shared=self._shares_sidecars)
        if moved is None:
            self._log_vanished(video, self.done_dir)
        return moved

    def _log_vanished(self, video: Path, folder: Path) -> None:
        log.warning("watch: %s was removed from %s while it was restyled: nothing to move to %s/", video.name,
                    self.in_dir, folder.name)

    def _fail(self, claim: Claim, message: str, seconds: float) -> WatchedVideo:
        filed = file_failure(claim.video, self.failed_dir, message, shared=self._shares_sidecars)
        if filed is None:
            self._log_vanished(claim.video, self.failed_dir)
            return WatchedVideo(claim.name, "failed", claim.video, error=f"removed while it was restyled ({message})",
                                seconds={"total": seconds})
        moved, error_file = filed
        log.warning("watch: %s failed after %.1f s: %s (moved to %s/)", claim.name, seconds, message, FAILED)
        return WatchedVideo(claim.name, "failed", moved, error=message, error_file=error_file,
                            seconds={"total": seconds})

    # ------------------------------------------------------------------ one video
    def process(self, claim: Claim) -> WatchedVideo:
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
            moved = self._file_done(claim.video, claim.stem) or claim.video
            stages = ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items() if k != "total")
            log.info("watch: %s done in %.1f s (%s) -> %s", claim.name, seconds["total"], stages or "-", output)
            item = WatchedVideo(claim.name, "done", moved, output=output, seconds=seconds, result=result)
        self.claims.finish(claim)
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
