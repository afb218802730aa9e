"""Errors a worker reports on a task: one type per TaskErrorCode (spec section 8).

    code  type                 raised where
    1001  ModelLoadError       a catalog or annotator file is missing or unreadable (pipeline_cache, controlnet, engine)
    1002  GpuOutOfMemoryError  CUDA out of memory again after one retry with half the micro-batch (oom),
                               or mapped from torch's error (task_error)
    1003  TimeLimitError       past the soft or hard time limit, mapped from billiard's errors (task_error)
    1004  TaskCancelledError   CancelTask asked a running task to stop (tasks: its progress hook); the
                               gateway ends a queued one itself (openpik.vocabulary.CANCELLED_ERROR_CODE)
    1005  InvalidInputError    an input image expired or unreadable, or one a preprocessor cannot read (tasks, engine)
    1099  WorkerLostError      the task stopped its worker OPENPIK_MAX_ATTEMPTS times (tasks)
    1099  InternalTaskError    anything else: ours, logged with its traceback (task_error)

Every way a task ends in error goes through ``task_error``, so the record's code always
comes from this table.
"""

from __future__ import annotations

from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from openpik.vocabulary import CANCELLED_ERROR_CODE, CANCELLED_MESSAGE


class TaskError(Exception):
    """A task ended in error; ``code`` is the TaskErrorCode the client sees."""

    code: int


class ModelLoadError(TaskError):
    code = 1001


class GpuOutOfMemoryError(TaskError):
    code = 1002


class TimeLimitError(TaskError):
    code = 1003


class TaskCancelledError(TaskError):
    code = CANCELLED_ERROR_CODE

    def __init__(self, message: str = CANCELLED_MESSAGE):
        super().__init__(message)


class InvalidInputError(TaskError):
    code = 1005


class WorkerLostError(TaskError):
    code = 1099


class InternalTaskError(TaskError):
    code = 1099


# Exceptions raised by the libraries under a task -> the error the client sees. Named by
# "module.QualName" where importing the module here would cost (torch: the stub engine runs
# without it).
FOREIGN_ERRORS: dict[type[BaseException] | str, tuple[type[TaskError], str]] = {
    "torch.OutOfMemoryError": (GpuOutOfMemoryError, "out of GPU memory: ask for fewer or smaller images"),
    SoftTimeLimitExceeded: (TimeLimitError, "the task ran past this server's time limit"),
    TimeLimitExceeded: (TimeLimitError, "the task ran past this server's hard time limit"),
}


def task_error(exc: BaseException) -> TaskError:
    """The TaskError a task ends with when ``exc`` stopped it."""
    if isinstance(exc, TaskError):
        return exc
    return foreign_error(exc) or InternalTaskError(
        f"internal error ({type(exc).__name__}); the operator's logs have the details"
    )


def foreign_error(exc: BaseException) -> TaskError | None:
    """The TaskError FOREIGN_ERRORS maps ``exc`` to, or None when the table does not know it
    (callers that classify failures themselves let these through untouched)."""
    for cls in type(exc).__mro__:
        known = FOREIGN_ERRORS.get(cls) or FOREIGN_ERRORS.get(f"{cls.__module__}.{cls.__qualname__}")
        if known is not None:
            error_type, message = known
            return error_type(message)
    return None
