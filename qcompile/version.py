"""The package version, kept in one place so artifacts and the CLI agree."""

__version__ = "0.1.0"
