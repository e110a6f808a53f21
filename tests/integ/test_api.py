"""Black-box tests of the REST API under /hub/api (docs/api.md), against the real binary."""

import time

import pytest
import requests

PAGINATION = "application/jupyterhub-pagination+json"
TEN_YEARS = 10 * 365 * 24 * 3600


def error(r, status):
    """Asserts `r` is the JSON error {"status", "message"} with `status`; returns the message."""
    assert r.status_code == status, (r.status_code, r.text)
    assert r.headers["Content-Type"].startswith("application/json")
    body = r.json()
    assert body["status"] == status
    assert isinstance(body["message"], str) and body["message"]
    return body["message"]


def add_user(hub, name, password, *extra):
    hub.cli("user", "add", name, *extra, "--password-stdin", input=password + "\n")


@pytest.fixture
def ann(hub, admin):
    """A non-admin 'ann' with a browser session and a token (the admin exists too)."""
    add_user(hub, "ann", "annpass1234")
    s, _ = hub.login("ann", "annpass1234")
    return {"session": s, "token": hub.token("ann"), "name": "ann", "password": "annpass1234"}


def raw(hub, method, path, **kw):
    """A request without any credentials or helper headers."""
    return requests.request(method, hub.url + "/hub/api" + path, timeout=30, **kw)


def check_user_model(u, name, admin):
    assert u["kind"] == "user"
    assert u["name"] == name
    assert u["admin"] is admin
    assert u["roles"] == (["admin"] if admin else ["user"])
    assert u["groups"] == []
    assert isinstance(u["created"], str) and u["created"].endswith("Z")
    assert "last_activity" in u
    assert u["server"] is None
    assert u["pending"] is None
    assert u["servers"] == {}
    assert "password_hash" not in u and "password" not in u


# --- version, info, whoami ---------------------------------------------------------------


def test_root_gives_version_without_auth(hub):
    for path in ("", "/"):
        r = raw(hub, "GET", path)
        assert r.status_code == 200, r.text
        assert r.headers["Content-Type"].startswith("application/json")
        version = r.json()["version"]
        assert isinstance(version, str) and version
    v = hub.cli("version").stdout
    assert version in v
    r = raw(hub, "HEAD", "")
    assert r.status_code == 200
    assert r.content == b""


def test_info(hub, admin):
    error(raw(hub, "GET", "/info"), 401)
    r = hub.api(admin["token"], "GET", "/info")
    assert r.status_code == 200, r.text
    info = r.json()
    assert info["version"] == raw(hub, "GET", "").json()["version"]
    assert info["authenticator"] == {"class": "firstuse", "open_signup": True}
    assert info["spawner"] == {"class": "local"}


def test_info_reports_closed_signup(make_hub):
    h = make_hub(config="auth:\n  open_signup: false\n  admin_users: [root]\n")
    add_user(h, "root", "rootpass123", "--admin")
    r = h.api(h.token("root"), "GET", "/info")
    assert r.status_code == 200, r.text
    assert r.json()["authenticator"]["open_signup"] is False


def test_whoami_session_and_tokens(hub, admin):
    r = hub.api(admin["session"], "GET", "/user")
    assert r.status_code == 200, r.text
    me = r.json()
    check_user_model(me, "root", True)
    assert me["scopes"] == ["admin"]
    assert me["auth"] == "session"

    r = hub.api(admin["token"], "GET", "/user")
    me = r.json()
    assert me["name"] == "root" and me["scopes"] == ["admin"] and me["auth"] == "token"
    assert isinstance(me["token_id"], str) and me["token_id"].isdigit()

    # A user-scoped token of an admin: the account is an admin, the token is not.
    r = hub.api(hub.token("root", "--scope", "user"), "GET", "/user")
    me = r.json()
    assert me["admin"] is True
    assert me["scopes"] == ["user"]


def test_whoami_non_admin(hub, ann):
    me = hub.api(ann["token"], "GET", "/user").json()
    check_user_model(me, "ann", False)
    assert me["scopes"] == ["user"]
    assert me["auth"] == "token"


# --- authentication -----------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/info", "/user", "/users", "/users/root", "/users/root/tokens"])
def test_no_credentials_is_401(hub, admin, path):
    error(raw(hub, "GET", path), 401)


