"""Exception hierarchy. Every message names what failed, why, and how to fix it."""

from __future__ import annotations


class DatasetAgentError(Exception):
    """Root of every error this package raises on purpose."""

    exit_code = 1


class UsageError(DatasetAgentError):
    """The user's input (request, spec, flags, paths) cannot be used as given."""

    exit_code = 2


class SpecError(UsageError):
    """A request or spec is unparseable, incomplete or contradicts itself."""


class ConfigError(UsageError):
    """A configuration value or a registry name is wrong."""


class SourceError(DatasetAgentError):
    """A source of images cannot be read."""


class NoLabelerError(UsageError):
    """No available labeler can serve the spec."""


class StoreError(DatasetAgentError):
    """The run store is missing, from another run, or damaged."""


class BackendError(DatasetAgentError):
    """A model backend failed or is not installed."""


class ExportError(DatasetAgentError):
    """An export could not be written."""
