"""What can fail, by kind: every error pdiff raises on purpose derives from PdiffError.

An entry point catches PdiffError and prints its one-line message; anything else is a bug and keeps
its traceback. This module imports nothing, so every layer (configuration included) may import it.
"""

from __future__ import annotations


class PdiffError(Exception):
    """A failure pdiff explains in one line: the message names the value, file or job, and what to
    do."""


class ConfigError(PdiffError, ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


class DataError(ConfigError):
    """A data file or folder that is absent, unreadable or malformed; the message names it and the
    rule. A ConfigError too: the data.* setting that names the file is what to change."""


class StorageError(PdiffError, OSError):
    """A write that the disk (or the user's quota there) has no room for, or a folder pdiff may not
    write into."""


class ZooError(PdiffError, RuntimeError):
    """A zoo on disk that is missing, incomplete, corrupted or inconsistent with the config."""


class GeneratorError(ZooError):
    """Generator files on disk that are missing, incomplete or corrupted."""


class TrainingError(PdiffError, RuntimeError):
    """Training or sampling produced values that cannot be used."""


class TrainingDiverged(TrainingError):
    """Training produced non-finite values: the message names the knob to change (a learning rate,
    usually)."""


class GeneratedNotFinite(TrainingError):
    """The generated parameter vectors hold NaN or inf: nothing about them can be measured."""


class ChainFailed(PdiffError, RuntimeError):
    """A SLURM job of the chain did not complete; the message names it, its SLURM state and its log."""


class RendezvousError(PdiffError, RuntimeError):
    """The ranks of a job cannot meet: a host name that does not resolve, a rendezvous address no
    rank can reach, a port in use. The message names the host and the setting to change."""


def one_line(error: BaseException) -> str:
    """`error` (a library's, caught to be explained) as `Type: message` on one line, for a
    PdiffError's message."""
    return " ".join(f"{type(error).__name__}: {error}".split())
