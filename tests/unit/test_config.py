"""The configuration: the documented example parses; environment overrides; secrets stay secret."""

from __future__ import annotations

from pathlib import Path

import pytest

from cdc.config import ConfigError, load_settings
from cdc.dsn import redact_dsn

EXAMPLE = Path(__file__).resolve().parents[2] / "conf" / "cdc.toml"


def test_documented_example_parses():
    settings = load_settings(EXAMPLE, environ={})
    assert [(s.name, s.kind) for s in settings.sources] == [("crm", "postgres"), ("erp", "mysql")]
    assert settings.sources[1].server_id == 4242
    assert settings.sources[0].slot_name == "cdc_crm"
    assert settings.table_settings("crm", "public", "customers").writer_column == "updated_by"
    assert settings.targets[1].table_map["erp.customers"] == "crm_mirror.erp_customers"


def test_environment_overrides_by_name_index_and_nesting(tmp_path):
    settings = load_settings(
        EXAMPLE,
        environ={
            "CDC_SOURCES__CRM__DSN": "postgresql://other@db1/crm",
            "CDC_TARGETS__0__PATH": "/tmp/elsewhere.jsonl",
            "CDC_CONFLICTS__WINDOW_SECONDS": "60",
            "CDC_SOURCES__CRM__TABLES": '["public.customers"]',
            "CDC_STATE_DIR": str(tmp_path),
        },
    )
    assert settings.sources[0].dsn == "postgresql://other@db1/crm"
    assert settings.sources[0].tables == ["public.customers"]
    assert str(settings.targets[0].path) == "/tmp/elsewhere.jsonl"
    assert settings.conflicts.window_seconds == 60
    assert settings.state_dir == tmp_path
    with pytest.raises(ConfigError, match="CDC_SOURCES__BILLING__DSN: no list item named or numbered 'billing'"):
        load_settings(EXAMPLE, environ={"CDC_SOURCES__BILLING__DSN": "x"})


def test_secrets_from_env_and_files_are_never_shown(tmp_path):
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "targets.warehouse.password").write_text("s3cret-file\n")
    settings = load_settings(
        EXAMPLE, environ={"CDC_SOURCES__CRM__PASSWORD": "s3cret-env", "CDC_SECRETS_DIR": str(secrets)}
    )
    assert settings.sources[0].password.get_secret_value() == "s3cret-env"
    assert settings.targets[1].password.get_secret_value() == "s3cret-file"
    shown = repr(settings) + str(settings.model_dump())
    assert "s3cret" not in shown
    assert redact_dsn("postgresql://cdc:hunter2@db1:5433/crm") == "cdc@db1:5433/crm"


@pytest.mark.parametrize(
    "members, message",
    [
        ('["crm:public.customers", "erp:erp.clients"]', "member erp:erp.clients is not a table of source 'erp'"),
        ('["crm:public.customers", "crm:public.contacts"]', "each member must belong to another source"),
        ('["public.customers", "erp:erp.customers"]', "'public.customers' must be written as 'source:schema.table'"),
        ('["crm:public.customers"]', "at least 2 items"),
    ],
)
def test_entities_name_captured_tables_of_distinct_sources(tmp_path, members, message):
    text = EXAMPLE.read_text().replace(
        'members = ["crm:public.customers", "erp:erp.customers"]', f"members = {members}"
    )
    config = tmp_path / "cdc.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=r"entities\[customer\].*") as error:
        load_settings(config, environ={})
    assert message in str(error.value) and "\n" not in str(error.value)


def test_documented_entity_and_its_sync_targets():
    from cdc.pipeline.entities import sync_targets

    settings = load_settings(EXAMPLE, environ={})
    assert settings.entity_of("erp", "erp", "customers").name == "customer"
    targets = sync_targets(settings)
    assert {member: (t.name, t.kind, t.position_table) for member, t in targets.items()} == {
        "crm": ("sync-crm-cdc_crm", "postgres", "cdc.sync_positions"),
        "erp": ("sync-erp-4242", "mysql", "cdc.sync_positions"),
    }
