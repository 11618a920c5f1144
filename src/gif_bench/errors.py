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
