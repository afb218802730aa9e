"""Every way a task can stop maps to its TaskErrorCode through worker.errors' one table."""

from __future__ import annotations

import pytest
import torch
from billiard.exceptions import SoftTimeLimitExceeded, TimeLimitExceeded

from worker.errors import (
    GpuOutOfMemoryError,
    InternalTaskError,
    InvalidInputError,
    TimeLimitError,
    WorkerLostError,
    task_error,
)


@pytest.mark.parametrize(
    ("raised", "expected_type", "code"),
    [
        (torch.cuda.OutOfMemoryError("CUDA out of memory"), GpuOutOfMemoryError, 1002),
        (SoftTimeLimitExceeded(), TimeLimitError, 1003),
        (TimeLimitExceeded(660), TimeLimitError, 1003),
        (KeyError("unet"), InternalTaskError, 1099),
    ],
)
def test_foreign_errors_map_to_their_task_error(raised, expected_type, code):
    error = task_error(raised)
    assert type(error) is expected_type and error.code == code
    assert str(error)  # the message the client reads


def test_internal_errors_name_the_exception_type_only():
    assert str(task_error(KeyError("a secret path"))) == (
        "internal error (KeyError); the operator's logs have the details"
    )


@pytest.mark.parametrize(("error", "code"), [(InvalidInputError("gone"), 1005), (WorkerLostError("3 times"), 1099)])
def test_task_errors_pass_through_unchanged(error, code):
    assert task_error(error) is error and error.code == code
