"""Client-visible errors: one exception type per RetCode (spec section 8).

Raised anywhere in the gateway, turned into the response envelope in one place (api.app).
Business errors are HTTP 200 with a non-zero RetCode, as in UCloud-family APIs.

    RetCode  HTTP  type                  raised where
    150      503   ServiceUnavailable    Redis or the queue unreachable (api.app, generate.submission)
    150      200   LoadShedding          a queue deeper than OPENPIK_MAX_QUEUE_DEPTH (generate.submission)
    150      500   InternalError         an unexpected exception (api.app)
    160      200   MissingAction         no Action string (api_router)
    161      200   UnsupportedAction     an Action this server does not serve (api_router)
    170      200   MissingSignature      (signature)
    171      200   SignatureMismatch     (signature)
    172      200   MissingPublicKey      (signature)
    173      200   UnknownPublicKey      unknown or disabled key (signature)
    174      200   TimestampOutOfWindow  (signature)
    180      200   TooManyQueued         the key's waiting tasks at OPENPIK_MAX_QUEUED_PER_KEY (generate.submission)
    180      200   RateLimited           the key's token bucket for the action's kind is empty (rate_limit)
    230      200   InvalidParameter      a field breaks a rule; the message names it (wire models, serving)
    230      400   MalformedBody         not a JSON object we can read (body, signature)
    230      413   BodyTooLarge          over OPENPIK_MAX_BODY_BYTES (body)
    250      200   TaskNotFound          unknown and foreign TaskUIDs alike (queries.serving)
    250      404   StreamTaskNotFound    the same, for GET /events: no stream to answer on (events.serving)
"""

from __future__ import annotations


class ApiError(Exception):
    retcode: int
    http_status: int = 200

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ServiceUnavailable(ApiError):
    """Retry later: the queue is unreachable or shedding load."""

    retcode = 150
    http_status = 503


class LoadShedding(ServiceUnavailable):
    """Redis answers, but the queue is deeper than the configured limit."""

    http_status = 200


class InternalError(ServiceUnavailable):
    """Something failed that no rule foresaw; the gateway's log has the traceback."""

    http_status = 500


class MissingAction(ApiError):
    retcode = 160


class UnsupportedAction(ApiError):
    retcode = 161


class MissingSignature(ApiError):
    retcode = 170


class SignatureMismatch(ApiError):
    retcode = 171


class MissingPublicKey(ApiError):
    retcode = 172


class UnknownPublicKey(ApiError):
    retcode = 173


class TimestampOutOfWindow(ApiError):
    retcode = 174


class TooManyQueued(ApiError):
    retcode = 180


class RateLimited(TooManyQueued):
    """Over the key's request rate (OPENPIK_RATE_LIMIT_*, or the key's own); the message says when to retry."""


class InvalidParameter(ApiError):
    """The message names the field and the rule."""

    retcode = 230


class MalformedBody(InvalidParameter):
    """The body is not a JSON object we can read."""

    http_status = 400


class BodyTooLarge(InvalidParameter):
    http_status = 413


class TaskNotFound(ApiError):
    """Unknown and foreign TaskUIDs answer the same, so ids cannot be probed."""

    retcode = 250


class StreamTaskNotFound(TaskNotFound):
    """GET /events answers an unknown or foreign task with HTTP 404 (spec section 11), and the envelope."""

    http_status = 404
