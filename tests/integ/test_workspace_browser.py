"""The whole path in a real browser: log in, watch the progress bar, land in VS Code,
create a file, stop and start, find it again; and idle culling of an untouched tab."""

import time

import pytest
import requests

from test_browser import ARGS, CHROMIUM, login  # noqa: F401  (shared launch settings)
from workspace_util import server_state, user_model

playwright = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def browser():
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def open_workbench(page, hub, name):
    page.goto(hub.url + "/hub/home")
    page.click("#start-server")
    page.wait_for_url(f"**/hub/spawn-pending/{name}**")
    assert page.locator("#spawn-progress").count() == 1
    page.wait_for_url(f"{hub.url}/user/{name}/**", timeout=90000)
    page.wait_for_selector(".monaco-workbench", timeout=90000)


def open_terminal(page):
    """Opens a terminal through the command palette; retries once, as the palette can
    still be loading its commands right after the workbench appears."""
    for attempt in range(3):
        page.keyboard.press("Escape")
        page.keyboard.press("F1")
        page.wait_for_selector(".quick-input-widget input")
        page.keyboard.type("Terminal: Create New Terminal")
        try:
            page.wait_for_selector(".quick-input-list .monaco-list-row.focused"
                                   ":has-text('Create New Terminal')", timeout=10000)
        except playwright.TimeoutError:
            continue
        page.keyboard.press("Enter")
        try:
            page.wait_for_selector(".xterm", state="attached", timeout=20000)
            return
        except playwright.TimeoutError:
            continue
    raise AssertionError("no terminal opened")


def run_in_terminal(page, command):
    open_terminal(page)
    page.wait_for_timeout(1500)
    page.locator(".xterm").last.click()
    page.keyboard.type(command)
    page.keyboard.press("Enter")


def test_login_progress_workbench_file_survives_restart(make_hub, browser):
    hub = make_hub("local:\n  init_venv: false\ncull:\n  timeout: 0\n")
    ctx = browser.new_context()
    page = ctx.new_page()
    login(page, hub, "wendy", "wendypass1")
    open_workbench(page, hub, "wendy")
    page.screenshot(path=str(hub.tmp / "workbench.png"))

    proof = hub.data_dir / "users" / "wendy" / "projects" / "proof.txt"
    run_in_terminal(page, "echo written-in-vscode > ~/projects/proof.txt")
    deadline = time.time() + 30
    while time.time() < deadline and not proof.exists():
        time.sleep(0.2)
    assert proof.read_text().strip() == "written-in-vscode"

    # Stop from the home page, start again, and the file is still there in the explorer.
    page.goto(hub.url + "/hub/home")
    page.click("#stop-server")
    page.wait_for_selector("#server[data-status='stopped']", timeout=30000)
    open_workbench(page, hub, "wendy")
    page.wait_for_selector(".explorer-folders-view", timeout=60000)
    page.wait_for_selector("text=proof.txt", timeout=60000)
    assert proof.read_text().strip() == "written-in-vscode"
    ctx.close()


def test_untouched_tab_is_culled_and_typing_keeps_alive(make_hub, browser):
    hub = make_hub("local:\n  init_venv: false\ncull:\n  timeout: 8s\n  every: 1s\n")
    hub.cli("user", "add", "root", "--admin", "--password-stdin", input="rootpass123\n")
    tok = hub.token("root", "--scope", "admin")

    def state(name):
        r = requests.get(hub.url + f"/hub/api/users/{name}",
                         headers={"Authorization": "Bearer " + tok})
        return server_state(r.json())

    # A typist keeps their server alive well past the timeout.
    ctx = browser.new_context()
    page = ctx.new_page()
    login(page, hub, "tina", "tinapass12")
    open_workbench(page, hub, "tina")
    run_in_terminal(page, "echo start")
    for _ in range(10):
        page.keyboard.type("echo still-here")
        page.keyboard.press("Enter")
        time.sleep(2)
        assert state("tina") == "running", hub.log()[-2000:]

    # Left alone, the same open tab goes idle and the server is stopped.
    deadline = time.time() + 40
    while time.time() < deadline and state("tina") != "stopped":
        time.sleep(0.5)
    assert state("tina") == "stopped", hub.log()[-2000:]
    assert "server.culled" in hub.log()
    ctx.close()
