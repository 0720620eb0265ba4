"""Output formats: the format table, and which format a path gets.
=========  ==========  ==================  ===============  ==============  ============================
format     extensions  video               pixels           ``crf``         audio
=========  ==========  ==================  ===============  ==============  ============================
h264       .mp4 .mov   libx264             yuv420p          0-51 (18)       copy (AAC, MP3, AC-3, ...)
h265       .mp4 .mov   libx265, tag hvc1   yuv420p          0-51 (20)       or AAC
vp9        .webm       libvpx-vp9, b:v 0   yuv420p          0-63 (24)       copy (Opus, Vorbis) or Opus
av1        .webm .mp4  SVT-AV1 (or aom)    yuv420p          1-63 (30)       webm: as vp9; mp4: as h264
prores     .mov        prores_ks HQ        yuv422p10le      ignored         copy (+ PCM) or AAC
gif        .gif        one palette         pal8             ignored         none
png        a folder    PNG, lossless       rgb24            ignored         none
=========  ==========  ==================  ===============  ==============  ============================

The extension picks the format (.mp4 H.264, .webm VP9, .mov ProRes, .gif GIF, a folder PNG); ``--format`` picks
another one the extension can hold (``--format h265`` for .mp4, ``--format av1`` for .webm).

Timing: mp4 and mov keep each frame's exact time (the source's time base); webm (Matroska) stores milliseconds,
so each frame is within 0.5 ms of its time; GIF stores centiseconds (v2v.media.writers.gif.gif_schedule); a PNG
sequence has no timing (``RestyleResult.fps`` gives the rate). Pure: no PyAV here (the options validate
``--format`` and ``--crf`` against this table before anything heavy loads).
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

from v2v.errors import InvalidOptions, OutputError

log = logging.getLogger("v2v")


@dataclass(frozen=True)
class OutputFormat:
    name: str  # the --format value
    label: str  # for messages: "H.264"
    extensions: tuple[str, ...]  # the file extensions it can be written to (the first is the default); () = folder
    pix_fmt: str  # what the frames are stored as
    crf: tuple[int, int, int] | None  # (lowest, highest, default) of the --crf scale; None: no quality knob
    audio: bool  # whether the format carries the source's audio streams and subtitles
    even: bool  # frame sides must be even (chroma subsampling)

    @property
    def folder(self) -> bool:
        return not self.extensions


FORMATS: dict[str, OutputFormat] = {f.name: f for f in (
    OutputFormat("h264", "H.264", (".mp4", ".mov"), "yuv420p", (0, 51, 18), True, True),
    OutputFormat("h265", "H.265", (".mp4", ".mov"), "yuv420p", (0, 51, 20), True, True),
    OutputFormat("vp9", "VP9", (".webm",), "yuv420p", (0, 63, 24), True, True),
    OutputFormat("av1", "AV1", (".webm", ".mp4"), "yuv420p", (1, 63, 30), True, True),
    OutputFormat("prores", "ProRes 422 HQ", (".mov",), "yuv422p10le", None, True, True),
    OutputFormat("gif", "GIF", (".gif",), "pal8", None, False, False),
    OutputFormat("png", "PNG sequence", (), "rgb24", None, False, False),
)}


#: the format an extension gets without --format
BY_EXTENSION = {".mp4": "h264", ".webm": "vp9", ".mov": "prores", ".gif": "gif"}


SUPPORTED = ".mp4 (H.264, H.265, AV1), .webm (VP9, AV1), .mov (ProRes, H.264, H.265), .gif, or a folder (PNG " \
            "sequence: end the path with /)"


CRF_LIMITS = (0, 63)  # the widest --crf scale (VP9's), checked before the format is known

#: audio codecs stream-copied per container (only when the container also takes them); others are transcoded
MP4_COPY_AUDIO = ("aac", "mp3", "ac3", "eac3", "alac")
COPY_AUDIO = {"mp4": MP4_COPY_AUDIO,
              "mov": MP4_COPY_AUDIO + ("pcm_s16le", "pcm_s16be", "pcm_s24le", "pcm_s24be", "pcm_f32le"),
              "webm": ("opus", "vorbis")}
TRANSCODE_AUDIO = {"mp4": "aac", "mov": "aac", "webm": "libopus"}


SEQUENCE_FILE = re.compile(r".+_\d{6}\.png")  # NAME_000000.png: what a PNG sequence folder holds


def is_folder_target(output: str | os.PathLike, fmt: str | None = None) -> bool:
    """Whether ``output`` names a PNG-sequence folder: ``--format png``, a path ending in '/', or an existing
    folder without a video extension."""
    raw = os.fspath(output)
    if fmt == "png" or raw.endswith(("/", os.sep)):
        return True
    p = Path(raw).expanduser()
    return p.is_dir() and p.suffix.lower() not in BY_EXTENSION


def output_format(output: str | os.PathLike, fmt: str | None = None) -> OutputFormat:
    """The format written to ``output``: ``fmt`` (a --format name) when given, else the extension's.
    OutputError when the path cannot hold it (naming the supported ones)."""
    raw = os.fspath(output)
    suffix = Path(raw.rstrip("/" + os.sep)).suffix.lower()
    if fmt is not None and fmt not in FORMATS:
        raise InvalidOptions(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if is_folder_target(raw, fmt):
        if fmt not in (None, "png"):
            raise OutputError(f"output '{raw}' is a folder, which holds a PNG sequence: give a file name ending in "
                              f"{' or '.join(FORMATS[fmt].extensions)} for --format {fmt}")
        p = Path(raw).expanduser()
        if (suffix in BY_EXTENSION or suffix == ".png") and not p.is_dir():
            raise OutputError(f"output '{raw}': a PNG sequence is written into a folder; give a folder path "
                              f"(e.g. -o {Path(raw).stem}_frames/), or drop --format png to write {suffix}")
        return FORMATS["png"]
    if not suffix:
        raise OutputError(f"output '{raw}' has no extension: use {SUPPORTED}")
    if fmt is None:
        if suffix not in BY_EXTENSION:
            raise OutputError(f"output '{raw}': {suffix} is not a supported output; use {SUPPORTED}")
        return FORMATS[BY_EXTENSION[suffix]]
    spec = FORMATS[fmt]
    if suffix not in spec.extensions:
        raise OutputError(f"output '{raw}': --format {fmt} ({spec.label}) is written to "
                          f"{' or '.join(spec.extensions)}, not {suffix}; change the extension or the format")
    return spec


def default_extension(fmt: str | None) -> str:
    """'.mp4' for None (H.264), the format's first extension, or '' for a PNG sequence (a folder)."""
    spec = FORMATS.get(fmt or "h264", FORMATS["h264"])
    return spec.extensions[0] if spec.extensions else ""


