"""Accounts, login, sessions, CSRF, throttling and the pages' security headers."""

import base64
import hashlib
import os
import re
import subprocess
import time

import pytest
import requests

from conftest import BIN, form_xsrf


def test_first_use_signup_then_login(hub):
    s, r = hub.login("ann", "annpass123")
    assert r.headers["Location"] == "/hub/home"
    home = s.get(hub.url + "/hub/home")
    assert home.status_code == 200 and "ann" in home.text
    # The password chosen at first use is now the password.
    hub.login("ann", "annpass123")
    _, r = hub.login("ann", "wrongpass1", expect_ok=False)
    assert r.status_code == 403
    assert "Invalid username or password" in r.text


def test_login_normalises_case_and_space(hub):
    hub.login("bob", "bobpass123")
    hub.login(" Bob ", "bobpass123")


def test_invalid_username_is_explained(hub):
    _, r = hub.login("-bad", "password123", expect_ok=False)
    assert r.status_code == 400
    assert "lowercase letters" in r.text


def test_short_password_refused_at_signup(hub):
    _, r = hub.login("carl", "short", expect_ok=False)
    assert r.status_code == 400
    assert "8" in r.text
    # Nothing was created.
    assert "carl" not in hub.cli("user", "list").stdout


def test_closed_signup_and_allow_list(make_hub):
    hub = make_hub("auth:\n  open_signup: false\n  allowed_users: [dora]\n  admin_users: [eve]\n")
    _, r = hub.login("mallory", "password123", expect_ok=False)
    assert r.status_code == 403
    assert "mallory" not in hub.cli("user", "list").stdout
    hub.login("dora", "password123")
    s, _ = hub.login("eve", "password123")
    me = hub.api(s, "GET", "/user").json()
    assert me["name"] == "eve" and me["admin"] is True
    s, _ = hub.login("dora", "password123")
    assert hub.api(s, "GET", "/user").json()["admin"] is False


def test_config_admin_flag_applied_to_existing_user(make_hub):
    hub = make_hub()
    hub.login("frank", "password123")
    hub.stop()
    hub.config_path.write_text("auth:\n  admin_users: [frank]\n")
    hub.start()
    s, _ = hub.login("frank", "password123")
    assert hub.api(s, "GET", "/user").json()["admin"] is True


def test_session_cookie_attributes(hub):
    s, r = hub.login("gina", "password123")
    cookie = r.headers["Set-Cookie"]
    assert cookie.startswith("codehub-session=")
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Path=/" in cookie
    assert "Secure" not in cookie


def test_secure_cookies_over_https(make_hub):
    hub = make_hub("server:\n  public_url: https://hub.example.test\n")
    s = requests.Session()
    r = s.get(hub.url + "/hub/login")
    assert "__Host-codehub-xsrf=" in r.headers["Set-Cookie"]
    assert "Secure" in r.headers["Set-Cookie"]
    assert r.headers["Strict-Transport-Security"].startswith("max-age=")
    # requests will not send Secure cookies over http: pass them by hand.
    xsrf = form_xsrf(r.text)
    r = requests.post(hub.url + "/hub/login",
                      data={"username": "hank", "password": "password123", "_xsrf": xsrf},
                      headers={"Cookie": f"__Host-codehub-xsrf={xsrf}"}, allow_redirects=False)
    assert r.status_code == 303
    c = r.headers["Set-Cookie"]
    assert c.startswith("__Host-codehub-session=") and "Secure" in c and "Path=/" in c
    assert "Domain" not in c


def test_login_without_xsrf_is_refused(hub):
    r = requests.post(hub.url + "/hub/login", data={"username": "ivy", "password": "password123"},
                      allow_redirects=False)
    assert r.status_code == 403
    assert "ivy" not in hub.cli("user", "list").stdout
    # A form token not matching the cookie is refused too.
    s = requests.Session()
    s.get(hub.url + "/hub/login")
    r = s.post(hub.url + "/hub/login",
               data={"username": "ivy", "password": "password123", "_xsrf": "forged"},
               allow_redirects=False)
    assert r.status_code == 403


def test_session_fixation_new_session_each_login(hub):
    s, _ = hub.login("jay", "password123")
    first = s.cookies.get("codehub-session")
    s2, _ = hub.login("jay", "password123")
    assert s2.cookies.get("codehub-session") != first


def test_next_redirect_only_local(hub):
    hub.login("kim", "password123")
    _, r = hub.login("kim", "password123", next_url="/hub/token")
    assert r.headers["Location"] == "/hub/token"
    for evil in ("//evil.example", "https://evil.example/", "/\\evil.example", "javascript:x"):
        _, r = hub.login("kim", "password123", next_url=evil)
        assert r.headers["Location"] == "/hub/home", evil


