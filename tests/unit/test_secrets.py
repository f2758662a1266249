"""Secrets in DSNs and webhook URLs: parsed as the user meant, and never in a message or a log line.

The webhook tests talk to real HTTP servers from the standard library that record every request.
"""

from __future__ import annotations

import base64
import json
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from cdc.alerts import Alerter
from cdc.config import AlertSettings, load_settings
from cdc.dsn import connect_kwargs, mysql_params, redact_dsn
from cdc.errors import ConfigError, DsnError
from tests.helpers import HttpReceiver

PASSWORD = "pa:1234/s@s"  # what a user pastes: a ':', a port-like '1234', a '/', an '@'
TOKEN = "tok-Sup3rSecret-webhook"
PATH_SECRET = "/services/T0AAA/B0BBB/PathSecret0123456789"


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.02)
    raise AssertionError(f"condition not met within {timeout}s")


# -- DSNs ------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "mysql", "mariadb"])
@pytest.mark.parametrize("password", [PASSWORD, "pa:1234/ss", "1234/ss", "pa?ss@x", "pa#ss"])
def test_an_unencoded_slash_question_mark_or_hash_in_a_password_is_refused_without_showing_it(
    scheme: str, password: str
) -> None:
    dsn = f"{scheme}://cdc:{password}@127.0.0.1:3306/erp"
    parse = mysql_params if scheme in ("mysql", "mariadb") else connect_kwargs
    with pytest.raises(DsnError) as caught:
        parse(dsn)
    message = str(caught.value)
    assert "\n" not in message and "percent-encode" in message and "%2F" in message and "%40" in message
    shown = redact_dsn(dsn)
    assert shown == "<unparsable DSN>"
    assert password not in message + shown


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_the_user_info_ends_at_the_last_at_sign_before_the_host(scheme: str) -> None:
    dsn = f"{scheme}://ops@corp:p@ss:w0rd@db1.example:5433/erp"
    if scheme == "mysql":
        params = mysql_params(dsn)
        assert (params["host"], params["port"], params["database"]) == ("db1.example", 5433, "erp")
    else:
        params = connect_kwargs(dsn)
        assert (params["host"], params["port"], params["dbname"]) == ("db1.example", "5433", "erp")
    assert (params["user"], params["password"]) == ("ops@corp", "p@ss:w0rd")
    assert redact_dsn(dsn) == "ops@corp@db1.example:5433/erp"


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_percent_encoded_password_is_decoded(scheme: str) -> None:
    dsn = f"{scheme}://cdc:{quote(PASSWORD, safe='')}@127.0.0.1:3306/erp"
    params = mysql_params(dsn) if scheme == "mysql" else connect_kwargs(dsn)
    assert (params["host"], params["user"], params["password"]) == ("127.0.0.1", "cdc", PASSWORD)
    assert PASSWORD not in redact_dsn(dsn) and quote(PASSWORD, safe="") not in redact_dsn(dsn)


def test_postgres_query_parameters_and_key_value_dsns_still_work() -> None:
    params = connect_kwargs("postgresql://cdc:in-uri@/erp?host=/run/postgresql&password=in-query")
    assert (params["host"], params["user"], params["password"]) == ("/run/postgresql", "cdc", "in-query")
    params = connect_kwargs(f"host=db1 user=cdc password='{PASSWORD}' dbname=erp")
    assert (params["host"], params["password"]) == ("db1", PASSWORD)
    assert redact_dsn(f"host=db1 user=cdc password='{PASSWORD}' dbname=erp") == "cdc@db1:5432/erp"


# -- webhooks: a recording receiver (tests.helpers.HttpReceiver) ---------------------------


@pytest.fixture
def receivers() -> Iterator[list[HttpReceiver]]:
    started: list[HttpReceiver] = []
    yield started
    for receiver in started:
        receiver.close()


def conflict() -> dict[str, Any]:
    return {"id": "lost_update:crm:0/1:0", "type": "lost_update", "severity": "error", "table": "public.t", "key": "1"}


