"""The conflict review page, driven in headless Chromium: a real conflict resolved with a click."""

from __future__ import annotations

import json
import shutil
from typing import Any

import pytest

from devtools.servers import free_port
from tests.helpers import PROJECT, CdcSetup, wait_for

SCHEMA = """CREATE TABLE public.customers (id bigint PRIMARY KEY, name text, phone text, email text,
    updated_by text);"""
CONFIG = """
[[tables]]
match = "public.customers"
writer_column = "updated_by"
policy = "manual"
"""
ARTIFACTS = PROJECT / "test-artifacts"


@pytest.fixture
def browser():
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.fail("Debian's chromium and chromium-driver are needed (scripts/bootstrap installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(argument)
    session = webdriver.Chrome(service=Service(executable_path=driver), options=options)
    yield session
    session.quit()


def test_a_stale_save_is_resolved_with_a_click_and_the_target_gets_the_row(pg_server, tmp_path, browser):
    from selenium.webdriver.common.by import By

    port = free_port()
    crm = CdcSetup(
        pg_server,
        tmp_path,
        SCHEMA,
        ["public.customers"],
        extra_config=CONFIG + f'[http]\nlisten = "127.0.0.1:{port}"\n',
    )
    crm.setup()
    with crm.running(timeout=15) as daemon:
        with crm.source() as conn:
            conn.execute("INSERT INTO customers VALUES (42, 'Ada', '555-0100', 'ada@x.io', 'import')")
        # the scenario: erp-sync saves the whole row it read before sales-app's phone change
        sales, erp = crm.source(), crm.source()
        stale = erp.execute("SELECT name, phone FROM customers WHERE id = 42").fetchone()
        sales.execute("UPDATE customers SET phone = '555-0199', updated_by = 'sales-app' WHERE id = 42")
        erp.execute(
            "UPDATE customers SET name = %s, phone = %s, email = 'ada@erp.example', updated_by = 'erp-sync'"
            " WHERE id = 42",
            stale,
        )
        sales.close(), erp.close()
        conflict = wait_for(
            lambda: [
                c
                for c in map(
                    json.loads, crm.cdc("conflicts", "list", "--json", "--status", "pending").stdout.splitlines()
                )
                if c["type"] == "lost_update"
            ],
            timeout=60,
            what="the conflict",
        )[0]
        with crm.target() as dst:  # held: the target keeps the last agreed row
            wait_for(
                lambda: dst.execute("SELECT phone FROM customers WHERE id = 42").fetchone() == ("555-0199",),
                timeout=30,
                what="the last agreed row in the target",
            )

        browser.get(f"http://127.0.0.1:{port}/?status=pending")
        browser.find_element(By.LINK_TEXT, conflict["id"]).click()
        assert browser.find_elements(By.ID, "status"), browser.page_source[:2000]
        assert browser.find_element(By.ID, "status").text == "pending"
        differing = [
            row.get_attribute("data-column")
            for row in browser.find_elements(By.CSS_SELECTOR, "#writes tr")
            if row.find_elements(By.CSS_SELECTOR, "td.differs")
        ]
        assert "phone" in differing and "email" in differing and "id" not in differing
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "review-page.png"))
        kept = conflict["events"][0]["event_id"]  # sales-app's write, which the stale save reverted
        browser.find_element(By.XPATH, f"//button[text()='keep {kept}']").click()
        wait_for(
            lambda: _shown_status(browser) == ["resolved_by_hand"],
            timeout=10,
            what="the page showing the resolution",
        )
        assert "resolved" in browser.find_element(By.ID, "message").text
        with crm.target() as dst:
            wait_for(
                lambda: (
                    dst.execute("SELECT name, phone, email FROM customers WHERE id = 42").fetchone()
                    == ("Ada", "555-0199", "ada@x.io")
                ),
                timeout=30,
                what="the kept row in the target",
            )
        browser.save_screenshot(str(ARTIFACTS / "review-page-resolved.png"))
    [record] = [
        c
        for c in map(json.loads, crm.cdc("conflicts", "list", "--json").stdout.splitlines())
        if c["id"] == conflict["id"]
    ]
    assert record["status"] == "resolved_by_hand" and record["resolution"]["by"] == "review page"


def _shown_status(browser: Any) -> list[str]:
    """The conflict's status on the page; none while the page is being replaced after a click."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    try:
        return [element.text for element in browser.find_elements(By.ID, "status")]
    except StaleElementReferenceException:
        return []
