"""The service's errors, each with the HTTP status and error code the API answers for it."""

from __future__ import annotations

__all__ = [
    "Conflict",
    "InvalidRequest",
    "NotFound",
    "ServiceError",
    "UpstreamError",
    "UpstreamUnavailable",
]


class ServiceError(Exception):
    status = 400
    code = "invalid_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status


class InvalidRequest(ServiceError):
    status = 400
    code = "invalid_request"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class UpstreamError(ServiceError):
    """WeChat refused the request for good (the err_code is in the message)."""

    status = 502
    code = "upstream_rejected"


class UpstreamUnavailable(ServiceError):
    """WeChat could not be reached or answered SYSTEMERROR: retry later (same Idempotency-Key)."""

    status = 503
    code = "upstream_unavailable"
