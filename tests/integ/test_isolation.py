"""Isolation: every way one user might reach another's workspace, against the real binary
and real code-servers.

Path mode (/user/NAME/ on the hub's origin) is covered here for what test_workspace.py and
test_auth.py do not already show (CSRF on start and stop, token scopes, cross-site
WebSockets); per-user origins (proxy.user_subdomains: NAME.DOMAIN) for everything: the
handoff, its single use and its binding to the browser that asked, the workspace cookie,
logout, WebSocket origins, cookie tossing, open redirects and what reaches code-server.

Workspace origins are NAME.localhost: Chromium resolves *.localhost to loopback itself;
for requests, the `loopback_names` fixture maps every *.localhost name to 127.0.0.1 in
this process (no resolver here knows them), so every byte still goes to 127.0.0.1."""

import re
import socket
from urllib.parse import parse_qs, urljoin, urlsplit

import pytest
import requests

from test_workspace import ws_handshake
from workspace_util import FAST, HeadEcho, start_server, wait_state


# --- shared helpers ------------------------------------------------------------------------


@pytest.fixture
def loopback_names(monkeypatch):
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kw):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real(host, *args, **kw)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


def ws_upgrade(hub, host, path, origin=None, cookie=None, token=None):
    """A WebSocket handshake with the given Host and Cookie header; returns the status."""
    sock, status, _ = ws_handshake(hub, path, origin=origin, token=token, host=host,
                                   cookie_header=cookie)
    sock.close()
    return status


# --- path mode -----------------------------------------------------------------------------


@pytest.fixture
def pair(make_hub):
    hub = make_hub(FAST)
    a, _ = hub.login("ann", "annpass123")
    b, _ = hub.login("bob", "bobpass123")
    return hub, a, b


def test_csrf_on_start_and_stop(pair):
    """A session (a browser) changes server state only with its own CSRF token: a page on
    another site, or another user's token, can neither start nor stop anything."""
    hub, a, b = pair
    url = hub.url + "/hub/api/users/ann/server"
    evil = {"Origin": "https://evil.example", "Referer": "https://evil.example/x"}
    for method in ("POST", "DELETE"):
        assert a.request(method, url, headers=evil).status_code == 403
        bad = dict(evil, **{"X-XSRF-Token": hub.page_xsrf(b)})
        assert a.request(method, url, headers=bad).status_code == 403
        assert a.request(method, url, headers={"X-XSRF-Token": "0" * 64}).status_code == 403
    # A form post is no way around it either.
    r = a.post(url, data={"_xsrf": hub.page_xsrf(b)}, headers=evil)
    assert r.status_code == 403
    assert hub.api(a, "GET", "/users/ann").json()["server"] is None
    # With its own token the same call works: the refusals above were the CSRF check.
    r = a.post(url, headers={"X-XSRF-Token": hub.page_xsrf(a)})
    assert r.status_code in (201, 202), r.text
    wait_state(hub, a, "ann", "running", 90)
    assert a.delete(url, headers=evil).status_code == 403
    r = a.delete(url, headers={"X-XSRF-Token": hub.page_xsrf(a)})
    assert r.status_code in (202, 204), r.text


def test_token_scope(pair):
    """A user-scoped token acts as its user only, even when that user is an admin; an
    admin-scoped token of an admin reaches others' servers (the admin API), but never
    their workspaces unless proxy.admin_access is on."""
    hub, a, _ = pair
    hub.cli("user", "add", "root", "--admin", "--password-stdin", input="rootpass123\n")
    root, _ = hub.login("root", "rootpass123")
    ann = hub.token("ann")
    root_user = hub.token("root")
    root_admin = hub.token("root", "--scope", "admin")
    # 403, or 404 where saying "forbidden" would tell that bob exists.
    denied = (403, 404)
    assert hub.api(ann, "POST", "/users/bob/server").status_code in denied
    assert hub.api(ann, "DELETE", "/users/bob/server").status_code in denied
    assert hub.api(ann, "GET", "/users").status_code in denied
    assert hub.api(ann, "GET", "/users/bob").status_code in denied
    assert hub.api(root_user, "GET", "/users").status_code in denied
    assert hub.api(root_user, "POST", "/users/bob/server").status_code in denied
    assert hub.api(root_admin, "GET", "/users").status_code == 200
    r = hub.api(root_admin, "POST", "/users/bob/server")
    assert r.status_code in (201, 202), r.text
    wait_state(hub, root, "bob", "running", 90)
    h = {"Authorization": f"Bearer {root_admin}"}
    assert requests.get(hub.url + "/user/bob/healthz", headers=h).status_code == 403
    # A non-admin cannot mint an admin-scoped token for itself.
    r = hub.cli("token", "create", "ann", "--scope", "admin", check=False)
    assert r.returncode != 0


