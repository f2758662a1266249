"""Bad configuration values are refused with one line naming the key: ports out of range, numbers
that are not finite, an unknown ``on_bad_row``."""

from __future__ import annotations

import pytest

from cdc.config import ConfigError, load_settings

BASE = """
state_dir = "{state}"
[[sources]]
name = "crm"
kind = "postgres"
dsn = "postgresql://cdc@127.0.0.1:5432/crm"
tables = ["public.customers"]
"""


def settings_with(tmp_path, extra: str):
    path = tmp_path / "cdc.toml"
    path.write_text(BASE.format(state=tmp_path / "state") + extra)
    return load_settings(path, environ={})


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ('[http]\nlisten = "127.0.0.1:99999"\n', ("http.listen", "between 1 and 65535")),
        ('[http]\nlisten = "127.0.0.1:0"\n', ("http.listen", "between 1 and 65535")),
        ("[pipeline]\nflush_interval_seconds = inf\n", ("pipeline.flush_interval_seconds", "finite")),
        ("[pipeline]\nflush_interval_seconds = nan\n", ("pipeline.flush_interval_seconds", "finite")),
        ("[event_log]\nretain_days = inf\n", ("event_log.retain_days", "finite")),
        ('[pipeline]\non_bad_row = "skip"\n', ("pipeline.on_bad_row", "'stop' or 'hold'")),
    ],
)
def test_a_bad_value_is_refused_in_one_line_naming_its_key(tmp_path, extra, names):
    with pytest.raises(ConfigError) as refused:
        settings_with(tmp_path, extra)
    message = str(refused.value)
    assert "\n" not in message
    for name in names:
        assert name in message


def test_on_bad_row_defaults_to_stop_and_takes_hold(tmp_path):
    assert settings_with(tmp_path, "").pipeline.on_bad_row == "stop"
    assert settings_with(tmp_path, '[pipeline]\non_bad_row = "hold"\n').pipeline.on_bad_row == "hold"
