"""Exceptions raised by the dataset loaders."""


class DatasetError(ValueError):
    """A dataset file is missing, truncated or not what it claims to be.

    Raised by the loaders in `cram_keras.data` with a message that names the
    file, says what was wrong and what was found, and says what to do (most
    often: re-download the file, or point `--data-dir` at the right folder).
    It subclasses `ValueError`, so code that already catches bad input
    values keeps working.
    """
