"""The errors a run reports in one paragraph, without a traceback
(`cram_keras.experiments.cli` maps each to its exit code)."""

from cram_keras.training import run_lock


class UsageError(ValueError):
    """A bad flag, config or run directory (exit code 2)."""


class RunDirectoryBusy(UsageError, run_lock.DirectoryBusy):
    """Another running process holds the run directory (exit code 2): one
    paragraph naming it (`cram_keras.training.run_lock`)."""

    def __init__(self, message, directory=None, holder=None):
        run_lock.DirectoryBusy.__init__(self, message, directory, holder)