def test_bad_credentials_are_401(hub, admin):
    bogus = "chb_" + "A" * 43
    for value in (f"Bearer {bogus}", f"token {bogus}", "Bearer ", "Basic cm9vdDpyb290cGFzczEyMw==",
                  f"Bearer {admin['token']}x", f"Bearer {admin['token'][:-1]}"):
        error(raw(hub, "GET", "/user", headers={"Authorization": value}), 401)
    # A made-up session cookie is no session either.
    error(raw(hub, "GET", "/user", cookies={"codehub-session": "A" * 43}), 401)


def test_token_scheme_like_jupyterhub(hub, admin):
    r = raw(hub, "GET", "/user", headers={"Authorization": f"token {admin['token']}"})
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "root"


def test_expired_token_is_401(hub, admin):
    tok = hub.token("root", "--scope", "admin", "--expires-in", "1")
    time.sleep(2)
    error(hub.api(tok, "GET", "/user"), 401)
    error(hub.api(tok, "GET", "/users"), 401)


def test_user_scoped_token_of_admin_cannot_use_admin_endpoints(hub, admin):
    tok = hub.token("root", "--scope", "user")
    error(hub.api(tok, "GET", "/users"), 403)
    error(hub.api(tok, "POST", "/users", json={"usernames": ["zed"]}), 403)
    error(hub.api(tok, "POST", "/users/zed"), 403)
    error(hub.api(tok, "DELETE", "/users/zed"), 403)
    # Nothing was created.
    error(hub.api(admin["token"], "GET", "/users/zed"), 404)
    # What is the user's own stays allowed.
    assert hub.api(tok, "GET", "/users/root").status_code == 200
    assert hub.api(tok, "GET", "/users/root/tokens").status_code == 200


def test_admin_token_can_use_admin_endpoints(hub, admin):
    r = hub.api(admin["token"], "POST", "/users/zed")
    assert r.status_code == 201, r.text
    assert hub.api(admin["token"], "GET", "/users").status_code == 200
    assert hub.api(admin["token"], "DELETE", "/users/zed").status_code == 204


def test_non_admin_gets_403_on_admin_endpoints(hub, ann):
    for s_or_tok in (ann["token"], ann["session"]):
        error(hub.api(s_or_tok, "GET", "/users"), 403)
        error(hub.api(s_or_tok, "POST", "/users", json={"usernames": ["zed"]}), 403)
        error(hub.api(s_or_tok, "POST", "/users/zed", json={"admin": True}), 403)
        error(hub.api(s_or_tok, "PATCH", "/users/root", json={"admin": False}), 403)
        error(hub.api(s_or_tok, "PATCH", "/users/ann", json={"admin": True}), 403)
        error(hub.api(s_or_tok, "DELETE", "/users/root"), 403)
    me = hub.api(ann["token"], "GET", "/users/ann").json()
    assert me["admin"] is False
    assert hub.api(ann["token"], "GET", "/users/root").status_code == 404


def test_non_admin_cannot_tell_which_users_exist(hub, ann):
    # Another user's record, tokens and token ids answer exactly like a missing user.
    for path in ("/users/root", "/users/root/tokens", "/users/root/tokens/1"):
        error(hub.api(ann["token"], "GET", path), 404)
    for path in ("/users/nobody", "/users/nobody/tokens", "/users/nobody/tokens/1"):
        error(hub.api(ann["token"], "GET", path), 404)
    error(hub.api(ann["token"], "POST", "/users/root/tokens", json={}), 404)
    error(hub.api(ann["token"], "DELETE", "/users/root/tokens/1"), 404)
    assert hub.api(ann["token"], "GET", "/users/ann").status_code == 200


# --- CSRF -----------------------------------------------------------------------------------


