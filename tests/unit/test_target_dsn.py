"""A target's DSN that cannot be parsed is refused in one line naming the target, never its password."""

from __future__ import annotations

import pytest

from cdc.config import TargetSettings
from cdc.errors import DsnError
from cdc.targets.mysql import MysqlTarget
from cdc.targets.postgres import PostgresTarget


@pytest.mark.parametrize(
    ("make", "kind", "dsn"),
    [
        (PostgresTarget, "postgres", "postgresql://cdc:pa:1234/s3cr3t@127.0.0.1:5432/dwh"),
        (MysqlTarget, "mysql", "mysql://cdc:pa:1234/s3cr3t@127.0.0.1:3306/erp"),
    ],
)
def test_a_target_dsn_that_cannot_be_parsed_names_the_target(make, kind, dsn):
    target = make(TargetSettings(name="warehouse", kind=kind, dsn=dsn))
    with pytest.raises(DsnError) as refused:
        target.open()
    message = str(refused.value)
    assert message.startswith("target warehouse: ") and "\n" not in message, message
    assert "s3cr3t" not in message and "1234" not in message, message