def test_unauthenticated_pages_redirect_to_login(hub):
    r = requests.get(hub.url + "/hub/home?tab=1", allow_redirects=False)
    assert r.status_code == 302
    assert r.headers["Location"] == "/hub/login?next=%2Fhub%2Fhome%3Ftab%3D1"
    s, _ = hub.login("lee", "password123")
    r = s.get(hub.url + "/hub/login", allow_redirects=False)
    assert r.status_code == 302


def test_logout_needs_xsrf_and_ends_session(hub):
    s, _ = hub.login("max", "password123")
    cookie = s.cookies.get("codehub-session")
    r = s.post(hub.url + "/hub/logout", data={}, allow_redirects=False)
    assert r.status_code == 403
    assert s.get(hub.url + "/hub/home", allow_redirects=False).status_code == 200
    xsrf = hub.page_xsrf(s)
    r = s.post(hub.url + "/hub/logout", data={"_xsrf": xsrf}, allow_redirects=False)
    assert r.status_code == 303
    # The old cookie no longer works anywhere.
    r = requests.get(hub.url + "/hub/home", cookies={"codehub-session": cookie},
                     allow_redirects=False)
    assert r.status_code == 302


def test_change_password(hub):
    s, _ = hub.login("nia", "password123")
    other, _ = hub.login("nia", "password123")
    xsrf = hub.page_xsrf(s, "/hub/password")
    r = s.post(hub.url + "/hub/password", data={
        "_xsrf": xsrf, "current_password": "wrong-one", "new_password": "newpass456",
        "confirm_password": "newpass456"}, allow_redirects=False)
    assert r.status_code == 403
    r = s.post(hub.url + "/hub/password", data={
        "_xsrf": xsrf, "current_password": "password123", "new_password": "newpass456",
        "confirm_password": "different1"}, allow_redirects=False)
    assert r.status_code == 400
    r = s.post(hub.url + "/hub/password", data={
        "current_password": "password123", "new_password": "newpass456",
        "confirm_password": "newpass456"}, allow_redirects=False)
    assert r.status_code == 403  # no XSRF token
    r = s.post(hub.url + "/hub/password", data={
        "_xsrf": xsrf, "current_password": "password123", "new_password": "newpass456",
        "confirm_password": "newpass456"}, allow_redirects=False)
    assert r.status_code == 303
    # This browser stays signed in; the other session is gone; the new password works.
    assert s.get(hub.url + "/hub/home", allow_redirects=False).status_code == 200
    assert other.get(hub.url + "/hub/home", allow_redirects=False).status_code == 302
    hub.login("nia", "newpass456")
    _, r = hub.login("nia", "password123", expect_ok=False)
    assert r.status_code == 403


def test_throttling_per_user(make_hub):
    hub = make_hub("auth:\n  throttle_free_attempts: 3\n  throttle_max_delay: 30\n")
    hub.login("olga", "password123")
    codes = [hub.login("olga", "wrong-pass", expect_ok=False)[1].status_code for _ in range(4)]
    assert codes[:3] == [403, 403, 403]
    assert codes[3] == 429
    # Even the right password waits now.
    _, r = hub.login("olga", "password123", expect_ok=False)
    assert r.status_code == 429
    assert int(r.headers["Retry-After"]) >= 1
    assert "Too many failed attempts" in r.text
    # The delay is short at first: after it, the right password works and resets.
    time.sleep(2.2)
    hub.login("olga", "password123")
    assert "login.throttled" in hub.log()


def test_throttling_per_address(make_hub):
    hub = make_hub("auth:\n  throttle_free_attempts: 2\n  throttle_max_delay: 30\n")
    for name in ("u1", "u2", "u3"):
        hub.login(name, "password123")
    codes = [hub.login(n, "wrong-pass", expect_ok=False)[1].status_code
             for n in ("u1", "u2", "u3", "u1")]
    assert codes[-1] == 429


def test_security_headers_on_pages(hub):
    r = requests.get(hub.url + "/hub/login")
    h = r.headers
    assert "frame-ancestors 'none'" in h["Content-Security-Policy"]
    assert "script-src 'self'" in h["Content-Security-Policy"]
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["X-Frame-Options"] == "DENY"
    assert h["Referrer-Policy"]
    assert "no-store" in h["Cache-Control"]
    # No inline scripts: everything the CSP forbids would break the page.
    assert "<script>" not in r.text and " onclick=" not in r.text