def test_csrf_required_for_cookie_state_changes(hub, admin, ann):
    s = admin["session"]
    url = hub.url + "/hub/api"
    for headers in ({}, {"X-XSRF-Token": "bogus"}, {"X-XSRF-Token": ""}):
        r = s.post(url + "/users/mallory", json={"admin": True}, headers=headers, timeout=30)
        assert error(r, 403) == "XSRF token missing or invalid"
        r = s.post(url + "/users", json={"usernames": ["mallory"]}, headers=headers, timeout=30)
        error(r, 403)
        r = s.patch(url + "/users/ann", json={"admin": True}, headers=headers, timeout=30)
        error(r, 403)
        r = s.delete(url + "/users/ann", headers=headers, timeout=30)
        error(r, 403)
        r = s.post(url + "/users/root/tokens", json={"note": "csrf"}, headers=headers, timeout=30)
        error(r, 403)
    # Nothing changed.
    error(hub.api(admin["token"], "GET", "/users/mallory"), 404)
    assert hub.api(admin["token"], "GET", "/users/ann").json()["admin"] is False
    assert hub.api(admin["token"], "GET", "/users/root/tokens").json()["api_tokens"] != []
    notes = [t["note"] for t in hub.api(admin["token"], "GET", "/users/root/tokens").json()
             ["api_tokens"]]
    assert "csrf" not in notes

    # Another user's CSRF token does not work for this session.
    other = hub.page_xsrf(ann["session"])
    r = s.post(url + "/users/mallory", json={}, headers={"X-XSRF-Token": other}, timeout=30)
    error(r, 403)

    # The page's token makes the same call work; GETs never need it.
    assert s.get(url + "/users/ann", timeout=30).status_code == 200
    r = hub.api(s, "PATCH", "/users/ann", json={"admin": True})
    assert r.status_code == 200, r.text
    assert r.json()["admin"] is True


def test_token_callers_need_no_csrf(hub, admin):
    r = hub.api(admin["token"], "POST", "/users/tina")
    assert r.status_code == 201, r.text


# --- users list and pagination ------------------------------------------------------------


def make_users(hub, admin, names):
    r = hub.api(admin["token"], "POST", "/users", json={"usernames": names})
    assert r.status_code == 201, r.text


def test_users_list_plain(hub, admin):
    make_users(hub, admin, ["u3", "u1", "u2"])
    r = hub.api(admin["token"], "GET", "/users")
    assert r.status_code == 200, r.text
    users = r.json()
    assert isinstance(users, list)
    assert [u["name"] for u in users] == ["root", "u1", "u2", "u3"]
    check_user_model(users[0], "root", True)
    check_user_model(users[1], "u1", False)
    # Cookie callers (the admin page) see the same list.
    assert [u["name"] for u in hub.api(admin["session"], "GET", "/users").json()] == \
        ["root", "u1", "u2", "u3"]


def test_users_pagination(hub, admin):
    make_users(hub, admin, ["u1", "u2", "u3", "u4", "u5"])
    h = {"Accept": PAGINATION}
    r = hub.api(admin["token"], "GET", "/users?limit=2", headers=h)
    assert r.status_code == 200, r.text
    page = r.json()
    assert set(page) == {"items", "_pagination"}
    assert [u["name"] for u in page["items"]] == ["root", "u1"]
    assert page["_pagination"] == {
        "offset": 0, "limit": 2, "total": 6,
        "next": {"offset": 2, "limit": 2, "url": "/hub/api/users?offset=2&limit=2"}}

    # Following next.url walks the whole list once.
    seen = [u["name"] for u in page["items"]]
    url = page["_pagination"]["next"]["url"]
    while url:
        r = requests.get(hub.url + url, headers={**h, "Authorization": f"Bearer {admin['token']}"},
                         timeout=30)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [u["name"] for u in page["items"]]
        nxt = page["_pagination"]["next"]
        url = nxt["url"] if nxt else None
    assert seen == ["root", "u1", "u2", "u3", "u4", "u5"]
    assert page["_pagination"]["next"] is None

    # An exactly full last page has no next.
    page = hub.api(admin["token"], "GET", "/users?offset=4&limit=2", headers=h).json()
    assert [u["name"] for u in page["items"]] == ["u4", "u5"]
    assert page["_pagination"]["next"] is None
    # Past the end: empty, with the total.
    page = hub.api(admin["token"], "GET", "/users?offset=50", headers=h).json()
    assert page["items"] == []
    assert page["_pagination"] == {"offset": 50, "limit": 200, "total": 6, "next": None}
    # Defaults and clamping.
    page = hub.api(admin["token"], "GET", "/users", headers=h).json()
    assert page["_pagination"]["offset"] == 0 and page["_pagination"]["limit"] == 200
    assert hub.api(admin["token"], "GET", "/users?limit=5000",
                   headers=h).json()["_pagination"]["limit"] == 1000
    page = hub.api(admin["token"], "GET", "/users?limit=0", headers=h).json()
    assert page["_pagination"]["limit"] == 1 and len(page["items"]) == 1
    # Without the Accept header the same query is a plain list.
    r = hub.api(admin["token"], "GET", "/users?offset=1&limit=2")
    assert [u["name"] for u in r.json()] == ["u1", "u2"]


