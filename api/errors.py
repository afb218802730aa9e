"""Client-visible errors: one exception type per RetCode family (spec section 8).

Raised anywhere in the gateway, turned into the response envelope in one place (api.app).
Business errors are HTTP 200 with a non-zero RetCode, as in UCloud-family APIs.
"""
from __future__ import annotations


class ApiError(Exception):
    retcode: int = 230
    http_status: int = 200

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


class ServiceUnavailable(ApiError):
    """150: the queue is unreachable or shedding load; retry later."""

    retcode = 150
    http_status = 503


class LoadShedding(ServiceUnavailable):
    """150 while Redis answers: the queue is deeper than the configured limit."""

    http_status = 200


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


class InvalidParameter(ApiError):
    """230: the message names the field and the rule."""

    retcode = 230


class MalformedBody(InvalidParameter):
    """230 with HTTP 400: the body is not a JSON object we can read."""

    http_status = 400


class BodyTooLarge(InvalidParameter):
    http_status = 413


class TaskNotFound(ApiError):
    """250: unknown and foreign TaskUIDs answer the same, so ids cannot be probed."""

    retcode = 250
