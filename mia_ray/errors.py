"""Errors a user can act on: each message is one line naming the key or file and what is allowed."""

import argparse


class MiaRayError(ValueError):
    """Base class: bad input, reported before any compute."""


class ConfigError(MiaRayError):
    """A configuration key has a value that is not allowed."""


class DataError(MiaRayError):
    """A data file or folder cannot be used as an image pool."""


class OneLineParser(argparse.ArgumentParser):
    """argparse whose usage errors (an unknown flag, ``--price-per-hour abc``, a missing argument) are one line
    and exit 2, as every other refusal of the commands: argparse's own print the whole usage block first."""

    def error(self, message: str):
        self.exit(2, f"error: {message}; see {self.prog} --help\n")
