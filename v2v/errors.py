"""Named error types. Each message is one line that says what is wrong and what to do.

Exit codes (the CLI returns ``error.exit_code``):

====  ===================================================================
0     success
1     unexpected internal error (a bug: rerun with --debug and report it)
2     bad command line or options (``InvalidOptions``)
3     the input cannot be used (missing, empty, not a video, corrupt, no video stream)
4     the output cannot be written (folder not writable, output equals input, disk full)
5     a model cannot be found or loaded
6     the device ran out of memory
7     a batch's workers cannot run (Ray missing, the cluster unreachable, no worker could start)
130   interrupted (Ctrl-C)
141   the output's reader went away (``v2v models | head``): stopped quietly
====  ===================================================================
"""

from __future__ import annotations


class V2VError(Exception):
    """Base class of every error v2v raises on purpose."""

    exit_code = 1


class InvalidOptions(V2VError, ValueError):
    """An option, or a combination of options, is invalid."""

    exit_code = 2


class InputError(V2VError):
    """The input video cannot be used."""

    exit_code = 3


class InputNotFound(InputError, FileNotFoundError):
    """The input path does not exist or is not a file."""


class InputNotReadable(InputError, PermissionError):
    """The input (or a folder on its way) may not be read: its permissions."""


class EmptyInput(InputError):
    """The input file has zero bytes."""


class VideoDecodeError(InputError):
    """The input is not a readable video (random bytes, text, truncated file...)."""


class NoVideoStream(InputError):
    """The input holds no video stream (an audio-only file, for example)."""


class OutputError(V2VError):
    """The output cannot be written."""

    exit_code = 4


class ModelNotFound(V2VError):
    """A model is missing (offline and not cached, wrong path, wrong repo)."""

    exit_code = 5


class ModelLoadError(V2VError):
    """A model file exists but is not what was expected (wrong architecture, corrupt file)."""

    exit_code = 5


class OutOfMemory(V2VError):
    """The device ran out of memory."""

    exit_code = 6


class ClusterError(V2VError):
    """``v2v batch`` cannot run its workers: Ray is not installed, the cluster cannot be reached, or no worker
    could start."""

    exit_code = 7


class Interrupted(V2VError, KeyboardInterrupt):
    """The run was interrupted (Ctrl-C); no partial output was left behind."""

    exit_code = 130


EXIT_CODES = {
    0: "success",
    1: "unexpected internal error (rerun with --debug and report it)",
    2: "bad command line or options",
    3: "the input cannot be used (missing, empty, not a video, corrupt, no video stream)",
    4: "the output cannot be written (folder not writable, output equals input, disk full)",
    5: "a model cannot be found or loaded",
    6: "the device ran out of memory",
    7: "a batch's workers cannot run (Ray missing, the cluster unreachable, no worker could start)",
    130: "interrupted (Ctrl-C)",
    141: "the reader of the output went away (e.g. `| head`)",
}


def one_line(err: BaseException) -> str:
    """An exception's message on one line (its type's name when it has none), for messages and error files."""
    return " ".join(str(err).split()) or type(err).__name__
