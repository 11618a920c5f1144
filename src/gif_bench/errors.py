"""Errors that are the user's to fix: reported as one line, with no traceback."""


class UserError(Exception):
    """A problem with the user's input or environment, explained in one line."""


class ConfigError(UserError):
    """An invalid configuration value; the message names the key and what is allowed."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key


class DatasetUnavailable(UserError):
    """A dataset is neither on disk nor downloadable."""


class RunFailed(Exception):
    """A run that started and failed (a diverging solver, a numerical error): its ``failed`` row
    is written, and the message gives the error and the row's path. The original exception is its
    ``__cause__`` (its traceback shown with ``HYDRA_FULL_ERROR=1``)."""


class TrainingDiverged(UserError):
    """Training reached a non-finite loss: the recipe is unstable on this data (its learning
    rate, most often). Nothing is cached."""


class EditDiverged(Exception):
    """An edit reached a non-finite loss (an unlearner at too high a rate): the method's result
    at its settings, not a problem with the user's recipe. The run fails (its ``failed`` row says
    so) and the sweep goes on; a tuning trial fails and its study goes on."""


class WithheldData(Exception):
    """A tuning trial read what tuning must never read: a test split or the oracle
    (:mod:`gif_bench.tuning`). A defect of the method, task or metric that read it."""
