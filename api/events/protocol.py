"""Wire shapes of the event stream (spec section 11): GET /events and the events it sends.

The request is the query string, signed like a JSON body of the same fields (spec section 2):
every value of a query is a string, and a string signs as itself, so a client computes the
signature over ``{"Action": "TaskEvents", "PublicKey": .., "TaskUID": .., "Timestamp": ..}``
exactly as for POST / (an integer Timestamp signs as its digits, the same text as in the URL).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel

from openpik.vocabulary import TaskStatus

ACTION = "TaskEvents"
TASK_UID_FIELD = "TaskUID"
MAX_TASK_UID_CHARS = 64  # as the queries' TaskUID (api.queries.protocol)


class Event(StrEnum):
    """The `event:` names a stream sends."""

    PROGRESS = "progress"
    FINISHED = "finished"
    ERROR = "error"


FINAL_EVENTS = {TaskStatus.FINISHED: Event.FINISHED, TaskStatus.ERROR: Event.ERROR}
"""An ended task's one last event, by its status; its data is the task's ListTasksDetails item."""


class Progress(BaseModel):
    """A `progress` event's data: sent whenever one of these changes while the task has not ended."""

    Progress: int
    QueuePosition: int | None
    """1 for the next task to run, while the task waits; null once it runs."""
    TaskStatus: str