def test_cross_site_websocket_is_refused(pair):
    """A page on another site opening a WebSocket into the workspace with the user's cookie
    (the browser attaches it) is refused before code-server sees it."""
    hub, a, _ = pair
    start_server(hub, a, "ann")
    cookie = "codehub-session=" + a.cookies.get("codehub-session")
    host = f"127.0.0.1:{hub.port}"
    assert ws_upgrade(hub, host, "/user/ann/", hub.url, cookie) == 101
    for origin in ("https://evil.example", f"http://localhost:{hub.port}", "null",
                   hub.url + ".evil.example", hub.url.replace("http:", "https:")):
        assert ws_upgrade(hub, host, "/user/ann/", origin, cookie) == 403, origin


# --- per-user origins ----------------------------------------------------------------------


def subdomain_hub(make_hub, extra=""):
    h = make_hub(FAST, start=False)
    h.config_path.write_text(FAST + f"server:\n  public_url: http://localhost:{h.port}\n"
                             "proxy:\n  user_subdomains: localhost\n" + extra)
    h.url = f"http://localhost:{h.port}"
    h.start()
    return h


def origin(hub, name):
    return f"http://{name}.localhost:{hub.port}"


def handoff(hub, s, name, path="/"):
    """Opens NAME's workspace from the hub like a browser, one redirect at a time; returns
    the list of (status, location) and the final response."""
    steps = []
    r = s.get(hub.url + f"/user/{name}{path}", headers={"Accept": "text/html"},
              allow_redirects=False, timeout=30)
    while r.status_code in (301, 302, 303) and len(steps) < 10:
        loc = r.headers["Location"]
        steps.append((r.status_code, loc))
        loc = urljoin(r.url, loc)  # code-server answers / with ./?folder=...
        r = s.get(loc, headers={"Accept": "text/html"}, allow_redirects=False, timeout=30)
    return steps, r


@pytest.fixture
def subs(make_hub, loopback_names):
    hub = subdomain_hub(make_hub)
    a, _ = hub.login("ann", "annpass123")
    b, _ = hub.login("bob", "bobpass123")
    start_server(hub, a, "ann")
    start_server(hub, b, "bob")
    return hub, a, b


def test_subdomain_handoff_opens_the_workspace(subs):
    hub, a, _ = subs
    steps, r = handoff(hub, a, "ann", "/?folder=/tmp")
    where = [loc for _, loc in steps]
    assert where[0] == origin(hub, "ann") + "/?folder=/tmp"
    assert where[1].startswith(hub.url + "/hub/handoff?workspace=ann&state=")
    assert where[2].startswith(origin(hub, "ann") + "/_codehub/handoff?code=")
    assert parse_qs(urlsplit(where[2]).query)["next"] == ["/?folder=/tmp"]
    assert r.status_code == 200, (steps, r.status_code, r.text[:300])
    assert "vs/code" in r.text or "workbench" in r.text
    # The workspace cookie: host-only on ann's origin, HttpOnly; the state cookie is gone.
    jar = {(c.name, c.domain): c for c in a.cookies}
    ws = [c for (n, d), c in jar.items() if n == "codehub-ws"]
    assert len(ws) == 1 and ws[0].domain == "ann.localhost", jar.keys()
    assert not ws[0].domain_specified
    assert ws[0].has_nonstandard_attr("HttpOnly")
    assert not [c for (n, _), c in jar.items() if n.startswith("codehub-ws-state")]


