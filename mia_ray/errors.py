"""Errors a user can act on: each message is one line naming the key or file and what is allowed."""


class MiaRayError(ValueError):
    """Base class: bad input, reported before any compute."""


class ConfigError(MiaRayError):
    """A configuration key has a value that is not allowed."""


class DataError(MiaRayError):
    """A data file or folder cannot be used as an image pool."""