def crf_problem(spec: OutputFormat | None, crf: int | None) -> str | None:
    """Why ``crf`` does not fit ``spec``'s quality scale (None: it fits, or the format has no scale)."""
    if crf is None:
        return None
    if isinstance(crf, bool) or not isinstance(crf, int):
        return f"--crf must be a whole number, got {crf!r}"
    lo, hi = spec.crf[:2] if spec is not None and spec.crf else CRF_LIMITS
    if not lo <= crf <= hi:
        what = f"for {spec.label} " if spec is not None and spec.crf else ""
        return f"--crf {what}must be between {lo} and {hi} (lower is better quality), got {crf}"
    return None


def crf_for(spec: OutputFormat, crf: int | None) -> int | None:
    """The quality value used for ``spec``: ``crf``, or the format's default; None for formats without one.
    A --crf given for ProRes, GIF or PNG is noted in the log (it does not apply)."""
    if spec.crf is None:
        if crf is not None:
            log.info("--crf does not apply to %s (%s); it is ignored", spec.label,
                     "a fixed-quality profile" if spec.name == "prores" else
                     "lossless" if spec.name == "png" else "a 256-colour palette")
        return None
    return spec.crf[2] if crf is None else crf


def side_crf(side: OutputFormat, main: OutputFormat, crf: int | None) -> int | None:
    """--crf applies to the output; a side video (pose, compare) uses it only when in the same codec."""
    return crf if side.name == main.name else None


def even_size(width: int, height: int, spec: OutputFormat, what: str = "output") -> tuple[int, int]:
    """``(width, height)``, each rounded down to even when ``spec`` needs it (4:2:0/4:2:2 chroma), logged."""
    if not spec.even or (width % 2 == 0 and height % 2 == 0):
        return width, height
    w, h = max(2, width - width % 2), max(2, height - height % 2)
    log.info("%s size %dx%d is odd; %s needs even sides: writing %dx%d", what, width, height, spec.label, w, h)
    return w, h