@pytest.mark.parametrize("query", ["offset=-1", "limit=-5", "offset=abc", "limit=1.5", "limit=",
                                   "offset=0x10", "limit=%20", "limit=+3", "offset=1e3",
                                   "offset=99999999999999999999"])
def test_users_bad_query_is_400(hub, admin, query):
    error(hub.api(admin["token"], "GET", "/users?" + query), 400)


# --- creating users -------------------------------------------------------------------------


def test_users_post_bulk(hub, admin):
    tok = admin["token"]
    r = hub.api(tok, "POST", "/users", json={"usernames": ["ann", "bob"], "admin": False})
    assert r.status_code == 201, r.text
    created = r.json()
    assert [u["name"] for u in created] == ["ann", "bob"]
    for u in created:
        check_user_model(u, u["name"], False)

    # All exist: 409. Some exist: only the new ones, as JupyterHub does.
    error(hub.api(tok, "POST", "/users", json={"usernames": ["ann", "bob"]}), 409)
    r = hub.api(tok, "POST", "/users", json={"usernames": ["bob", "carl", "carl"], "admin": True})
    assert r.status_code == 201, r.text
    assert [(u["name"], u["admin"]) for u in r.json()] == [("carl", True)]
    assert hub.api(tok, "GET", "/users/bob").json()["admin"] is False


def test_users_post_invalid_names_change_nothing(hub, admin):
    tok = admin["token"]
    for bad in ("Upper", "has space", "-dash", "x" * 33, "", "a/b", "é"):
        msg = error(hub.api(tok, "POST", "/users", json={"usernames": ["fine1", bad]}), 400)
        assert "invalid username" in msg
    msg = error(hub.api(tok, "POST", "/users", json={"usernames": ["fine1", "Upper"]}), 400)
    assert "Upper" in msg and "lowercase" in msg
    error(hub.api(tok, "POST", "/users", json={"usernames": ["fine1", 7]}), 400)
    error(hub.api(tok, "GET", "/users/fine1"), 404)


@pytest.mark.parametrize("body", [{}, {"usernames": []}, {"usernames": "ann"},
                                  {"usernames": ["ann"], "admin": "yes"},
                                  {"usernames": ["ann"], "groups": []}])
def test_users_post_bad_body(hub, admin, body):
    error(hub.api(admin["token"], "POST", "/users", json=body), 400)
    error(hub.api(admin["token"], "GET", "/users/ann"), 404)


def test_users_post_needs_a_body(hub, admin):
    error(hub.api(admin["token"], "POST", "/users"), 400)


# --- one user ---------------------------------------------------------------------------------


def test_user_create_get_patch_delete(hub, admin):
    tok = admin["token"]
    r = hub.api(tok, "POST", "/users/dave", json={"admin": True})
    assert r.status_code == 201, r.text
    check_user_model(r.json(), "dave", True)
    assert r.json()["last_activity"] is None
    error(hub.api(tok, "POST", "/users/dave"), 409)

    r = hub.api(tok, "POST", "/users/eve")  # no body at all
    assert r.status_code == 201, r.text
    check_user_model(r.json(), "eve", False)

    r = hub.api(tok, "GET", "/users/dave")
    assert r.status_code == 200
    check_user_model(r.json(), "dave", True)

    r = hub.api(tok, "PATCH", "/users/dave", json={"admin": False})
    assert r.status_code == 200, r.text
    check_user_model(r.json(), "dave", False)
    assert hub.api(tok, "GET", "/users/dave").json()["admin"] is False
    # An empty patch changes nothing; sending the name back unchanged is no rename.
    r = hub.api(tok, "PATCH", "/users/dave", json={"name": "dave"})
    assert r.status_code == 200, r.text

    assert hub.api(tok, "DELETE", "/users/dave").status_code == 204
    error(hub.api(tok, "GET", "/users/dave"), 404)
    error(hub.api(tok, "DELETE", "/users/dave"), 404)
    error(hub.api(tok, "PATCH", "/users/dave", json={"admin": True}), 404)


