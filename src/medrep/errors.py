"""One exception type for bad input, so the CLI can turn it into a clear message and exit 2."""

from __future__ import annotations

from pathlib import Path


class MedrepError(ValueError):
    """Bad input: a file, a recipe field or an argument that medrep cannot use.

    ``where`` names the file or field at fault; it leads the message so that a user reading a
    log line sees what to fix first.
    """

    def __init__(self, message: str, where: str | Path | None = None):
        self.where = None if where is None else str(where)
        super().__init__(f"{self.where}: {message}" if self.where else message)


class RecipeError(MedrepError):
    """A recipe key or value that is unknown or invalid."""


class DataError(MedrepError):
    """A data file or manifest row that cannot be used."""