def test_subdomain_no_workspace_on_the_hubs_origin(subs):
    """With per-user origins, the hub's origin never serves a workspace byte: GET goes to
    the workspace's origin, anything else is told where to go."""
    hub, a, _ = subs
    tok = hub.token("ann")
    r = a.get(hub.url + "/user/ann/healthz", allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == origin(hub, "ann") + "/healthz"
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        r = requests.request(method, hub.url + "/user/ann/x",
                             headers={"Authorization": f"Bearer {tok}"}, allow_redirects=False)
        assert r.status_code == 421, (method, r.status_code)
        assert origin(hub, "ann") in r.text
    assert ws_upgrade(hub, f"localhost:{hub.port}", "/user/ann/", hub.url,
                      token=tok) in (302, 421)


def test_subdomain_other_users_are_refused(subs):
    hub, a, b = subs
    # bob asks the hub for a way into ann's workspace: refused.
    steps, r = handoff(hub, b, "ann")
    assert r.status_code == 403, steps
    assert "someone else" in r.text
    # bob's own workspace cookie is no good at ann's origin, even when sent there.
    handoff(hub, b, "bob")
    bob_ws = next(c.value for c in b.cookies if c.name == "codehub-ws")
    r = requests.get(origin(hub, "ann") + "/healthz", headers={"Cookie": "codehub-ws=" + bob_ws},
                     allow_redirects=False)
    assert r.status_code == 401
    # Nor is bob's hub session cookie, nor ann's: the hub's cookie means nothing there.
    for s in (a, b):
        cookie = "codehub-session=" + s.cookies.get("codehub-session", domain="localhost.local")
        r = requests.get(origin(hub, "ann") + "/healthz", headers={"Cookie": cookie},
                         allow_redirects=False)
        assert r.status_code == 401
    # Tokens: ann's reaches ann's origin only.
    tok = hub.token("ann")
    h = {"Authorization": f"Bearer {tok}"}
    assert requests.get(origin(hub, "ann") + "/healthz", headers=h).status_code == 200
    assert requests.get(origin(hub, "bob") + "/healthz", headers=h).status_code == 403
    # Names that are no one's.
    for host in ("nobody.localhost", "a_b.localhost", "x.y.localhost"):
        r = requests.get(f"http://127.0.0.1:{hub.port}/", headers={"Host": f"{host}:{hub.port}"},
                         allow_redirects=False)
        assert r.status_code in (302, 401, 404), (host, r.status_code)


def test_subdomain_handoff_code_is_single_use_and_bound_to_the_browser(subs):
    hub, a, _ = subs
    # Stop at the code: take the steps by hand.
    r = a.get(origin(hub, "ann") + "/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert r.status_code == 302
    issue = r.headers["Location"]
    r = a.get(issue, allow_redirects=False)
    assert r.status_code == 302
    redeem = r.headers["Location"]
    code = parse_qs(urlsplit(redeem).query)["code"][0]

    # Another browser (no state cookie, or its own) cannot use it, and trying does not
    # spend it.
    other = requests.Session()
    r = other.get(redeem, allow_redirects=False)
    assert r.status_code == 400 and "did not ask" in r.text
    other.get(origin(hub, "ann") + "/", headers={"Accept": "text/html"}, allow_redirects=False)
    r = other.get(redeem, allow_redirects=False)
    assert r.status_code == 400 and "did not ask" in r.text
    # Tampered codes.
    for bad in (code[:-1] + ("0" if code[-1] != "0" else "1"), code.replace("ann.", "bob.", 1),
                code + ".x", "", "ann"):
        r = a.get(origin(hub, "ann") + "/_codehub/handoff", params={"code": bad, "next": "/"},
                  allow_redirects=False)
        assert r.status_code == 400, bad
    # The code for ann's origin is no good at bob's.
    r = a.get(origin(hub, "bob") + "/_codehub/handoff", params={"code": code, "next": "/"},
              allow_redirects=False)
    assert r.status_code == 400

    # The browser that asked: once, and only once.
    r = a.get(redeem, allow_redirects=False)
    assert r.status_code == 302 and r.headers["Location"] == "/"
    assert "codehub-ws=" in r.headers["Set-Cookie"]
    assert "Domain" not in r.headers["Set-Cookie"]
    state = [c for c in a.cookies if c.name.startswith("codehub-ws-state-")]
    r = a.get(redeem, allow_redirects=False, cookies={c.name: c.value for c in state})
    assert r.status_code == 400
    assert a.get(origin(hub, "ann") + "/healthz").status_code == 200


def test_subdomain_two_tabs_at_once_both_get_in(subs):
    """Two tabs opening the same workspace origin at once (a browser restoring its tabs):
    each sign-in attempt has its own state cookie, so neither overwrites the other's and
    both handoffs succeed, in either order; each clears only its own state cookie."""
    hub, a, _ = subs
    for order in ((0, 1), (1, 0)):
        for c in [c for c in a.cookies if c.domain == "ann.localhost"]:
            a.cookies.clear(c.domain, c.path, c.name)
        # Both first requests leave before either handoff comes back.
        issues = []
        for path in ("/", "/?folder=/tmp"):
            r = a.get(origin(hub, "ann") + path, headers={"Accept": "text/html"},
                      allow_redirects=False)
            assert r.status_code == 302, (r.status_code, r.text[:200])
            issues.append(r.headers["Location"])
        states = [c.name for c in a.cookies if c.name.startswith("codehub-ws-state-")]
        assert len(states) == 2 and states[0] != states[1], states
        redeems = []
        for issue in issues:
            r = a.get(issue, allow_redirects=False)
            assert r.status_code == 302
            redeems.append(r.headers["Location"])
        for i in order:
            r = a.get(redeems[i], allow_redirects=False)
            assert r.status_code == 302, (order, i, r.status_code, r.text[:200])
            assert "codehub-ws=" in r.headers["Set-Cookie"]
        assert not [c for c in a.cookies if c.name.startswith("codehub-ws-state")]
        r = a.get(origin(hub, "ann") + "/healthz")
        assert r.status_code == 200


def test_subdomain_next_never_leaves_the_origin(subs):
    hub, a, _ = subs
    for nxt in ("//evil.example/", "https://evil.example/", "/\\evil.example", "\\\\evil",
                "javascript:alert(1)"):
        for c in [c for c in a.cookies if c.domain == "ann.localhost"]:
            a.cookies.clear(c.domain, c.path, c.name)  # as if never there before
        r = a.get(origin(hub, "ann") + "/", headers={"Accept": "text/html"},
                  allow_redirects=False)
        issue = re.sub(r"next=[^&]*", "next=" + requests.utils.quote(nxt, safe=""),
                       r.headers["Location"])
        r = a.get(issue, allow_redirects=False)
        assert r.status_code == 302
        redeem = r.headers["Location"]
        assert redeem.startswith(origin(hub, "ann") + "/_codehub/handoff?")
        assert parse_qs(urlsplit(redeem).query)["next"] == ["/"], nxt
        # And the redeem step re-checks what it is given.
        redeem = re.sub(r"next=[^&]*", "next=" + requests.utils.quote(nxt, safe=""), redeem)
        r = a.get(redeem, allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"] == "/", nxt


def test_subdomain_logout_ends_workspace_access(subs):
    hub, a, _ = subs
    handoff(hub, a, "ann")
    assert a.get(origin(hub, "ann") + "/healthz").status_code == 200
    xsrf = hub.page_xsrf(a)
    r = a.post(hub.url + "/hub/logout", data={"_xsrf": xsrf}, allow_redirects=False)
    assert r.status_code in (302, 303)
    # The workspace cookie is still in the jar, but the session it names is gone.
    assert any(c.name == "codehub-ws" for c in a.cookies)
    r = a.get(origin(hub, "ann") + "/healthz", allow_redirects=False)
    assert r.status_code == 401
    r = a.get(origin(hub, "ann") + "/", headers={"Accept": "text/html"}, allow_redirects=False)
    assert r.status_code == 302 and "/hub/handoff?" in r.headers["Location"]


def test_subdomain_websocket_origins(subs):
    hub, a, b = subs
    handoff(hub, a, "ann")
    ws = next(c.value for c in a.cookies if c.name == "codehub-ws")
    cookie = "codehub-ws=" + ws
    host = f"ann.localhost:{hub.port}"
    assert ws_upgrade(hub, host, "/", origin(hub, "ann"), cookie) == 101
    for o in (hub.url, origin(hub, "bob"), "https://evil.example", None,
              origin(hub, "ann").replace("http:", "https:")):
        assert ws_upgrade(hub, host, "/", o, cookie) == 403, o
    assert ws_upgrade(hub, host, "/", origin(hub, "ann")) == 401


def test_subdomain_cookie_tossing(subs):
    """Another workspace may set a cookie for the parent domain (over http nothing stops
    it; over https the __Host- prefix does): a tossed workspace cookie neither lets anyone
    in nor shuts the owner out, and a tossed hub session cookie counts for nothing."""
    hub, a, b = subs
    handoff(hub, a, "ann")
    handoff(hub, b, "bob")
    ann_ws = next(c.value for c in a.cookies if c.name == "codehub-ws")
    bob_ws = next(c.value for c in b.cookies if c.name == "codehub-ws")
    bob_session = b.cookies.get("codehub-session", domain="localhost.local")
    url = origin(hub, "ann") + "/healthz"
    for cookie in (f"codehub-ws={bob_ws}; codehub-ws={ann_ws}",
                   f"codehub-ws={ann_ws}; codehub-ws={bob_ws}",
                   f"codehub-session={bob_session}; codehub-ws={ann_ws}"):
        r = requests.get(url, headers={"Cookie": cookie}, allow_redirects=False)
        assert r.status_code == 200, cookie
    for cookie in (f"codehub-ws={bob_ws}", f"codehub-session={bob_session}",
                   f"codehub-ws={bob_ws}; codehub-session={bob_session}"):
        r = requests.get(url, headers={"Cookie": cookie}, allow_redirects=False)
        assert r.status_code == 401, cookie


def test_subdomain_hub_cookies_never_reach_code_server(subs):
    hub, a, _ = subs
    handoff(hub, a, "ann")
    a.cookies.set("mine", "keepme", domain="ann.localhost")
    with HeadEcho() as echo:
        r = a.get(origin(hub, "ann") + f"/proxy/{echo.port}/x")
    assert r.status_code == 200 and r.text == "ok"
    cookie = echo.headers.get("cookie", "")
    assert "codehub" not in cookie and "mine=keepme" in cookie
    assert echo.headers["x-forwarded-host"] == f"ann.localhost:{hub.port}"


def test_subdomain_not_running_goes_to_the_hubs_start_page(subs):
    hub, a, _ = subs
    handoff(hub, a, "ann")
    r = hub.api(a, "DELETE", "/users/ann/server")
    assert r.status_code in (202, 204)
    wait_state(hub, a, "ann", "stopped", 60)
    r = a.get(origin(hub, "ann") + "/x?y=1", headers={"Accept": "text/html"},
              allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] == (hub.url + "/hub/spawn-pending/ann?next=%2Fuser%2Fann%2Fx"
                                     "%3Fy%3D1")
    assert a.get(origin(hub, "ann") + "/x", allow_redirects=False).status_code == 503


def test_subdomain_admin_access(make_hub, loopback_names):
    hub = subdomain_hub(make_hub, "  admin_access: true\n")
    hub.cli("user", "add", "root", "--admin", "--password-stdin", input="rootpass123\n")
    root, _ = hub.login("root", "rootpass123")
    a, _ = hub.login("ann", "annpass123")
    start_server(hub, a, "ann")
    steps, r = handoff(hub, root, "ann")
    assert r.status_code == 200, steps


def test_subdomain_config_is_checked(tmp_path):
    from conftest import BIN
    import subprocess
    for value, why in (("Example.com", "lowercase"), ("127.0.0.1", "not an IP address"),
                       ("-x.example", "domain name"), ("a..b", "domain name"),
                       ("x" * 230, "domain name")):
        f = tmp_path / "c.yaml"
        f.write_text(f"proxy:\n  user_subdomains: {value}\n")
        r = subprocess.run([BIN, "check-config", str(f)], capture_output=True, text=True)
        assert r.returncode == 1, value
        assert f"{f}:2:" in r.stderr + r.stdout and "proxy.user_subdomains" in r.stderr + \
            r.stdout and why in r.stderr + r.stdout, (value, r.stderr, r.stdout)


def test_subdomain_in_a_real_browser(make_hub):
    """Chromium: sign in on the hub, start the server, land in VS Code on ann's own origin
    (the handoff happens in redirects), and the workbench's page cannot see the hub's
    cookies nor its own (HttpOnly); bob's origin sends this browser back to the hub, which
    refuses it."""
    playwright = pytest.importorskip("playwright.sync_api")
    from test_browser import ARGS, CHROMIUM, login

    hub = subdomain_hub(make_hub)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            page = browser.new_context().new_page()
            login(page, hub, "ann", "annpass123")
            page.click("#start-server")
            page.wait_for_url(f"{origin(hub, 'ann')}/**", timeout=90000)
            page.wait_for_selector(".monaco-workbench", timeout=90000)
            assert page.evaluate("document.cookie") == ""
            cookies = page.context.cookies()
            ws = [c for c in cookies if c["name"] == "codehub-ws"]
            assert len(ws) == 1 and ws[0]["domain"] == "ann.localhost" and ws[0]["httpOnly"]
            hubs = [c for c in cookies if c["name"] == "codehub-session"]
            assert len(hubs) == 1 and hubs[0]["domain"] == "localhost"

            page.goto(origin(hub, "bob") + "/")
            assert page.url.startswith(hub.url + "/hub/handoff?workspace=bob")
            assert "belongs to someone else" in page.content()
        finally:
            browser.close()