@pytest.mark.parametrize("name", ["Bad", "a b", "-x", "x" * 33])
def test_user_post_invalid_name(hub, admin, name):
    msg = error(hub.api(admin["token"], "POST", f"/users/{name}"), 400)
    assert "invalid username" in msg
    r = hub.api(admin["token"], "GET", "/users")
    assert [u["name"] for u in r.json()] == ["root"]


@pytest.mark.parametrize("body,fragment", [
    ({"name": "other"}, "renaming users is not supported"),
    ({"admin": "yes"}, "admin"),
    ({"password": 5}, "password"),
    ({"color": "red"}, "color"),
])
def test_user_patch_bad_body(hub, admin, body, fragment):
    hub.api(admin["token"], "POST", "/users/dave")
    msg = error(hub.api(admin["token"], "PATCH", "/users/dave", json=body), 400)
    assert fragment in msg
    assert hub.api(admin["token"], "GET", "/users/dave").json()["admin"] is False


def test_user_patch_needs_a_body(hub, admin):
    hub.api(admin["token"], "POST", "/users/dave")
    error(hub.api(admin["token"], "PATCH", "/users/dave"), 400)


def test_cannot_delete_or_demote_yourself(hub, admin):
    msg = error(hub.api(admin["session"], "DELETE", "/users/root"), 400)
    assert msg == "you cannot delete your own account"
    error(hub.api(admin["token"], "DELETE", "/users/root"), 400)
    error(hub.api(admin["token"], "PATCH", "/users/root", json={"admin": False}), 400)
    assert hub.api(admin["token"], "GET", "/users/root").json()["admin"] is True


def test_config_admin_cannot_be_demoted(make_hub):
    h = make_hub(config="auth:\n  admin_users: [boss]\n")
    add_user(h, "root", "rootpass123", "--admin")
    tok = h.token("root", "--scope", "admin")
    r = h.api(tok, "POST", "/users/boss")
    assert r.status_code == 201, r.text
    assert r.json()["admin"] is True  # named in auth.admin_users
    error(h.api(tok, "PATCH", "/users/boss", json={"admin": False}), 409)
    assert h.api(tok, "GET", "/users/boss").json()["admin"] is True


def test_admin_flag_takes_effect(hub, admin, ann):
    error(hub.api(ann["token"], "GET", "/users"), 403)
    r = hub.api(admin["token"], "PATCH", "/users/ann", json={"admin": True})
    assert r.status_code == 200 and r.json()["admin"] is True
    # A session of an admin acts as admin; ann's user-scoped token still does not.
    assert hub.api(ann["session"], "GET", "/users").status_code == 200
    error(hub.api(ann["token"], "GET", "/users"), 403)


def test_password_reset_and_set(hub, admin, ann):
    tok = admin["token"]
    r = hub.api(tok, "PATCH", "/users/ann", json={"password": None})
    assert r.status_code == 200, r.text
    check_user_model(r.json(), "ann", False)
    # Her sessions ended; her token is not a session and still works.
    error(hub.api(ann["session"], "GET", "/user"), 401)
    assert hub.api(ann["token"], "GET", "/user").status_code == 200
    # The old password is gone; the next login chooses a new one.
    s, _ = hub.login("ann", "brand-new-pass")
    assert hub.api(s, "GET", "/user").json()["name"] == "ann"
    _, r = hub.login("ann", "annpass1234", expect_ok=False)
    assert r.status_code not in (302, 303)

    # Too short for the policy: 400 and nothing changes.
    msg = error(hub.api(tok, "PATCH", "/users/ann", json={"password": "short"}), 400)
    assert "password" in msg
    assert hub.api(s, "GET", "/user").status_code == 200

    r = hub.api(tok, "PATCH", "/users/ann", json={"password": "set-by-admin-1"})
    assert r.status_code == 200, r.text
    error(hub.api(s, "GET", "/user"), 401)
    s2, _ = hub.login("ann", "set-by-admin-1")
    assert hub.api(s2, "GET", "/user").status_code == 200
    assert "set-by-admin-1" not in hub.log()
    assert "brand-new-pass" not in hub.log()