def deliver(webhook: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    """Submit one conflict and wait until the webhook channel has delivered or given up on it
    (and logged that)."""
    caplog.set_level(logging.DEBUG)
    alerter = Alerter(AlertSettings.model_validate({"webhook": {"timeout_seconds": 2, **webhook}}), retry_seconds=0.5)
    try:
        alerter.submit(conflict())
        wait_for(alerter.idle)
    finally:
        alerter.close()


def logged(caplog: pytest.LogCaptureFixture) -> str:
    return caplog.text + "".join(json.dumps(vars(r), default=str) for r in caplog.records)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_not_followed_and_no_credential_reaches_the_other_host(
    receivers: list[HttpReceiver], caplog: pytest.LogCaptureFixture, status: int
) -> None:
    elsewhere = HttpReceiver()
    hook = HttpReceiver(status=status, redirect_to=f"{elsewhere.origin}/collect")
    receivers += [elsewhere, hook]
    deliver({"url": hook.origin + PATH_SECRET, "token": TOKEN}, caplog)
    assert elsewhere.requests == []
    assert len(hook.requests) == 1  # a 3xx is not retried either
    assert hook.requests[0]["headers"]["Authorization"] == f"Bearer {TOKEN}"
    [failure] = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert f"POST {hook.origin}: HTTP {status} " in failure
    assert "redirects are not followed" in failure
    assert elsewhere.origin not in logged(caplog)
    assert TOKEN not in logged(caplog) and "PathSecret" not in logged(caplog)


@pytest.mark.parametrize("status", [404, 500])
def test_a_failed_webhook_logs_only_scheme_host_and_port(
    receivers: list[HttpReceiver], caplog: pytest.LogCaptureFixture, status: int
) -> None:
    hook = HttpReceiver(status=status)
    receivers.append(hook)
    deliver({"url": f"{hook.origin}{PATH_SECRET}?key=QuerySecret42", "token": TOKEN}, caplog)
    assert hook.requests and hook.requests[0]["path"] == f"{PATH_SECRET}?key=QuerySecret42"
    assert f"POST {hook.origin}: HTTP {status} " in caplog.text
    for secret in ("PathSecret", "T0AAA", "QuerySecret42", TOKEN):
        assert secret not in logged(caplog)


def test_an_unreachable_webhook_logs_only_scheme_host_and_port(caplog: pytest.LogCaptureFixture) -> None:
    closed = HttpReceiver()
    closed.close()  # nobody listens on its port any more
    deliver({"url": f"http://hook-user:{quote(PASSWORD, safe='')}@{closed.origin[7:]}{PATH_SECRET}"}, caplog)
    assert "giving up" in caplog.text
    assert f"POST {closed.origin}: " in caplog.text
    for secret in ("PathSecret", PASSWORD, quote(PASSWORD, safe=""), "hook-user"):
        assert secret not in logged(caplog)


def test_user_info_in_a_webhook_url_is_sent_as_basic_auth(
    receivers: list[HttpReceiver], caplog: pytest.LogCaptureFixture
) -> None:
    hook = HttpReceiver()
    receivers.append(hook)
    host = hook.origin.removeprefix("http://")
    deliver({"url": f"http://alice%40corp:{quote(PASSWORD, safe='')}@{host}/hooks/cdc"}, caplog)
    [request] = hook.requests
    assert request["path"] == "/hooks/cdc"
    assert request["headers"]["Host"] == host  # the resolver and the server saw the host only
    assert (
        request["headers"]["Authorization"] == "Basic " + base64.b64encode(f"alice@corp:{PASSWORD}".encode()).decode()
    )
    assert json.loads(request["body"])["type"] == "conflict"
    assert PASSWORD not in logged(caplog) and quote(PASSWORD, safe="") not in logged(caplog)


def test_basic_auth_failure_never_logs_the_user_info(
    receivers: list[HttpReceiver], caplog: pytest.LogCaptureFixture
) -> None:
    hook = HttpReceiver(status=401)
    receivers.append(hook)
    deliver({"url": f"http://alice:Pw-Secret-77@{hook.origin[7:]}/hooks/cdc"}, caplog)
    assert hook.requests[0]["headers"]["Authorization"].startswith("Basic ")
    assert f"POST {hook.origin}: HTTP 401 " in caplog.text
    assert "Pw-Secret-77" not in logged(caplog) and "alice:" not in logged(caplog)


@pytest.mark.parametrize(
    "webhook, message",
    [
        (
            f'url = "https://hooks.example{PATH_SECRET}"\ntoken = "{TOKEN}"\n',
            None,
        ),
        (
            f'url = "https://alice:Pw-Secret-77@hooks.example{PATH_SECRET}"\ntoken = "{TOKEN}"\n',
            "alerts.webhook: give either 'token' or a user:password in 'url', not both",
        ),
        (f'url = "ftp://hooks.example{PATH_SECRET}"\n', "alerts.webhook.url: must look like https://host[:port]/path"),
        (
            f'url = "https://alice:Pw-Secret-77/x@hooks.example{PATH_SECRET}"\n',
            "alerts.webhook.url: must look like https://host[:port]/path",
        ),
    ],
)
def test_webhook_url_is_checked_without_repeating_it(tmp_path: Path, webhook: str, message: str | None) -> None:
    config = tmp_path / "cdc.toml"
    config.write_text(
        f'state_dir = "{tmp_path}"\n[[sources]]\nname = "crm"\nkind = "postgres"\n'
        f'dsn = "postgresql://cdc@db1/crm"\ntables = ["public.t"]\n[alerts.webhook]\n{webhook}'
    )
    if message is None:
        assert load_settings(config, environ={}).alerts.webhook is not None
        return
    with pytest.raises(ConfigError) as caught:
        load_settings(config, environ={})
    assert f": {message}" in str(caught.value)
    assert "PathSecret" not in str(caught.value) and "Pw-Secret-77" not in str(caught.value)
