"""Black-box tests of codehub's command line: help and usage errors, the offline user and
token commands against a real store, data purging, check-config, version, and tokens
issued offline working against a running hub."""

import datetime
import json
import os
import re
import subprocess
import time

import pytest
import requests

from conftest import BIN

TOKEN_RE = re.compile(r"^chb_[A-Za-z0-9_-]{43}$")


def run(*args, input=None, env=None, cwd=None):
    """Runs `codehub ARGS` with a clean environment (no CODEHUB_* from the caller)."""
    e = {k: v for k, v in os.environ.items() if not k.startswith("CODEHUB_")}
    e.update(env or {})
    return subprocess.run([BIN, *args], input=input, capture_output=True, text=True, env=e,
                          cwd=cwd, timeout=60)


@pytest.fixture
def off(make_hub):
    """A hub that is not running: the offline commands use its config and data dir."""
    return make_hub(start=False)


def users(hub):
    return {u["name"]: u for u in json.loads(hub.cli("user", "list", "--json").stdout)}


def events(hub):
    return hub.sql('SELECT kind, "user", actor, detail FROM events ORDER BY id')


# ---- version and help -----------------------------------------------------------------


@pytest.mark.parametrize("argv", [["version"], ["--version"]])
def test_version_names_program_and_libraries(argv):
    r = run(*argv)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert re.fullmatch(r"codehub \d+\.\d+\.\d+\S*", lines[0]), lines[0]
    names = [line.split()[0] for line in lines[1:]]
    assert names == ["libuv", "sqlite", "libsodium", "jansson", "libfyaml", "http-parser",
                     "libpq", "libcurl"]
    for line in lines[1:]:
        assert re.fullmatch(r"\S+ \d+\.\d+(\.\d+)?\S*", line), line
    assert "http-parser 2.9.4" in lines


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["help"]])
def test_root_help_lists_every_command(argv):
    r = run(*argv)
    assert r.returncode == 0
    assert r.stderr == ""
    assert r.stdout.startswith("Usage: codehub COMMAND")
    for cmd in ("serve", "user", "token", "check-config", "version", "help"):
        assert re.search(rf"^  {cmd}\b", r.stdout, re.M), cmd
    assert "0 success, 1 failure" in r.stdout


COMMANDS = {
    ("serve",): ["--config FILE", "--bind ADDR:PORT", "--data-dir DIR"],
    ("user",): ["add NAME", "list", "del NAME", "passwd NAME"],
    ("user", "add"): ["--admin", "--password-stdin", "--config FILE", "--data-dir DIR"],
    ("user", "list"): ["--json", "--config FILE", "--data-dir DIR"],
    ("user", "del"): ["--purge-data", "--config FILE", "--data-dir DIR"],
    ("user", "passwd"): ["--password-stdin", "--config FILE", "--data-dir DIR"],
    ("token",): ["create NAME"],
    ("token", "create"): ["--scope admin|user", "--expires-in SECONDS", "--note TEXT",
                          "--config FILE", "--data-dir DIR"],
    ("check-config",): ["--print"],
    ("version",): [],
}


@pytest.mark.parametrize("cmd", list(COMMANDS), ids=" ".join)
def test_command_help(cmd):
    r = run(*cmd, "--help")
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    assert r.stdout.startswith("Usage: codehub " + " ".join(cmd) + " "), r.stdout
    # A line of description under the usage.
    assert r.stdout.splitlines()[1] == "" and r.stdout.splitlines()[2].strip()
    for item in COMMANDS[cmd]:
        assert item in r.stdout, item
    # `codehub help CMD` and `-h` say the same.
    assert run("help", *cmd).stdout == r.stdout
    assert run(*cmd, "-h").stdout == r.stdout


def test_group_help_subcommand_form():
    assert run("user", "help", "add").stdout == run("user", "add", "--help").stdout