def test_login_page_works_without_javascript(hub):
    r = requests.get(hub.url + "/hub/login")
    assert '<form method="post" action="/hub/login">' in r.text
    assert 'name="username"' in r.text and 'name="password"' in r.text


def test_static_assets_served_and_templates_not(hub):
    r = requests.get(hub.url + "/hub/static/codehub.css")
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/css")
    assert requests.get(hub.url + "/hub/static/../templates/page.html").status_code in (400, 404)
    assert requests.get(hub.url + "/hub/static/templates/page.html").status_code == 404


def test_admin_page_for_admins_only(hub, admin):
    r = admin["session"].get(hub.url + "/hub/admin")
    assert r.status_code == 200 and "admin.js" in r.text
    s, _ = hub.login("pia", "password123")
    assert s.get(hub.url + "/hub/admin").status_code == 403
    assert 'href="/hub/admin"' not in s.get(hub.url + "/hub/home").text


def test_health_and_metrics(hub, admin):
    r = requests.get(hub.url + "/hub/health")
    assert r.status_code == 200 and r.json()["status"] == "ok"
    assert requests.get(hub.url + "/hub/metrics").status_code == 401
    hub.login("quin", "password123")
    hub.login("quin", "bad-password", expect_ok=False)
    r = requests.get(hub.url + "/hub/metrics", headers={"Authorization": "Bearer " + admin["token"]})
    assert r.status_code == 200
    text = r.text
    assert "# TYPE codehub_http_requests_total counter" in text
    assert re.search(r'codehub_http_requests_total\{class="2xx"\} [1-9]', text)
    assert "codehub_http_request_duration_seconds_bucket" in text
    assert re.search(r'codehub_logins_total\{result="ok"\} [1-9]', text)
    assert re.search(r'codehub_logins_total\{result="failed"\} [1-9]', text)
    assert "codehub_users " in text and "codehub_sessions " in text


def test_logs_hold_no_secrets(hub, admin):
    s, r = hub.login("rita", "supersecret-pw")
    hub.login("rita", "another-secret", expect_ok=False)
    cookie = s.cookies.get("codehub-session")
    requests.get(hub.url + "/hub/api/user?token=" + admin["token"],
                 headers={"Authorization": "Bearer " + admin["token"]})
    log = hub.log()
    assert "login.ok" in log and "login.failed" in log
    for secret in ("supersecret-pw", "another-secret", cookie, admin["token"], admin["password"]):
        assert secret not in log


def test_json_logs(make_hub):
    import json
    hub = make_hub("log:\n  format: json\n")
    hub.login("sam", "password123")
    lines = [json.loads(line) for line in hub.log().splitlines() if line.startswith("{")]
    assert any(l["event"] == "login.ok" and l["user"] == "sam" for l in lines)
    assert any(l["event"] == "request" and l["path"] == "/hub/login" for l in lines)


# --- the hub secret from a file (auth.secret_file) -------------------------------------------


def _secret_key(text):
    """The hub secret derived from a secret file's text (docs/auth.md)."""
    return hashlib.blake2b(b"codehub-hub-secret:" + text, digest_size=32).digest()


def _csrf_for(key, session_cookie):
    """The CSRF token of a session under `key`, computed independently (docs/auth.md)."""
    session_hash = hashlib.blake2b(session_cookie.encode(), digest_size=32).hexdigest()
    mac = hashlib.blake2b(b"csrf:" + session_hash.encode(), key=key, digest_size=32).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def _write_secret(path, data, mode=0o600):
    path.write_bytes(data)
    os.chmod(path, mode)


def _state_change(hub, s, xsrf):
    """A cookie-authenticated state change (creating an API token) with `xsrf` as its CSRF
    token; returns the status: 201 when the token was accepted, 403 when not."""
    r = s.post(hub.url + "/hub/api/users/ann/tokens", json={"note": "secret-file"},
               headers={"X-XSRF-Token": xsrf}, timeout=30)
    assert r.status_code in (201, 403), (r.status_code, r.text[:300])
    return r.status_code


def _meta_secret(hub):
    return hub.sql("SELECT value FROM meta WHERE key = 'cookie_secret'")


