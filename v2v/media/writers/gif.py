"""Animated GIF: one 256-colour palette for the whole clip, each frame's start rounded to the centisecond."""

from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np

from v2v.errors import InvalidOptions, OutputError
from v2v.media.pyav import AV_ERRORS, write_failed
from v2v.media.timing import frac
from v2v.media.writers.base import CheckedWriter, Spool, rgb_frame

MIN_GIF_DELAY = 2  # centiseconds: browsers play a GIF delay of 0 or 1 cs as 10 cs, so frames never get less


def _centiseconds(t: Fraction) -> int:
    """``t`` seconds to the nearest centisecond (halves up), exactly."""
    return math.floor(Fraction(t) * 100 + Fraction(1, 2))


def gif_schedule(times: list[Fraction], end: Fraction) -> list[tuple[int, int]]:
    """Which frames a GIF shows, and for how long: ``[(frame index, delay in centiseconds), ...]``.

    ``times``: each frame's start (increasing, output seconds); ``end``: where the clip ends. A GIF stores a
    whole number of centiseconds per frame. Each frame's *start* is rounded (not its delay), so the rounding
    errors never add up: every shown frame starts within 0.5 cs (5 ms) of its true time, and the total is
    ``round(100 * end) - round(100 * times[0])`` cs, within 1 cs of the true length (within 0.5 cs, 5 ms, when
    the first frame is at 0, as v2v writes). Browsers play delays under 2 cs as 10 cs, so a frame that would
    show for less than :data:`MIN_GIF_DELAY` is left out and the frame before it shows on (above 50 frames/s
    some frames drop; the timing stays right). A lone frame shorter than 2 cs shows for 2 cs. (GIF cannot hold
    one delay over 655.35 s.)
    """
    if not times:
        return []
    cs = [_centiseconds(t) for t in times]
    c_end = _centiseconds(end)
    kept = [0]
    for i in range(1, len(cs)):
        if cs[i] - cs[kept[-1]] >= MIN_GIF_DELAY:
            kept.append(i)
    while len(kept) > 1 and c_end - cs[kept[-1]] < MIN_GIF_DELAY:
        kept.pop()  # the last frame would flash: the one before it shows to the end
    starts = [cs[i] for i in kept] + [max(c_end, cs[kept[-1]] + MIN_GIF_DELAY)]
    return [(i, starts[k + 1] - starts[k]) for k, i in enumerate(kept)]


class GifWriter(CheckedWriter):
    """An animated GIF with one 256-colour palette for the whole clip (FFmpeg's palettegen over every frame,
    then paletteuse with Sierra-2-4A error diffusion, redrawing only the changed rectangle of each frame).

    Frames are spooled to an unnamed temp file as they come (RAM stays bounded) and encoded at ``close``.
    Delays follow :func:`gif_schedule`. ``loop``: how many times it plays, 0 = forever (the NETSCAPE loop count
    written is ``loop - 1``, which players read as repeats after the first play; 1 writes no loop block).
    ``end``: output time where the last frame stops (default: last time + 1/fps); may be changed before close.
    """

    def __init__(self, path, width: int, height: int, *, fps, end=None, loop: int = 0):
        super().__init__(path, width, height)
        if not isinstance(loop, int) or isinstance(loop, bool) or not 0 <= loop <= 65536:
            raise InvalidOptions(f"gif loop must be 0 (forever) or a play count up to 65536, got {loop!r}")
        if not self.path.parent.is_dir():
            raise OutputError(f"output folder does not exist: {self.path.parent}; create it first")
        self.fps = frac(fps)
        self.end = frac(end) if end is not None else None
        self.loop = loop
        self.times: list[Fraction] = []
        self._spool = Spool(self.path.parent, (height, width, 3))

    def write(self, image: np.ndarray, time) -> None:
        """Keep one RGB uint8 (H, W, 3) frame shown from ``time`` (output seconds)."""
        t = self._check(image, time)
        self._spool.append(image)
        self.times.append(t)

    def close(self) -> None:
        if self._closed:
            return
        try:
            if not self.times:
                raise OutputError(f"no frames were written to {self.path.name}; nothing to encode")
            end = self.end if self.end is not None else self.times[-1] + 1 / self.fps
            self._encode(gif_schedule(self.times, end))
        except OutputError:
            self.abort()
            raise
        except AV_ERRORS as e:
            self.abort()
            raise OutputError(write_failed(f"writing {self.path.name}", e)) from e
        self._closed = True
        self._spool.close()

    def _frame(self, index: int, pts: int):
        f = rgb_frame(self._spool.read(index))
        f.pts = pts
        f.time_base = Fraction(1, 100)
        return f

    def _pull(self, graph) -> list:
        out = []
        while True:
            try:
                out.append(graph.vpull())
            except (av.error.BlockingIOError, av.error.EOFError):
                return out

    def _encode(self, schedule: list[tuple[int, int]]) -> None:
        tb = Fraction(1, 100)
        starts = np.cumsum([0] + [d for _, d in schedule])
        # pass 1: one palette from every shown frame
        g = av.filter.Graph()
        src = g.add_buffer(width=self.width, height=self.height, format="rgb24", time_base=tb)
        gen = g.add("palettegen", "max_colors=256:reserve_transparent=0:stats_mode=full")
        sink = g.add("buffersink")
        src.link_to(gen)
        gen.link_to(sink)
        g.configure()
        for (i, _), pts in zip(schedule, starts):
            src.push(self._frame(i, int(pts)))
        src.push(None)
        palette = g.vpull()
        # pass 2: map each frame onto it and encode
        g = av.filter.Graph()
        src = g.add_buffer(width=self.width, height=self.height, format="rgb24", time_base=tb)
        pal = g.add_buffer(width=palette.width, height=palette.height, format=palette.format.name, time_base=tb)
        use = g.add("paletteuse", "dither=sierra2_4a:diff_mode=rectangle")
        sink = g.add("buffersink")
        src.link_to(use, 0, 0)
        pal.link_to(use, 0, 1)
        use.link_to(sink)
        g.configure()
        palette.pts = 0
        pal.push(palette)
        pal.push(None)
        loop = "0" if self.loop == 0 else "-1" if self.loop == 1 else str(self.loop - 1)  # muxer: -1 = no loop block
        options = {"loop": loop, "final_delay": str(schedule[-1][1])}
        with av.open(str(self.path), mode="w", format="gif", options=options) as out:
            st = out.add_stream("gif", rate=self.fps)
            st.width, st.height, st.pix_fmt = self.width, self.height, "pal8"
            st.time_base = tb
            st.codec_context.time_base = tb
            for (i, _), pts in zip(schedule, starts):
                src.push(self._frame(i, int(pts)))
                for f in self._pull(g):
                    out.mux(st.encode(f))
            src.push(None)
            for f in self._pull(g):
                out.mux(st.encode(f))
            out.mux(st.encode(None))

    def abort(self) -> None:
        self._closed = True
        self._spool.close()
