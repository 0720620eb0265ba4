"""The whole restyle (tiny models) over the kinds of input creators bring, judged by ffprobe.

For each: as many output frames as kept input frames, per-frame times equal to the input's (relative to the
first, within half a frame), audio exactly when the input has it with the same duration and offset (within a
frame), sizes multiples of 8 with the displayed aspect ratio (within 2%), the input untouched.
"""

from __future__ import annotations

import hashlib
from fractions import Fraction

import pytest

import media
import v2v
from test_video import CASES, judge

pytestmark = pytest.mark.skipif(not media.HAVE_FFMPEG, reason="ffmpeg/ffprobe make the inputs and judge outputs")

PIPELINE_CASES = ["mp4_h264_aac", "mov_prores_pcm_23976", "webm_vp9_opus", "mkv_vfr", "fps60", "odd_size_444",
                  "rotation90_phone", "audio_delayed_0.7", "aac_5.1_copied", "pcm_5.1_transcoded", "no_audio",
                  "one_frame", "name_spaces_unicode", "anamorphic_sar"]


@pytest.fixture(scope="module")
def restyler(tiny_models):
    return v2v.Restyler(models="tiny", show_progress=False)


@pytest.mark.parametrize("case", PIPELINE_CASES)
def test_restyle_keeps_frames_times_audio(case, tmp_path, restyler):
    spec = dict(CASES[case])
    src = media.make_video(tmp_path / spec.pop("name"), **spec)
    before = hashlib.sha256(src.read_bytes()).hexdigest()
    r = restyler.restyle(src, prompt="claymation astronaut")
    assert r.output == src.with_name(f"{src.stem}.restyled.mp4").resolve()
    fps = Fraction(str(spec["fps"]))
    judge(src, r.output, fps=fps)
    assert min(r.width, r.height) >= 120  # the tiny set's default short side (128, aspect kept within 2%)
    assert hashlib.sha256(src.read_bytes()).hexdigest() == before
    settings = r.output.with_suffix(".json")  # the run's settings record (v2v/settings.py)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([src.name, r.output.name, settings.name])