def test_deleting_a_user_revokes_their_credentials(hub, admin, ann):
    assert hub.api(admin["token"], "DELETE", "/users/ann").status_code == 204
    error(hub.api(ann["token"], "GET", "/user"), 401)
    error(hub.api(ann["session"], "GET", "/user"), 401)


# --- tokens --------------------------------------------------------------------------------


def test_token_round_trip(hub, ann):
    s = ann["session"]
    r = hub.api(s, "POST", "/users/ann/tokens", json={"note": "ci", "expires_in": 3600})
    assert r.status_code == 201, r.text
    t = r.json()
    secret = t["token"]
    assert secret.startswith("chb_") and len(secret) == 4 + 43
    assert t["kind"] == "api_token"
    assert isinstance(t["id"], str) and t["id"].isdigit()
    assert t["user"] == "ann"
    assert t["note"] == "ci"
    assert t["scopes"] == ["user"]
    assert secret.startswith(t["prefix"]) and len(t["prefix"]) < len(secret) // 2
    assert t["created"].endswith("Z")
    assert t["expires_at"] is not None and t["expires_at"] > t["created"]

    me = hub.api(secret, "GET", "/user").json()
    assert me["name"] == "ann" and me["auth"] == "token" and me["token_id"] == t["id"]

    r = hub.api(s, "GET", "/users/ann/tokens")
    assert r.status_code == 200, r.text
    assert secret not in r.text
    listed = {x["id"]: x for x in r.json()["api_tokens"]}
    assert t["id"] in listed
    assert "token" not in listed[t["id"]]
    assert listed[t["id"]]["note"] == "ci"
    assert listed[t["id"]]["prefix"] == t["prefix"]

    r = hub.api(s, "GET", f"/users/ann/tokens/{t['id']}")
    assert r.status_code == 200, r.text
    one = r.json()
    assert secret not in r.text
    assert {k: v for k, v in one.items() if k != "last_activity"} == \
        {k: v for k, v in t.items() if k not in ("token", "last_activity")}

    assert hub.api(s, "DELETE", f"/users/ann/tokens/{t['id']}").status_code == 204
    error(hub.api(secret, "GET", "/user"), 401)
    error(hub.api(s, "GET", f"/users/ann/tokens/{t['id']}"), 404)
    error(hub.api(s, "DELETE", f"/users/ann/tokens/{t['id']}"), 404)
    ids = [x["id"] for x in hub.api(s, "GET", "/users/ann/tokens").json()["api_tokens"]]
    assert t["id"] not in ids
    assert secret not in hub.log()


def test_token_defaults(hub, ann):
    r = hub.api(ann["token"], "POST", "/users/ann/tokens")
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["note"] == "" and t["scopes"] == ["user"] and t["expires_at"] is None
    r = hub.api(ann["token"], "POST", "/users/ann/tokens",
                json={"note": None, "expires_in": None, "scopes": None})
    assert r.status_code == 201, r.text
    assert r.json()["expires_at"] is None


def test_a_token_can_revoke_itself(hub, ann):
    t = hub.api(ann["token"], "POST", "/users/ann/tokens", json={}).json()
    r = hub.api(t["token"], "DELETE", f"/users/ann/tokens/{t['id']}")
    assert r.status_code == 204
    error(hub.api(t["token"], "GET", "/user"), 401)


@pytest.mark.parametrize("body", [
    {"expires_in": 0}, {"expires_in": -1}, {"expires_in": "60"}, {"expires_in": 1.5},
    {"expires_in": TEN_YEARS + 1}, {"expires_in": True},
    {"note": "x" * 1001}, {"note": 5},
    {"scopes": ["bogus"]}, {"scopes": []}, {"scopes": "user"}, {"scopes": [1]},
    {"roles": ["user"]},
])
def test_token_bad_input(hub, ann, body):
    before = hub.api(ann["token"], "GET", "/users/ann/tokens").json()["api_tokens"]
    error(hub.api(ann["token"], "POST", "/users/ann/tokens", json=body), 400)
    after = hub.api(ann["token"], "GET", "/users/ann/tokens").json()["api_tokens"]
    assert len(after) == len(before)


