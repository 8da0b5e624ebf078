"""Errors that the training CLI reports as one clear line instead of a traceback."""


class UserError(ValueError):
    """Bad input from the user: a config value, a data folder, a file. The message says the fix."""


class ConfigError(UserError):
    """An unknown preset, an unknown `--set` key or an invalid config value."""


class DataError(UserError):
    """A missing data folder, an image without its mask, a corrupt or unreadable file."""
