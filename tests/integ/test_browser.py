"""The web UI in a real browser: Debian's Chromium driven by Playwright."""

import os
import shutil

import pytest

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser():
    if not os.path.exists(CHROMIUM):
        pytest.fail("Debian's chromium is missing: run make deps")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def login(page, hub, name, password):
    page.goto(hub.url + "/hub/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_url(hub.url + "/hub/home")


def test_admin_adds_user_who_then_logs_in(hub, browser):
    hub.cli("user", "add", "boss", "--admin", "--password-stdin", input="bosspass123\n")
    ctx = browser.new_context()
    page = ctx.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)

    login(page, hub, "boss", "bosspass123")
    assert page.locator("text=boss").first.is_visible()

    page.click("a[href='/hub/admin']")
    page.wait_for_url(hub.url + "/hub/admin")
    page.wait_for_selector("#users tbody tr")
    page.fill("#add-username", "zoe")
    page.locator("#add-username").press("Enter")
    page.wait_for_selector("#users tbody tr:has-text('zoe')")
    page.screenshot(path=str(hub.tmp / "admin.png"))

    page.click("form.nav-logout button")
    page.wait_for_url(hub.url + "/hub/login")
    ctx.close()

    # zoe was created without a password: her first login sets it.
    ctx = browser.new_context()
    page = ctx.new_page()
    login(page, hub, "zoe", "zoepass123")
    assert "zoe" in page.content()
    assert page.locator("a[href='/hub/admin']").count() == 0
    ctx.close()
    assert errors == [], errors


def test_token_page_creates_and_revokes(hub, browser):
    ctx = browser.new_context()
    page = ctx.new_page()
    login(page, hub, "yan", "yanpass123")
    page.goto(hub.url + "/hub/token")
    page.fill("#token-note", "ci")
    page.locator("#token-note").press("Enter")
    page.wait_for_selector("#new-token-value")
    page.wait_for_function("document.querySelector('#new-token-value').value.startsWith('chb_')")
    token = page.locator("#new-token-value").input_value()
    import requests
    r = requests.get(hub.url + "/hub/api/user", headers={"Authorization": "Bearer " + token})
    assert r.status_code == 200 and r.json()["name"] == "yan"
    page.wait_for_selector("#tokens tbody tr:has-text('ci')")
    page.once("dialog", lambda d: d.accept())
    page.locator("#tokens tbody tr:has-text('ci') button").first.click()
    page.wait_for_selector("#tokens tbody tr:has-text('ci')", state="detached")
    r = requests.get(hub.url + "/hub/api/user", headers={"Authorization": "Bearer " + token})
    assert r.status_code == 401
    ctx.close()


def test_password_change_page_without_javascript(hub, browser):
    ctx = browser.new_context(java_script_enabled=False)
    page = ctx.new_page()
    login(page, hub, "xia", "xiapass123")
    page.goto(hub.url + "/hub/password")
    page.fill("input[name=current_password]", "xiapass123")
    page.fill("input[name=new_password]", "xianew4567")
    page.fill("input[name=confirm_password]", "xianew4567")
    page.click("main button[type=submit]")
    page.wait_for_url(hub.url + "/hub/password?changed=1")
    assert "changed" in page.content()
    ctx.close()
    hub.login("xia", "xianew4567")
