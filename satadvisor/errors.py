"""Error hierarchy: one type per failure family, each message one line naming the problem and the fix.

The CLI turns every :class:`SatAdvisorError` into that one line on stderr and exit code 2.
"""

from __future__ import annotations


class SatAdvisorError(Exception):
    """Base of every error satadvisor raises on purpose (bad input, unusable files, faults)."""


class UsageError(SatAdvisorError):
    """An option or argument value that cannot be used (out of range, unknown name, bad --set)."""


class ModelFileError(SatAdvisorError):
    """A model file (or built-in name) that cannot be loaded or does not follow the contract."""


class ModelBuildError(SatAdvisorError):
    """``build_model`` raised, or built a model whose output does not fit the dataset."""


class DatasetError(SatAdvisorError):
    """Unknown dataset, or a data root without the expected files."""


class UnsupportedModelError(SatAdvisorError):
    """A model the receptive-field analysis cannot trace."""


class TrainingError(SatAdvisorError):
    """A training run that could not start or continue (e.g. out of memory twice)."""


class StorageError(SatAdvisorError):
    """An Optuna storage that is unreachable, corrupt, foreign or of an unknown scheme."""


class StudyError(SatAdvisorError):
    """A study that cannot continue as asked (other search space, budget already reached)."""


class OutputError(SatAdvisorError):
    """An output directory or file that cannot be written."""


def reraised_line(exc: BaseException) -> str:
    """The line of ``exc``'s message that names the problem, also after a DataLoader worker.

    A DataLoader re-raises a worker's exception in the main process with the message
    "Caught X in DataLoader worker process N." followed by the worker's traceback, whose last
    line is "module.X: <the original message>"; that original message is returned.
    """
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    if not lines[0].startswith("Caught "):
        return lines[0]
    last = lines[-1]
    name = f"{type(exc).__module__}.{type(exc).__name__}: "
    return last[len(name) :] if last.startswith(name) else last
