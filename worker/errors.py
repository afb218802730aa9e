"""Errors a worker reports on a task, one type per TaskErrorCode (spec section 8)."""
from __future__ import annotations


class TaskError(Exception):
    """Base: a task ended in error; ``code`` is the TaskErrorCode the client sees."""

    code = 1099


class ModelLoadError(TaskError):
    code = 1001


class GpuOutOfMemoryError(TaskError):
    code = 1002


class TimeLimitError(TaskError):
    code = 1003


class CancelledError(TaskError):
    code = 1004


class InvalidInputError(TaskError):
    code = 1005