def test_token_limits_inclusive(hub, ann):
    r = hub.api(ann["token"], "POST", "/users/ann/tokens",
                json={"expires_in": TEN_YEARS, "note": "é" * 1000})
    assert r.status_code == 201, r.text
    assert r.json()["note"] == "é" * 1000


def test_token_scopes(hub, admin, ann):
    # A non-admin cannot have an admin-scoped token.
    error(hub.api(ann["token"], "POST", "/users/ann/tokens", json={"scopes": ["admin"]}), 403)
    error(hub.api(admin["token"], "POST", "/users/ann/tokens", json={"scopes": ["admin"]}), 403)
    # A user-scoped token of an admin cannot mint an admin-scoped one.
    user_tok = hub.token("root", "--scope", "user")
    error(hub.api(user_tok, "POST", "/users/root/tokens", json={"scopes": ["admin"]}), 403)
    r = hub.api(user_tok, "POST", "/users/root/tokens", json={"scopes": ["user"]})
    assert r.status_code == 201, r.text
    error(hub.api(r.json()["token"], "GET", "/users"), 403)
    # Admin session and admin token can.
    for cred in (admin["session"], admin["token"]):
        r = hub.api(cred, "POST", "/users/root/tokens", json={"scopes": ["admin"], "note": "adm"})
        assert r.status_code == 201, r.text
        assert r.json()["scopes"] == ["admin"]
        assert hub.api(r.json()["token"], "GET", "/users").status_code == 200


def test_admin_manages_other_users_tokens(hub, admin, ann):
    r = hub.api(admin["token"], "POST", "/users/ann/tokens", json={"note": "for ann"})
    assert r.status_code == 201, r.text
    t = r.json()
    assert t["user"] == "ann"
    assert hub.api(t["token"], "GET", "/user").json()["name"] == "ann"
    listed = hub.api(admin["token"], "GET", "/users/ann/tokens").json()["api_tokens"]
    assert t["id"] in [x["id"] for x in listed]
    assert all(x["user"] == "ann" for x in listed)
    assert hub.api(admin["token"], "DELETE", f"/users/ann/tokens/{t['id']}").status_code == 204
    error(hub.api(t["token"], "GET", "/user"), 401)


def test_token_id_must_belong_to_the_user(hub, admin, ann):
    mine = hub.api(admin["token"], "POST", "/users/root/tokens", json={}).json()
    # The admin asks for root's token id under ann's path: not there.
    error(hub.api(admin["token"], "GET", f"/users/ann/tokens/{mine['id']}"), 404)
    error(hub.api(admin["token"], "DELETE", f"/users/ann/tokens/{mine['id']}"), 404)
    assert hub.api(mine["token"], "GET", "/user").status_code == 200
    for bad in ("abc", "0", "-1", "01", "99999999"):
        error(hub.api(admin["token"], "GET", f"/users/root/tokens/{bad}"), 404)


def test_token_list_shows_expiry_and_scope(hub, admin):
    hub.token("root", "--scope", "admin", "--note", "cli token", "--expires-in", "600")
    tokens = hub.api(admin["token"], "GET", "/users/root/tokens").json()["api_tokens"]
    cli = [t for t in tokens if t["note"] == "cli token"]
    assert len(cli) == 1
    assert cli[0]["scopes"] == ["admin"] and cli[0]["expires_at"] is not None
    assert admin["token"] not in str(tokens)


# --- request format and routing -----------------------------------------------------------


def test_bad_json_reports_line_and_column(hub, admin):
    h = {"Authorization": f"Bearer {admin['token']}", "Content-Type": "application/json"}
    r = raw(hub, "POST", "/users", data='{"usernames": [}', headers=h)
    msg = error(r, 400)
    assert msg.startswith("invalid JSON at line 1 column 16:"), msg
    r = raw(hub, "POST", "/users", data='{\n  "usernames": ["a"],\n  "admin": tru\n}', headers=h)
    msg = error(r, 400)
    assert msg.startswith("invalid JSON at line 3 column"), msg
    r = raw(hub, "PATCH", "/users/root", data='{"admin": true} trailing', headers=h)
    assert error(r, 400).startswith("invalid JSON at line 1 column")
    r = raw(hub, "POST", "/users", data=b'{"usernames": ["\xff"]}', headers=h)
    assert error(r, 400).startswith("invalid JSON")
    error(hub.api(admin["token"], "GET", "/users/a"), 404)


