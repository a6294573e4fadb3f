"""Domain refusals: each names the field and the rule, and maps to one HTTP status."""

from __future__ import annotations


class IWRSError(Exception):
    """A refusal the user can act on: `field` is the input at fault, `rule` the rule it broke."""

    status = 400
    title = "Request refused"

    def __init__(self, message: str, *, field: str | None = None, rule: str | None = None) -> None:
        super().__init__(message)
        self.message, self.field, self.rule = message, field, rule

    def problems(self) -> list[dict[str, str]]:
        if self.field is None:
            return []
        return [{"field": self.field, "rule": self.rule or "invalid", "message": self.message}]


class InvalidInput(IWRSError):
    status = 422
    title = "Invalid input"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        rule: str | None = None,
        errors: list[dict[str, str]] | None = None,
    ) -> None:
        super().__init__(message, field=field, rule=rule)
        self.errors = errors

    def problems(self) -> list[dict[str, str]]:
        return self.errors if self.errors is not None else super().problems()


class NotFound(IWRSError):
    status = 404
    title = "Not found"


class Forbidden(IWRSError):
    status = 403
    title = "Forbidden"


class Conflict(IWRSError):
    status = 409
    title = "Conflict"


class AuthenticationFailed(IWRSError):
    status = 401
    title = "Authentication failed"


class AccountLocked(AuthenticationFailed):
    title = "Account locked"


class MalformedRequest(IWRSError):
    status = 400
    title = "Malformed request"


class PayloadTooLarge(IWRSError):
    status = 413
    title = "Request too large"


class UnsupportedMediaType(IWRSError):
    status = 415
    title = "Unsupported media type"


class Busy(IWRSError):
    """A bounded wait ran out (a row lock held by another request, SQLite's write lock, a
    deadlock): nothing was saved, the transaction rolled back, and the same request may be
    retried after `retry_after` seconds (the Retry-After header). Rule `busy` (iwrs.locking)."""

    status = 503
    title = "Busy"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message, field="request", rule="busy")
        self.retry_after = retry_after
