"""The errors that are the user's to fix: the CLIs print them as one line, never a traceback.

Every module raises one of these for a bad value, a missing file or a diverged run; anything
else is a bug and keeps its traceback.
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake or condition the user can fix; its message is one line saying how."""


class ConfigError(UserError, ValueError):
    """A bad configuration value, key or file."""


class DataError(UserError, RuntimeError):
    """A dataset that cannot be loaded: one line saying where the files must go."""


class CheckpointError(UserError, RuntimeError):
    """No usable checkpoint: one line naming the file and what is wrong with it."""


class NonFiniteLossError(UserError, RuntimeError):
    """The loss became NaN or infinite; the message names the step."""


class DataFileError(DataError, ConfigError):
    """Files of the user's own dataset that cannot be used as they are (an empty class folder, an
    unreadable image...): bad input, as a bad config value is (exit 2)."""