def test_duplicate_keys_are_400(hub, admin):
    h = {"Authorization": f"Bearer {admin['token']}", "Content-Type": "application/json"}
    r = raw(hub, "POST", "/users/dave", data='{"admin": false, "admin": true}', headers=h)
    msg = error(r, 400)
    assert "line 1 column" in msg and "duplicate" in msg
    error(hub.api(admin["token"], "GET", "/users/dave"), 404)


def test_body_must_be_a_json_object(hub, admin):
    h = {"Authorization": f"Bearer {admin['token']}", "Content-Type": "application/json"}
    for data in ('["ann"]', '"ann"', "null"):
        error(raw(hub, "POST", "/users", data=data, headers=h), 400)


def test_body_must_be_application_json(hub, admin):
    h = {"Authorization": f"Bearer {admin['token']}"}
    error(raw(hub, "POST", "/users/dave", data="admin=true",
              headers={**h, "Content-Type": "application/x-www-form-urlencoded"}), 415)
    error(raw(hub, "POST", "/users/dave", data='{"admin": true}',
              headers={**h, "Content-Type": "text/plain"}), 415)
    error(raw(hub, "POST", "/users/dave", data='{"admin": true}', headers=h), 415)
    error(hub.api(admin["token"], "GET", "/users/dave"), 404)
    r = raw(hub, "POST", "/users/dave", data='{"admin": true}',
            headers={**h, "Content-Type": "Application/JSON; charset=utf-8"})
    assert r.status_code == 201, r.text


@pytest.mark.parametrize("method,path,allow", [
    ("POST", "", {"GET", "HEAD"}),
    ("DELETE", "/info", {"GET", "HEAD"}),
    ("POST", "/user", {"GET", "HEAD"}),
    ("DELETE", "/users", {"GET", "HEAD", "POST"}),
    ("PUT", "/users/root", {"GET", "HEAD", "POST", "PATCH", "DELETE"}),
    ("PATCH", "/users/root/tokens", {"GET", "HEAD", "POST"}),
    ("POST", "/users/root/tokens/1", {"GET", "HEAD", "DELETE"}),
    ("OPTIONS", "/users", {"GET", "HEAD", "POST"}),
])
def test_wrong_method_is_405_with_allow(hub, admin, method, path, allow):
    r = hub.api(admin["token"], method, path)
    error(r, 405)
    assert {m.strip() for m in r.headers["Allow"].split(",")} == allow


@pytest.mark.parametrize("path", ["/nope", "/users/root/nope", "/users/root/tokens/1/x",
                                  "/userz", "/info/x"])
def test_unknown_path_is_404(hub, admin, path):
    error(hub.api(admin["token"], "GET", path), 404)


def test_trailing_slash_is_accepted(hub, admin):
    assert hub.api(admin["token"], "GET", "/users/").status_code == 200
    assert hub.api(admin["token"], "GET", "/users/root/").json()["name"] == "root"


def test_security_events_are_logged_without_secrets(hub, admin):
    tok = admin["token"]
    hub.api(tok, "POST", "/users/logme")
    hub.api(tok, "PATCH", "/users/logme", json={"admin": True})
    t = hub.api(tok, "POST", "/users/logme/tokens", json={}).json()
    hub.api(tok, "DELETE", f"/users/logme/tokens/{t['id']}")
    hub.api(tok, "PATCH", "/users/logme", json={"password": "logme-secret-pw"})
    hub.api(tok, "DELETE", "/users/logme")
    time.sleep(0.2)
    log = hub.log()
    for event in ("user.add", "user.admin", "token.create", "token.revoke", "user.password_reset",
                  "user.delete"):
        lines = [ln for ln in log.splitlines() if event in ln and "logme" in ln]
        assert lines, f"no {event} line in the log"
        assert any("root" in ln for ln in lines)
    assert t["token"] not in log
    assert "logme-secret-pw" not in log
    assert tok not in log
