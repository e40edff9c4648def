"""JSON over HTTP for the HTTP providers: retries with backoff, timeouts, and errors mapped to `ModelError`.

Retried: 429, 5xx (and 529, Anthropic's "overloaded"), refused or dropped connections. Not retried: a
timeout (the call's time is spent), auth errors, other 4xx, malformed answers. A `Retry-After` (or
`retry-after-ms`) header sets the wait, capped at `max_delay`; otherwise the wait grows exponentially with
jitter so that many clients do not retry in lockstep.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from .base import (
    ModelAuthError,
    ModelBadResponseError,
    ModelConfigError,
    ModelConnectionError,
    ModelError,
    ModelRateLimitError,
    ModelRequestError,
    ModelServerError,
    ModelTimeoutError,
    strict_json,
)

DEFAULT_TIMEOUT = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 30.0

    def backoff(self, attempt: int) -> float:
        """Wait before attempt `attempt + 1` (attempt counts from 1): exponential, with full jitter in its
        upper half so the delay never collapses to zero."""
        ceiling = min(self.max_delay, self.base_delay * (2 ** (attempt - 1)))
        return ceiling * random.uniform(0.5, 1.0)


class _Retry(Exception):
    """One attempt failed in a way worth retrying; `error` is what to raise if no attempt is left."""

    def __init__(self, error: ModelError, wait: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.wait = wait


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """Seconds the server asked us to wait, from `retry-after-ms` or `Retry-After` (seconds or a date)."""
    millis = headers.get("retry-after-ms")
    if millis:
        try:
            return max(0.0, float(millis) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def error_detail(response: httpx.Response) -> str:
    """The server's own error message, short: OpenAI and Anthropic both use {"error": {"message": ...}}."""
    try:
        body = response.json()
    except ValueError:
        body = None
    message: Any = None
    if isinstance(body, dict):
        err = body.get("error")
        message = err.get("message") if isinstance(err, dict) else err
        message = message or body.get("message") or body.get("detail")
    if not message:
        message = response.text
    text = " ".join(str(message).split())
    return text[:300] + ("..." if len(text) > 300 else "")


class JsonHttpClient:
    """POSTs JSON bodies to one endpoint on behalf of one provider."""

    def __init__(
        self,
        provider: str,
        base_url: str,
        headers: dict[str, str],
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.provider = provider
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout or DEFAULT_TIMEOUT
        self.retry = retry or RetryPolicy()
        # Tests replace this to observe waits without waiting.
        self.sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
        self._client = httpx.AsyncClient(
            headers=headers, timeout=httpx.Timeout(self.timeout), transport=transport
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """The decoded JSON object the endpoint answered, after retries; a `ModelError` otherwise."""
        url = self.base_url + path
        # The model's `timeout` is the limit of the whole call, its retries and their waits included:
        # a long Retry-After never holds a step past it.
        deadline = time.monotonic() + self.timeout
        for attempt in range(1, self.retry.attempts + 1):
            try:
                return await self._attempt(url, body, deadline)
            except _Retry as failed:
                wait = failed.wait if failed.wait is not None else self.retry.backoff(attempt)
                wait = min(wait, self.retry.max_delay)
                if attempt == self.retry.attempts or time.monotonic() + wait >= deadline:
                    raise _gave_up(failed.error, attempt) from None
                await self.sleep(wait)
        raise AssertionError("unreachable: the loop returns or raises")

    async def _attempt(self, url: str, body: dict[str, Any], deadline: float) -> dict[str, Any]:
        try:
            # httpx's timeout bounds each phase; this bounds the whole call (a slow drip stays bounded).
            async with asyncio.timeout(max(deadline - time.monotonic(), 0.0)):
                response = await self._client.post(url, json=body)
        except (TimeoutError, httpx.TimeoutException):
            raise ModelTimeoutError(self.provider, url, f"no answer within {self.timeout:g}s") from None
        except httpx.ConnectError as exc:
            raise _Retry(
                ModelConnectionError(self.provider, url, f"cannot connect: {_reason(exc)}"), None
            ) from None
        except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            what = f"the connection dropped before a full answer: {_reason(exc)}"
            raise _Retry(ModelConnectionError(self.provider, url, what), None) from None
        except httpx.HTTPError as exc:
            raise ModelConnectionError(self.provider, url, _reason(exc)) from None
        except (httpx.InvalidURL, UnicodeError, ValueError, OverflowError, ExceptionGroup) as exc:
            # The request could not even be made (a key that is not ASCII, a port out of range): no
            # later attempt can do better.
            raise ModelConfigError(
                self.provider, url, f"the request cannot be sent: {_reason(exc)}"
            ) from None
        return self._decode(url, response)

    def _decode(self, url: str, response: httpx.Response) -> dict[str, Any]:
        status = response.status_code
        if status >= 400:
            raise self._status_error(url, response)
        try:
            data = strict_json(response.content)
        except ValueError:
            snippet = " ".join(response.text.split())[:200]
            raise ModelBadResponseError(self.provider, url, f"the answer is not JSON: {snippet!r}") from None
        if not isinstance(data, dict):
            raise ModelBadResponseError(
                self.provider, url, f"the answer is JSON but not an object: {data!r:.200}"
            )
        return data

    def _status_error(self, url: str, response: httpx.Response) -> Exception:
        status, detail = response.status_code, error_detail(response)
        what = f"HTTP {status}: {detail}"
        if status in (401, 403):
            return ModelAuthError(self.provider, url, f"{what} (check the API key)", status=status)
        if status == 429:
            return _Retry(
                ModelRateLimitError(self.provider, url, what, status=status),
                retry_after_seconds(response.headers),
            )
        if status >= 500:
            return _Retry(
                ModelServerError(self.provider, url, what, status=status),
                retry_after_seconds(response.headers),
            )
        error = ModelRequestError(self.provider, url, what, status=status)
        error.detail = detail  # type: ignore[attr-defined]
        return error


def _gave_up(error: ModelError, attempts: int) -> ModelError:
    what = f"{error.what} (gave up after {attempts} attempt{'' if attempts == 1 else 's'})"
    return type(error)(error.provider, error.endpoint, what, status=error.status)


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