def test_secret_file_keys_csrf_tokens(make_hub, tmp_path):
    # First without a file: the store's generated secret.
    hub = make_hub()
    s, _ = hub.login("ann", "password123")
    cookie = s.cookies.get("codehub-session")
    from_store = hub.page_xsrf(s)
    assert _state_change(hub, s, from_store) == 201
    meta = _meta_secret(hub)
    assert len(meta) == 1 and len(meta[0][0]) == 64

    # With a file, the secret is derived from its text (the newline is not part of it):
    # anything that reads the same text, such as another replica, computes the same token.
    secret = tmp_path / "hub-secret"
    first = os.urandom(32).hex().encode()
    _write_secret(secret, first + b"\n")
    hub.stop()
    hub.config_path.write_text(f"auth:\n  secret_file: {secret}\n")
    hub.start()
    from_file = hub.page_xsrf(s)
    assert from_file == _csrf_for(_secret_key(first), cookie)
    assert from_file != from_store
    assert _state_change(hub, s, from_store) == 403
    assert _state_change(hub, s, from_file) == 201
    assert "hub.secret_from_file" in hub.log()

    # A restart with the same file keeps the token valid.
    hub.restart()
    assert hub.page_xsrf(s) == from_file
    assert _state_change(hub, s, from_file) == 201

    # New content (with a CR LF this time) and a restart: the old token is refused, the
    # session itself lives on.
    second = os.urandom(24).hex().encode()
    _write_secret(secret, second + b"\r\n")
    hub.restart()
    assert _state_change(hub, s, from_file) == 403
    rotated = hub.page_xsrf(s)
    assert rotated == _csrf_for(_secret_key(second), cookie)
    assert _state_change(hub, s, rotated) == 201

    # The store's secret was neither read nor replaced: without the file it is back.
    assert _meta_secret(hub) == meta
    hub.stop()
    hub.config_path.write_text("")
    hub.start()
    assert hub.page_xsrf(s) == from_store
    assert _state_change(hub, s, from_store) == 201
    assert _state_change(hub, s, rotated) == 403
    # No log line holds the secret text.
    log = hub.log()
    assert first.decode() not in log and second.decode() not in log


def _serve_fails(tmp_path, config="", env=None):
    """Runs `codehub serve` expected to stop at start-up; returns its stderr."""
    cfg = tmp_path / "codehub.yaml"
    cfg.write_text(config)
    run_env = dict(os.environ)
    for k in [k for k in run_env if k.startswith("CODEHUB_") and k != "CODEHUB_BIN"]:
        del run_env[k]
    run_env.update(env or {})
    res = subprocess.run([BIN, "serve", "--config", str(cfg), "--data-dir",
                          str(tmp_path / "data"), "--bind", "127.0.0.1:0"],
                         capture_output=True, text=True, env=run_env, stdin=subprocess.DEVNULL,
                         timeout=60)
    assert res.returncode != 0, res.stderr
    return res.stderr


def test_secret_file_errors_stop_the_hub(tmp_path):
    missing = tmp_path / "missing-secret"
    short = tmp_path / "short-secret"
    short.write_text("changeme\n")
    too_long = tmp_path / "long-secret"
    too_long.write_text("x" * 5000)
    nul = tmp_path / "nul-secret"
    nul.write_bytes(b"x" * 20 + b"\0" + b"x" * 20 + b"\n")
    cases = [
        (missing, "No such file or directory"),
        (short, "holds 8 characters; at least 32 are needed"),
        (too_long, "at most 4096 are allowed"),
        (nul, "holds a NUL byte"),
        (tmp_path, "Is a directory"),
    ]
    for path, message in cases:
        err = _serve_fails(tmp_path, f"auth:\n  secret_file: {path}\n")
        assert "hub.secret_file_invalid" in err, err
        assert f"auth.secret_file {path}" in err, err
        assert message in err, err
        assert "hub.listening" not in err
    # The environment variable works the same way.
    err = _serve_fails(tmp_path, env={"CODEHUB_AUTH_SECRET_FILE": str(short)})
    assert str(short) in err and "at least 32 are needed" in err, err


@pytest.mark.sqlite_only
def test_secret_file_mode_warning(make_hub, tmp_path):
    # Laid out as a Kubernetes Secret volume: KEY -> ..data/KEY, the file 0644.
    mount = tmp_path / "mount"
    (mount / "..data").mkdir(parents=True)
    text = os.urandom(32).hex().encode()
    _write_secret(mount / "..data" / "hub-secret", text, 0o644)
    (mount / "hub-secret").symlink_to("..data/hub-secret")
    hub = make_hub(f"auth:\n  secret_file: {mount / 'hub-secret'}\n")
    s, _ = hub.login("ann", "password123")
    assert _state_change(hub, s, hub.page_xsrf(s)) == 201
    log = hub.log()
    assert log.count("hub.secret_file_mode") == 1
    assert "mode=0644" in log
    assert text.decode() not in log
    # Readable by its owner (and group) only: no warning.
    os.chmod(mount / "..data" / "hub-secret", 0o440)
    hub.restart()
    assert hub.log().count("hub.secret_file_mode") == 1
