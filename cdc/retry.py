"""Retrying connections: exponential backoff with jitter (tenacity), one log line per attempt."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import TypeVar

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    sleep_using_event,
    stop_after_attempt,
    stop_never,
    wait_random_exponential,
)

from cdc.config import RetrySettings
from cdc.errors import Unreachable
from cdc.logs import one_line

T = TypeVar("T")
log = logging.getLogger("cdc.retry")


def retry_call(
    settings: RetrySettings,
    what: str,
    func: Callable[[], T],
    retryable: Callable[[BaseException], bool],
    attempts: int | None = None,
    stop: threading.Event | None = None,
) -> T:
    """Call ``func`` until it succeeds, backing off between failures that ``retryable`` accepts.

    ``attempts`` (or ``settings.attempts``) of 0 means forever; setting ``stop`` cuts a
    back-off short and ends the retries.
    """
    stop = stop or threading.Event()
    limit = settings.attempts if attempts is None else attempts

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        delay = state.next_action.sleep if state.next_action else 0.0
        total = f"/{limit}" if limit else ""
        log.warning(
            "%s: %s (attempt %d%s, retrying in %.1fs)",
            what,
            one_line(exc),
            state.attempt_number,
            total,
            delay,
            extra={"attempt": state.attempt_number},
        )

    retrying = Retrying(
        retry=retry_if_exception(lambda exc: retryable(exc) and not stop.is_set()),
        sleep=sleep_using_event(stop),
        wait=wait_random_exponential(multiplier=settings.initial_seconds, max=settings.max_seconds),
        stop=stop_after_attempt(limit) if limit else stop_never,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(func)
    except Exception as exc:
        if retryable(exc) and not stop.is_set():
            raise Unreachable(f"{what}: {one_line(exc)} (gave up after {limit} attempts)") from exc
        raise
