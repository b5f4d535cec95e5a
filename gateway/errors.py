"""The gateway's exception tree.

Foreign exceptions (httpx, aiohttp, SQLAlchemy, pydantic) are translated into
this tree once, at the boundary where they occur (`gateway.upstream` for the
upstream transport, `gateway.store.engine` for the database, `gateway.config`
for the configuration), keeping the foreign exception as `__cause__`;
everything above the boundary speaks only these types. The errors carry no
HTTP status: the one mapping to HTTP answers is `gateway.api.errors`.

    GatewayError
     ├── ConfigError                 the configuration cannot be used
     ├── MigrationsNotFound          the installation has no usable migration scripts
     ├── ClientError                 the caller's fault; the message says what to fix
     │    ├── InvalidRequest         names the offending field
     │    ├── Unauthorized           no or a wrong token
     │    ├── Forbidden              the admin API is disabled
     │    ├── NotFound               unknown deployment, version, route or record
     │    ├── Conflict               the state changed or forbids the change
     │    ├── PayloadTooLarge        the body exceeds the limit
     │    └── RateLimited            too many calls or failed attempts; retry after `retry_after`
     ├── Overloaded                  the gateway's own limit: too many calls in flight
     ├── UpstreamError               the provider's fault, or a refusal it relays
     │    ├── UpstreamConnectError   connection refused or reset
     │    ├── UpstreamTimeout        the call's deadline passed
     │    ├── UpstreamBadResponse    not a valid answer
     │    ├── ShuttingDown           the gateway ended the call: its shutdown grace ran out
     │    └── UpstreamStatusError    the provider answered an error status (the operator's problem)
     │         ├── UpstreamRefused   ... refusing the caller's request (bad request, too large, rate limit)
     │         └── UpstreamOverloaded ... saying it is overloaded; retry later
     └── StoreError
          ├── StoreUnavailable       the database cannot be reached now; retry later
          └── StoreRejected          the database refused these values; retrying won't help
"""

from __future__ import annotations

from collections.abc import Mapping


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose.

    `message` is safe to show the client (no secrets, no stored content);
    `param` names the offending field, if any; `code` is a fixed
    machine-readable reason (also the label of refusal metrics);
    `retry_after` is the number of seconds to wait, as text, when waiting helps.
    """

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


class InvalidRequest(ClientError):
    code = "invalid_request"


class Unauthorized(ClientError):
    code = "invalid_api_key"


class Forbidden(ClientError):
    code = "forbidden"


class NotFound(ClientError):
    code = "not_found"


class Conflict(ClientError):
    """Another change won the race (stale revision), or the rollout's state forbids this one."""

    code = "conflict"


class RateLimited(ClientError):
    """Too many calls (or failed authentications) from one client; `retry_after` seconds."""

    code = "rate_limited"

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = str(retry_after)


class PayloadTooLarge(ClientError):
    code = "payload_too_large"


class Overloaded(GatewayError):
    """The gateway is at its concurrency limit: not the caller's fault; retry shortly."""

    code = "gateway_overloaded"
    retry_after = "1"


class UpstreamError(GatewayError):
    """The upstream call failed; `kind` is a fixed label for metrics and records."""

    kind = "upstream"

    @property
    def code_or_kind(self) -> str:
        """`code` when the provider gave one, else `upstream_<kind>`."""
        return self.code or f"upstream_{self.kind}"


class UpstreamConnectError(UpstreamError):
    kind = "connect"


class UpstreamTimeout(UpstreamError):
    kind = "timeout"


class UpstreamBadResponse(UpstreamError):
    kind = "bad_response"


class ShuttingDown(UpstreamError):
    """The gateway is stopping and ended this call before the upstream finished it.

    An UpstreamError so that every API surface ends the call the way it ends
    an upstream failure: an error answer before the first byte, an SSE error
    event after it. Not the provider's fault: never counted as its error.
    """

    kind = "shutdown"
    code = "gateway_shutting_down"
    retry_after = "1"


class UpstreamStatusError(UpstreamError):
    """The provider answered with an error status that is the operator's problem.

    The gateway's key refused, the version's model unknown, a server fault:
    the caller sees a bad gateway. `upstream_status` is what the provider
    answered.
    """

    kind = "status"

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        code: str | None = None,
        retry_after: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, code=code, param=param)
        self.upstream_status = upstream_status
        self.retry_after = retry_after
        # Upstream response headers the client gets too (rate limits, retry hints).
        self.headers: Mapping[str, str] = dict(headers or {})

    @property
    def retryable(self) -> bool:
        """Whether the provider may answer differently if asked again (5xx, Anthropic's 529)."""
        return self.upstream_status in (500, 502, 503, 504, 529)


class UpstreamRefused(UpstreamStatusError):
    """The provider refused the caller's request (400, 413, 422, 429): relayed as the provider answered.

    `error_type` is the provider's error type (OpenAI's `type` field);
    `code` and `param` are the provider's, null included; `retry_after` the
    provider's Retry-After on 429.
    """

    def __init__(
        self,
        message: str,
        *,
        upstream_status: int,
        error_type: str,
        code: str | None = None,
        retry_after: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, upstream_status=upstream_status, code=code, retry_after=retry_after, param=param,
                         headers=headers)
        self.error_type = error_type


class UpstreamOverloaded(UpstreamStatusError):
    """The provider says it is overloaded (Anthropic's 529): retry later, after `retry_after` if given."""


class StoreError(GatewayError):
    """A database operation failed."""


class StoreUnavailable(StoreError):
    """The database could not be reached or timed out; the operation may be retried."""

    code = "store_unavailable"
    retry_after = "5"


class StoreRejected(StoreError):
    """The database refused the values (constraint, type); the same write will fail again."""

    code = "invalid_value"