USAGE_ERRORS = [
    ([], "missing command"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["--frob"], "unknown option"),
    (["help", "frobnicate"], "unknown command 'frobnicate'"),
    (["user"], "missing command"),
    (["user", "rename", "ann"], "unknown command 'rename'"),
    (["token"], "missing command"),
    (["token", "revoke"], "unknown command 'revoke'"),
    (["user", "add"], "missing argument"),
    (["user", "add", "ann", "bob"], "unexpected argument 'bob'"),
    (["user", "add", "ann", "--bogus"], "unknown option '--bogus'"),
    (["user", "add", "ann", "-a"], "unknown option '-a'"),
    (["user", "add", "ann", "--admin=yes"], "--admin takes no value"),
    (["user", "add", "ann", "--admin", "--admin"], "--admin given more than once"),
    (["user", "add", "ann", "--data-dir"], "--data-dir needs a value"),
    (["user", "del"], "missing argument"),
    (["user", "list", "extra"], "unexpected argument 'extra'"),
    (["user", "passwd", "ann"], "--password-stdin"),
    (["token", "create"], "missing argument"),
    (["token", "create", "ann", "--scope", "root"], "--scope must be admin or user"),
    (["token", "create", "ann", "--scope"], "--scope needs a value"),
    (["token", "create", "ann", "--expires-in", "0"], "--expires-in"),
    (["token", "create", "ann", "--expires-in", "-5"], "--expires-in"),
    (["token", "create", "ann", "--expires-in", "1h"], "--expires-in"),
    (["token", "create", "ann", "--expires-in", "99999999999999999999"], "--expires-in"),
    (["token", "create", "ann", "--note", "a\nb"], "--note"),
    (["token", "create", "ann", "--note", "x" * 257], "--note"),
    (["check-config"], "missing argument"),
    (["check-config", "a.yaml", "b.yaml"], "unexpected argument"),
    (["check-config", "a.yaml", "--print=yes"], "takes no value"),
    (["serve", "--bogus"], "unknown option '--bogus'"),
    (["serve", "extra"], "unexpected argument 'extra'"),
    (["version", "--bogus"], "unknown option"),
]


@pytest.mark.parametrize("argv,message", USAGE_ERRORS, ids=lambda v: " ".join(v)
                         if isinstance(v, list) else "")
def test_usage_errors_exit_2(tmp_path, argv, message):
    r = run(*argv, cwd=tmp_path)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "Usage: codehub" in r.stderr
    assert r.stdout == ""
    # A usage error touches nothing: no store was created.
    assert not (tmp_path / "data").exists()


