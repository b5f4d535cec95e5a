"""The gateway's exception tree.

Foreign exceptions (httpx, aiohttp, SQLAlchemy, pydantic) are translated into
this tree once, at the boundary where they occur; everything above the
boundary speaks only these types. The HTTP mapping lives in the API layer.

    GatewayError
     ├── ConfigError                 the configuration cannot be used
     ├── MigrationsNotFound          the installation has no usable migration scripts
     ├── ClientError                 the caller's fault (4xx)
     │    ├── InvalidRequest         400, names the offending field
     │    ├── Unauthorized           401
     │    ├── Forbidden              403, the admin API is disabled
     │    ├── NotFound               404, unknown deployment, version, route or record
     │    ├── Conflict               409, the state changed or forbids the change
     │    ├── PayloadTooLarge        413
     │    ├── RateLimited            429, too many calls or failed attempts
     │    └── Overloaded             503, too many calls in flight
     ├── UpstreamError               the provider's fault, or a refusal it relays
     │    ├── UpstreamConnectError   502, connection refused or reset
     │    ├── UpstreamTimeout        504, the call's deadline passed
     │    ├── UpstreamBadResponse    502, not a valid answer
     │    └── UpstreamStatusError    the provider answered an error status
     └── StoreError
          ├── StoreUnavailable       the database cannot be reached now; retry later
          └── StoreRejected          the database refused these values; retrying won't help
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose.

    Carries what OpenAI's error body needs: a message safe to show the
    client, a type, an optional parameter name and code, and an HTTP status.
    """

    status = 500
    error_type = "server_error"
    code: str | None = None
    retry_after: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code


class ConfigError(GatewayError):
    """The configuration is invalid; the message names the key path."""


class MigrationsNotFound(GatewayError):
    """No migration scripts, or no single head among them: the package is incomplete."""


class ClientError(GatewayError):
    """A request the gateway refuses; the message says what to fix."""

    status = 400
    error_type = "invalid_request_error"


class InvalidRequest(ClientError):
    status = 400
    code = "invalid_request"


class Unauthorized(ClientError):
    status = 401
    error_type = "authentication_error"
    code = "invalid_api_key"


class Forbidden(ClientError):
    status = 403
    error_type = "permission_error"
    code = "forbidden"


class NotFound(ClientError):
    status = 404
    code = "not_found"


class Conflict(ClientError):
    """Another change won the race (stale revision), or the rollout's state forbids this one."""

    status = 409
    code = "conflict"


class RateLimited(ClientError):
    status = 429
    error_type = "rate_limit_error"
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = str(retry_after)


class PayloadTooLarge(ClientError):
    status = 413
    code = "payload_too_large"


class Overloaded(ClientError):
    status = 503
    error_type = "server_error"
    code = "gateway_overloaded"
    retry_after = "1"


class UpstreamError(GatewayError):
    """The upstream call failed; `kind` is a fixed label for metrics and records."""

    status = 502
    kind = "upstream"
    error_type = "upstream_error"

    @property
    def code_or_kind(self) -> str:
        return self.code or f"upstream_{self.kind}"


class UpstreamConnectError(UpstreamError):
    kind = "connect"


class UpstreamTimeout(UpstreamError):
    status = 504
    kind = "timeout"


class UpstreamBadResponse(UpstreamError):
    kind = "bad_response"


class UpstreamStatusError(UpstreamError):
    """The provider answered with an error status.

    `status` is what the client sees: the provider's 4xx where the client can
    act on it (400, 404, 413, 422, 429), 502 otherwise. `retry_after` is relayed
    on 429.
    """

    kind = "status"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        upstream_status: int,
        error_type: str = "upstream_error",
        code: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.status = status
        self.upstream_status = upstream_status
        self.error_type = error_type
        self.retry_after = retry_after

    @property
    def retryable(self) -> bool:
        return self.upstream_status in (500, 502, 503, 504, 529)


class StoreError(GatewayError):
    """A database operation failed."""


class StoreUnavailable(StoreError):
    """The database could not be reached or timed out; the operation may be retried."""

    status = 503
    code = "store_unavailable"
    retry_after = "5"


class StoreRejected(StoreError):
    """The database refused the values (constraint, type); the same write will fail again."""
