"""Importing this module registers the built-in readers."""

from . import sysu, regdb, llcm, folder  # noqa: F401