def test_double_dash_ends_options(tmp_path):
    # After "--" a dash-word is an argument, and as a user name it is invalid (exit 1).
    r = run("user", "add", "--data-dir", str(tmp_path / "d"), "--", "--admin", cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "invalid user name '--admin'" in r.stderr


# ---- user add / list ------------------------------------------------------------------


def test_user_add_without_password_and_list(off):
    r = off.cli("user", "add", "ann")
    assert "added user ann" in r.stdout
    assert "(admin)" not in r.stdout
    assert "first login" in r.stdout
    r = off.cli("user", "add", "root", "--admin", "--password-stdin", input="rootpass123\n")
    assert "added user root (admin)" in r.stdout
    assert "first login" not in r.stdout

    table = off.cli("user", "list").stdout.splitlines()
    assert table[0].split() == ["NAME", "ADMIN", "CREATED", "LAST", "ACTIVITY", "PASSWORD"]
    rows = {line.split()[0]: line for line in table[1:]}
    assert set(rows) == {"ann", "root"}
    assert rows["ann"].split()[1:] == ["no", rows["ann"].split()[2], "never", "not", "set"]
    assert rows["root"].split()[1] == "yes"
    assert rows["root"].split()[-1] == "set"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", rows["ann"].split()[2])

    u = users(off)
    assert u["ann"]["admin"] is False and u["ann"]["has_password"] is False
    assert u["root"]["admin"] is True and u["root"]["has_password"] is True
    assert u["ann"]["last_activity"] is None
    created = datetime.datetime.strptime(u["ann"]["created"], "%Y-%m-%dT%H:%M:%S.%fZ")
    now = datetime.datetime.now(datetime.timezone.utc).replace(tzinfo=None)
    assert abs((now - created).total_seconds()) < 120


def test_user_list_empty_and_paginated(off):
    assert json.loads(off.cli("user", "list", "--json").stdout) == []
    assert off.cli("user", "list").stdout.splitlines()[0].startswith("NAME")
    # More users than one page of the internal store listing (200).
    names = [f"u{i:03d}" for i in range(230)]
    for n in names:
        off.cli("user", "add", n)
    listed = [u["name"] for u in json.loads(off.cli("user", "list", "--json").stdout)]
    assert listed == names
    table = off.cli("user", "list").stdout.splitlines()[1:]
    assert [line.split()[0] for line in table] == names


@pytest.mark.parametrize("name,why", [
    ("Ann", "must be lowercase"),
    ("a/b", "lowercase letters, digits"),
    ("a" * 33, "1 to 32 characters"),
    (".hidden", "starting with a letter or digit"),
    ("_x", "starting with a letter or digit"),
    ("é", "lowercase letters"),
    ("", "1 to 32"),
    ("a b", "lowercase letters"),
])
def test_user_add_bad_names(off, name, why):
    r = off.cli("user", "add", name, check=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert f"invalid user name '{name}'" in r.stderr
    assert why in r.stderr
    assert r.stdout == ""


def test_user_add_longest_name(off):
    off.cli("user", "add", "a" * 32)
    off.cli("user", "add", "a.b_c-9")
    assert set(users(off)) == {"a" * 32, "a.b_c-9"}


def test_user_add_duplicate(off):
    off.cli("user", "add", "ann")
    r = off.cli("user", "add", "ann", "--admin", check=False)
    assert r.returncode == 1
    assert "user ann already exists" in r.stderr
    assert users(off)["ann"]["admin"] is False


@pytest.mark.parametrize("stdin,message", [
    ("short\n", "too short"),
    ("1234567\n", "too short"),
    ("\n", "empty password"),
    ("\r\n", "empty password"),
    ("", "no password on standard input"),
    ("bad\x01password\n", "control characters"),
    ("x" * 1025 + "\n", "longer than 1024 bytes"),
    ("nul\x00password\n", "NUL"),
])
def test_user_add_password_refused(off, stdin, message):
    r = off.cli("user", "add", "ann", "--password-stdin", input=stdin, check=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert message in r.stderr
    assert "ann" not in users(off)


def test_password_length_is_in_code_points(off):
    # Eight characters, sixteen bytes.
    off.cli("user", "add", "ann", "--password-stdin", input="éééééééé\n")
    assert users(off)["ann"]["has_password"]


def test_password_policy_follows_config(make_hub):
    h = make_hub(config="auth:\n  min_password_length: 12\n", start=False)
    r = h.cli("user", "add", "ann", "--password-stdin", input="elevenchars\n", check=False)
    assert r.returncode == 1 and "at least 12 characters" in r.stderr
    h.cli("user", "add", "ann", "--password-stdin", input="twelve chars\n")
    assert users(h)["ann"]["has_password"]


def test_only_first_line_is_the_password(off):
    off.cli("user", "add", "ann", "--password-stdin", input="firstline1\nsecondline\n")
    off.cli("user", "add", "bob", "--password-stdin", input="no-newline-at-end")
    assert users(off)["ann"]["has_password"] and users(off)["bob"]["has_password"]


def test_user_add_records_event(off):
    off.cli("user", "add", "ann", "--admin")
    assert any(e[0] == "user.add" and e[1] == "ann" and e[2] == "cli" for e in events(off))


# ---- user passwd ----------------------------------------------------------------------


def test_user_passwd(off):
    off.cli("user", "add", "ann")
    r = off.cli("user", "passwd", "ann", "--password-stdin", input="newpassword1\n")
    assert "ann" in r.stdout
    assert users(off)["ann"]["has_password"]
    assert any(e[0] == "user.passwd" and e[1] == "ann" for e in events(off))


def test_user_passwd_errors(off):
    r = off.cli("user", "passwd", "ghost", "--password-stdin", input="newpassword1\n",
                check=False)
    assert r.returncode == 1 and "no such user: ghost" in r.stderr
    off.cli("user", "add", "ann")
    r = off.cli("user", "passwd", "ann", check=False)
    assert r.returncode == 2 and "--password-stdin" in r.stderr
    r = off.cli("user", "passwd", "ann", "--password-stdin", input="short\n", check=False)
    assert r.returncode == 1 and "too short" in r.stderr
    assert not users(off)["ann"]["has_password"]


# ---- user del and --purge-data --------------------------------------------------------


def make_home(hub, name):
    home = hub.data_dir / "users" / name
    (home / ".config" / "code-server").mkdir(parents=True)
    (home / ".config" / "code-server" / "config.yaml").write_text("bind-addr: x\n")
    (home / "project").mkdir()
    (home / "project" / "main.c").write_text("int main(void) { return 0; }\n")
    return home


def test_user_del_keeps_data_by_default(off):
    off.cli("user", "add", "ann")
    home = make_home(off, "ann")
    r = off.cli("user", "del", "ann")
    assert "deleted user ann" in r.stdout
    assert "kept" in r.stdout and str(home) in r.stdout
    assert (home / "project" / "main.c").exists()
    assert "ann" not in users(off)
    assert any(e[0] == "user.del" and e[1] == "ann" for e in events(off))


def test_user_del_purge_data_removes_home(off):
    off.cli("user", "add", "ann")
    off.cli("user", "add", "bob")
    home = make_home(off, "ann")
    other = make_home(off, "bob")
    # Things a user may leave behind: an unwritable directory (Go's module cache), links
    # to places outside the home, a dangling link, a FIFO.
    ro = home / "go" / "pkg" / "mod"
    ro.mkdir(parents=True)
    (ro / "file.go").write_text("package x\n")
    ro.chmod(0o555)
    outside = off.tmp / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me\n")
    (home / "link-dir").symlink_to(outside)
    (home / "project" / "link-file").symlink_to(outside / "precious")
    (home / "dangling").symlink_to(off.tmp / "nowhere")
    os.mkfifo(home / "fifo")

    r = off.cli("user", "del", "ann", "--purge-data")
    assert "deleted user ann" in r.stdout and "removed" in r.stdout
    assert not home.exists() and not home.is_symlink()
    assert (outside / "precious").read_text() == "keep me\n"
    assert (other / "project" / "main.c").exists()
    if off.pg is None:
        assert (off.data_dir / "codehub.sqlite").exists()
    assert set(users(off)) == {"bob"}


def test_user_del_purge_without_home(off):
    off.cli("user", "add", "ann")
    r = off.cli("user", "del", "ann", "--purge-data")
    assert "deleted user ann" in r.stdout and "no data" in r.stdout


def test_purge_refuses_symlinked_home(off):
    off.cli("user", "add", "ann")
    target = off.tmp / "elsewhere"
    target.mkdir()
    (target / "important").write_text("do not delete\n")
    (off.data_dir / "users").mkdir(parents=True)
    (off.data_dir / "users" / "ann").symlink_to(target)
    r = off.cli("user", "del", "ann", "--purge-data", check=False)
    assert r.returncode == 1
    assert "symbolic link" in r.stderr and "nothing was deleted" in r.stderr
    assert (target / "important").read_text() == "do not delete\n"
    assert (off.data_dir / "users" / "ann").is_symlink()
    # Refused before anything was deleted: the account is still there.
    assert "ann" in users(off)
    # Without --purge-data the account goes and the link (and its target) stay.
    off.cli("user", "del", "ann")
    assert (target / "important").exists() and (off.data_dir / "users" / "ann").is_symlink()


def test_purge_refuses_symlinked_users_dir(off):
    off.cli("user", "add", "ann")
    target = off.tmp / "elsewhere"
    (target / "ann").mkdir(parents=True)
    (target / "ann" / "important").write_text("x")
    off.data_dir.mkdir(parents=True, exist_ok=True)  # PostgreSQL does not create it
    (off.data_dir / "users").symlink_to(target)
    r = off.cli("user", "del", "ann", "--purge-data", check=False)
    assert r.returncode == 1 and "symbolic link" in r.stderr
    assert (target / "ann" / "important").exists()
    assert "ann" in users(off)


def test_purge_refuses_home_that_is_a_file(off):
    off.cli("user", "add", "ann")
    (off.data_dir / "users").mkdir(parents=True)
    (off.data_dir / "users" / "ann").write_text("not a dir")
    r = off.cli("user", "del", "ann", "--purge-data", check=False)
    assert r.returncode == 1 and "not a directory" in r.stderr
    assert (off.data_dir / "users" / "ann").exists()


def test_user_del_errors(off):
    r = off.cli("user", "del", "ghost", check=False)
    assert r.returncode == 1 and "no such user: ghost" in r.stderr
    r = off.cli("user", "del", "../etc", "--purge-data", check=False)
    assert r.returncode == 1 and "invalid user name" in r.stderr


# ---- token create ---------------------------------------------------------------------


def test_token_create_prints_only_the_token(off):
    off.cli("user", "add", "ann")
    r = off.cli("token", "create", "ann", "--note", "ci deploy", "--expires-in", "3600")
    assert TOKEN_RE.match(r.stdout.strip()), r.stdout
    assert r.stdout.count("\n") == 1 and r.stdout.endswith("\n")
    second = off.token("ann")
    assert second != r.stdout.strip()
    evs = [e for e in events(off) if e[0] == "token.create"]
    assert len(evs) == 2 and evs[0][1] == "ann" and evs[0][2] == "cli"
    # The event names the token by its prefix only; the secret is nowhere in the store.
    if off.pg is None:
        db = b"".join(p.read_bytes() for p in off.data_dir.glob("codehub.sqlite*"))
    else:
        db = "\n".join("\t".join(str(v) for v in row) for table in ("tokens", "events")
                       for row in off.sql(f"SELECT * FROM {table}")).encode()
        assert b"cli" in db
    assert r.stdout.strip().encode() not in db
    assert r.stdout.strip()[4:].encode() not in db


def test_token_create_scopes(off):
    off.cli("user", "add", "ann")
    off.cli("user", "add", "root", "--admin")
    assert TOKEN_RE.match(off.token("root", "--scope", "admin"))
    assert TOKEN_RE.match(off.token("root", "--scope", "user"))
    assert TOKEN_RE.match(off.token("ann", "--scope", "user"))
    r = off.cli("token", "create", "ann", "--scope", "admin", check=False)
    assert r.returncode == 1
    assert "ann is not an admin" in r.stderr
    assert r.stdout == ""


def test_token_create_admin_from_config(make_hub):
    h = make_hub(config="auth:\n  admin_users: [boss]\n", start=False)
    h.cli("user", "add", "boss")
    assert TOKEN_RE.match(h.token("boss", "--scope", "admin"))


def test_token_create_errors(off):
    r = off.cli("token", "create", "ghost", check=False)
    assert r.returncode == 1 and "no such user: ghost" in r.stderr and r.stdout == ""
    r = off.cli("token", "create", "Ghost", check=False)
    assert r.returncode == 1 and "must be lowercase" in r.stderr


# ---- check-config ---------------------------------------------------------------------


def test_check_config_ok(tmp_path):
    f = tmp_path / "ok.yaml"
    f.write_text("server:\n  bind: 127.0.0.1:9000\nauth:\n  min_password_length: 10\n")
    r = run("check-config", str(f))
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"{f}: ok\n"


def test_check_config_errors_name_file_line_column_and_key(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("server:\n  bind: nowhere\n  bogus: 1\nhttp:\n  max_headers: lots\n")
    r = run("check-config", str(f))
    assert r.returncode == 1
    assert r.stdout == ""
    err = r.stderr
    assert re.search(re.escape(str(f)) + r":2:\d+: server\.bind: ", err), err
    assert re.search(re.escape(str(f)) + r":3:\d+: server\.bogus", err), err
    assert re.search(re.escape(str(f)) + r":5:\d+: http\.max_headers: ", err), err


def test_check_config_yaml_syntax_error(tmp_path):
    f = tmp_path / "broken.yaml"
    f.write_text("server:\n  bind: [127.0.0.1\n")
    r = run("check-config", str(f))
    assert r.returncode == 1
    assert re.search(re.escape(str(f)) + r":\d+:\d+: ", r.stderr), r.stderr


def test_check_config_missing_file(tmp_path):
    r = run("check-config", str(tmp_path / "nope.yaml"))
    assert r.returncode == 1
    assert "nope.yaml" in r.stderr


def test_check_config_print_applies_env(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("server:\n  bind: 127.0.0.1:9000\nlog:\n  level: debug\n")
    r = run("check-config", str(f), "--print",
            env={"CODEHUB_SERVER_BIND": "127.0.0.1:9100", "CODEHUB_AUTH_MIN_PASSWORD_LENGTH": "20"})
    assert r.returncode == 0, r.stderr
    assert re.search(r'^  bind: "127\.0\.0\.1:9100"$', r.stdout, re.M), r.stdout
    assert re.search(r"^  min_password_length: 20$", r.stdout, re.M), r.stdout
    assert re.search(r'^  level: "debug"$', r.stdout, re.M), r.stdout
    # Derived from the effective bind by config_finish.
    assert "http://127.0.0.1:9100" in r.stdout
    # The dump alone on stdout; the verdict on stderr.
    assert "ok" not in r.stdout.splitlines()[-1]
    assert f"{f}: ok" in r.stderr


def test_check_config_bad_env(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("")
    r = run("check-config", str(f), env={"CODEHUB_SERVER_BIDN": "x",
                                        "CODEHUB_HTTP_MAX_HEADERS": "many"})
    assert r.returncode == 1
    assert "CODEHUB_SERVER_BIDN" in r.stderr
    assert "CODEHUB_HTTP_MAX_HEADERS" in r.stderr


# ---- configuration resolution for the offline commands --------------------------------


def test_offline_commands_find_config_like_the_server(tmp_path):
    a, b, c, d = (tmp_path / x for x in "abcd")
    conf = tmp_path / "conf.yaml"
    conf.write_text(f"server:\n  data_dir: {a}\n")
    # $CODEHUB_CONFIG names the file.
    assert run("user", "add", "ann", env={"CODEHUB_CONFIG": str(conf)}, cwd=tmp_path).returncode == 0
    assert (a / "codehub.sqlite").exists()
    # ./codehub.yaml when nothing names a file.
    work = tmp_path / "work"
    work.mkdir()
    (work / "codehub.yaml").write_text(f"server:\n  data_dir: {b}\n")
    assert run("user", "add", "bob", cwd=work).returncode == 0
    assert (b / "codehub.sqlite").exists()
    # --config beats $CODEHUB_CONFIG; the environment beats the file; --data-dir beats all.
    conf2 = tmp_path / "conf2.yaml"
    conf2.write_text(f"server:\n  data_dir: {tmp_path / 'unused'}\n")
    r = run("user", "add", "carl", "--config", str(conf), cwd=tmp_path,
            env={"CODEHUB_CONFIG": str(conf2), "CODEHUB_SERVER_DATA_DIR": str(c)})
    assert r.returncode == 0, r.stderr
    assert (c / "codehub.sqlite").exists() and not (tmp_path / "unused").exists()
    r = run("user", "add", "dan", "--config", str(conf), "--data-dir", str(d), cwd=tmp_path,
            env={"CODEHUB_SERVER_DATA_DIR": str(c)})
    assert r.returncode == 0, r.stderr
    names = [u["name"] for u in json.loads(run("user", "list", "--json", "--data-dir", str(d),
                                               cwd=tmp_path).stdout)]
    assert names == ["dan"]
    # Defaults: ./data in the working directory.
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("user", "add", "eve", cwd=empty).returncode == 0
    assert (empty / "data" / "codehub.sqlite").exists()


def test_offline_command_with_bad_config_fails(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("auth:\n  min_password_length: zero\n")
    r = run("user", "list", "--config", str(conf), "--data-dir", str(tmp_path / "d"),
            cwd=tmp_path)
    assert r.returncode == 1
    assert re.search(re.escape(str(conf)) + r":2:\d+: auth\.min_password_length", r.stderr)
    r = run("user", "list", "--config", str(tmp_path / "missing.yaml"), cwd=tmp_path)
    assert r.returncode == 1 and "missing.yaml" in r.stderr


def test_serve_with_bad_config_exits_1(tmp_path):
    conf = tmp_path / "bad.yaml"
    conf.write_text("server:\n  bind: 127.0.0.1:notaport\n")
    r = run("serve", "--config", str(conf), "--data-dir", str(tmp_path / "d"))
    assert r.returncode == 1
    assert re.search(re.escape(str(conf)) + r":2:\d+: server\.bind", r.stderr)
    r = run("serve", "--bind", "nowhere", "--data-dir", str(tmp_path / "d"), cwd=tmp_path)
    assert r.returncode == 1 and "--bind" in r.stderr


# ---- against a running hub ------------------------------------------------------------


def test_offline_token_works_against_api(make_hub):
    h = make_hub()
    h.cli("user", "add", "ann")
    h.cli("user", "add", "root", "--admin")
    tok = h.token("ann", "--note", "script")
    r = h.api(tok, "GET", "/user")
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "ann"
    admin_tok = h.token("root", "--scope", "admin")
    r = h.api(admin_tok, "GET", "/user")
    assert r.status_code == 200 and r.json()["name"] == "root"
    # A wrong token is refused.
    r = h.api(tok[:-1] + ("A" if tok[-1] != "A" else "B"), "GET", "/user")
    assert r.status_code in (401, 403)
    # Deleting the user revokes their tokens.
    h.cli("user", "del", "ann")
    assert h.api(tok, "GET", "/user").status_code in (401, 403)


def test_expired_token_is_refused(make_hub):
    h = make_hub()
    h.cli("user", "add", "ann")
    tok = h.token("ann", "--expires-in", "1")
    time.sleep(1.5)
    assert h.api(tok, "GET", "/user").status_code in (401, 403)


def test_passwd_changes_login_and_ends_sessions(make_hub):
    h = make_hub()
    h.cli("user", "add", "ann", "--password-stdin", input="firstpass1\r\n")
    s, _ = h.login("ann", "firstpass1")
    assert s.get(h.url + "/hub/api/user", timeout=10).status_code == 200
    h.cli("user", "passwd", "ann", "--password-stdin", input="secondpass2\n")
    # The old session is gone, the old password refused, the new one works.
    assert s.get(h.url + "/hub/api/user", timeout=10).status_code in (401, 403)
    _, r = h.login("ann", "firstpass1", expect_ok=False)
    assert r.status_code not in (302, 303)
    h.login("ann", "secondpass2")


def test_cli_beside_running_server(make_hub):
    h = make_hub()
    for i in range(5):
        h.cli("user", "add", f"user{i}")
    assert len(users(h)) == 5
    assert requests.get(h.url + "/hub/health", timeout=5).status_code == 200
