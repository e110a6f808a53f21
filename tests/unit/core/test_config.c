/* Tests for src/core/config.c through its public header: defaults, the YAML reader and
 * its error lines, environment and command-line overrides, validation, the dump and the
 * documentation. Files are written to a private temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[64];
static int file_counter;

static int group_setup(void **state)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/codehub-test-config-XXXXXX");
    return mkdtemp(tmpdir) ? 0 : -1;
}

static int group_teardown(void **state)
{
    for (int i = 0; i < file_counter; i++) {
        char *p = xasprintf("%s/c%d.yaml", tmpdir, i);
        unlink(p);
        free(p);
    }
    return rmdir(tmpdir);
}

/* Writes `text` to a fresh file in the temporary directory; caller frees the path. */
static char *write_file(const char *text)
{
    char *path = xasprintf("%s/c%d.yaml", tmpdir, file_counter++);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, strlen(text), f), strlen(text));
    assert_int_equal(fclose(f), 0);
    return path;
}

/* Loads `text` over `cfg`; *path_out (caller frees) names the file for error lines. */
static int load_text(struct config *cfg, const char *text, struct buf *errors, char **path_out)
{
    char *path = write_file(text);
    int r = config_load_file(cfg, path, errors);
    if (path_out)
        *path_out = path;
    else
        free(path);
    return r;
}

static size_t count_lines(const struct buf *b)
{
    size_t n = 0;
    for (size_t i = 0; i < b->len; i++)
        n += b->data[i] == '\n';
    return n;
}

/* Asserts that `errors` holds exactly one line, equal to PATH + `rest` + "\n". */
static void assert_one_error(const struct buf *errors, const char *path, const char *rest)
{
    char *want = xasprintf("%s%s\n", path, rest);
    assert_non_null(errors->data);
    assert_string_equal(errors->data, want);
    free(want);
}

/* Loads `text` into a fresh config, expects -EINVAL and exactly one error line
 * "FILE" + `rest`. */
static void expect_file_error(const char *text, const char *rest)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    char *path;
    config_init(&cfg);
    assert_int_equal(load_text(&cfg, text, &errors, &path), -EINVAL);
    assert_one_error(&errors, path, rest);
    free(path);
    buf_free(&errors);
    config_free(&cfg);
}

/* config_set on a fresh config; returns its result and leaves the error text in `errors`. */
static int set_one(const char *key, const char *value, struct buf *errors)
{
    struct config cfg;
    config_init(&cfg);
    buf_reset(errors);
    int r = config_set(&cfg, key, value, "--test", errors);
    config_free(&cfg);
    return r;
}

static void test_defaults(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    assert_string_equal(cfg.server.bind, "127.0.0.1:8000");
    assert_string_equal(cfg.server.public_url, "");
    assert_string_equal(cfg.server.data_dir, "./data");
    assert_int_equal(cfg.server.trusted_proxies.n, 0);
    assert_int_equal(cfg.server.shutdown_grace, 10);
    assert_string_equal(cfg.log.level, "info");
    assert_string_equal(cfg.log.format, "text");
    assert_true(cfg.log.requests);
    assert_int_equal(cfg.http.max_head_size, 32768);
    assert_int_equal(cfg.http.max_headers, 100);
    assert_int_equal(cfg.http.max_url_length, 8192);
    assert_int_equal(cfg.http.max_body_size, 1024 * 1024);
    assert_int_equal(cfg.http.head_timeout, 10);
    assert_int_equal(cfg.http.body_timeout, 30);
    assert_int_equal(cfg.http.idle_timeout, 60);
    assert_int_equal(cfg.http.max_connections, 10000);
    assert_string_equal(cfg.store.url, "");
    assert_true(cfg.auth.open_signup);
    assert_int_equal(cfg.auth.allowed_users.n, 0);
    assert_int_equal(cfg.auth.admin_users.n, 0);
    assert_int_equal(cfg.auth.min_password_length, 8);
    assert_int_equal(cfg.auth.session_max_age, 14 * 24 * 3600);
    assert_int_equal(cfg.auth.throttle_free_attempts, 5);
    assert_int_equal(cfg.auth.throttle_max_delay, 300);
    assert_string_equal(cfg.auth.secret_file, "");

    assert_int_equal(config_finish(&cfg, &errors), 0);
    assert_null(errors.data);
    assert_string_equal(cfg.server.public_url, "http://127.0.0.1:8000");
    config_free(&cfg);
    /* Freeing twice is harmless: config_free leaves NULL pointers behind. */
    config_free(&cfg);
}

static const char full_file[] = "# every key, none at its default\n"
                                "server:\n"
                                "  bind: \"[::1]:9000\"\n"
                                "  public_url: https://hub.example.com/\n"
                                "  data_dir: /var/lib/codehub\n"
                                "  trusted_proxies: [10.0.0.0/8, \"fd00::/8\", 192.168.1.7]\n"
                                "  shutdown_grace: 1m\n"
                                "log:\n"
                                "  level: debug\n"
                                "  format: json\n"
                                "  requests: off\n"
                                "http:\n"
                                "  max_head_size: 64k\n"
                                "  max_headers: 50\n"
                                "  max_url_length: 4096\n"
                                "  max_body_size: 2M\n"
                                "  head_timeout: 5s\n"
                                "  body_timeout: 2m\n"
                                "  idle_timeout: 1h\n"
                                "  max_connections: 500\n"
                                "store:\n"
                                "  url: sqlite:/var/lib/codehub/hub.db\n"
                                "auth:\n"
                                "  open_signup: no\n"
                                "  allowed_users:\n"
                                "    - ann\n"
                                "    - bob.smith\n"
                                "  admin_users: [root-1]\n"
                                "  min_password_length: 12\n"
                                "  session_max_age: 7d\n"
                                "  throttle_free_attempts: 0\n"
                                "  throttle_max_delay: 90\n"
                                "  secret_file: /etc/codehub/hub-secret\n";

static void assert_full_file_values(const struct config *cfg)
{
    assert_string_equal(cfg->server.bind, "[::1]:9000");
    assert_string_equal(cfg->server.data_dir, "/var/lib/codehub");
    assert_int_equal(cfg->server.trusted_proxies.n, 3);
    assert_string_equal(cfg->server.trusted_proxies.items[0], "10.0.0.0/8");
    assert_string_equal(cfg->server.trusted_proxies.items[1], "fd00::/8");
    assert_string_equal(cfg->server.trusted_proxies.items[2], "192.168.1.7");
    assert_int_equal(cfg->server.shutdown_grace, 60);
    assert_string_equal(cfg->log.level, "debug");
    assert_string_equal(cfg->log.format, "json");
    assert_false(cfg->log.requests);
    assert_int_equal(cfg->http.max_head_size, 65536);
    assert_int_equal(cfg->http.max_headers, 50);
    assert_int_equal(cfg->http.max_url_length, 4096);
    assert_int_equal(cfg->http.max_body_size, 2 * 1024 * 1024);
    assert_int_equal(cfg->http.head_timeout, 5);
    assert_int_equal(cfg->http.body_timeout, 120);
    assert_int_equal(cfg->http.idle_timeout, 3600);
    assert_int_equal(cfg->http.max_connections, 500);
    assert_string_equal(cfg->store.url, "sqlite:/var/lib/codehub/hub.db");
    assert_false(cfg->auth.open_signup);
    assert_int_equal(cfg->auth.allowed_users.n, 2);
    assert_string_equal(cfg->auth.allowed_users.items[0], "ann");
    assert_string_equal(cfg->auth.allowed_users.items[1], "bob.smith");
    assert_int_equal(cfg->auth.admin_users.n, 1);
    assert_string_equal(cfg->auth.admin_users.items[0], "root-1");
    assert_int_equal(cfg->auth.min_password_length, 12);
    assert_int_equal(cfg->auth.session_max_age, 7 * 24 * 3600);
    assert_int_equal(cfg->auth.throttle_free_attempts, 0);
    assert_int_equal(cfg->auth.throttle_max_delay, 90);
    assert_string_equal(cfg->auth.secret_file, "/etc/codehub/hub-secret");
}

static void test_full_valid_file(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    assert_int_equal(load_text(&cfg, full_file, &errors, NULL), 0);
    assert_null(errors.data);
    assert_full_file_values(&cfg);
    assert_string_equal(cfg.server.public_url, "https://hub.example.com/");
    assert_int_equal(config_finish(&cfg, &errors), 0);
    assert_null(errors.data);
    /* Stored without the trailing slash. */
    assert_string_equal(cfg.server.public_url, "https://hub.example.com");
    config_free(&cfg);
}

/* Loading a second file over the first replaces (and frees, checked by ASan) every
 * string and list; keys the second file does not name keep their values. */
static void test_load_over_previous_values(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    assert_int_equal(load_text(&cfg, full_file, &errors, NULL), 0);
    assert_int_equal(load_text(&cfg, full_file, &errors, NULL), 0);
    assert_int_equal(load_text(&cfg,
                               "server:\n  data_dir: /srv\n  trusted_proxies: []\n"
                               "auth:\n  admin_users: [zed]\n",
                               &errors, NULL),
                     0);
    assert_null(errors.data);
    assert_string_equal(cfg.server.data_dir, "/srv");
    assert_int_equal(cfg.server.trusted_proxies.n, 0);
    assert_int_equal(cfg.auth.admin_users.n, 1);
    assert_string_equal(cfg.auth.admin_users.items[0], "zed");
    assert_string_equal(cfg.server.bind, "[::1]:9000");
    assert_int_equal(cfg.auth.allowed_users.n, 2);
    config_free(&cfg);
}

static void test_empty_files_are_defaults(void **state)
{
    static const char *const texts[] = {
        "",
        "\n\n",
        "# nothing but a comment\n# and another\n",
        "---\n",
        "---\n...\n",
        "~\n",
        "server:\n",
        "auth:\n  # every key commented out\n",
        "server: {}\nlog: ~\n",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        struct config cfg;
        struct buf errors = BUF_INIT;
        config_init(&cfg);
        assert_int_equal(load_text(&cfg, texts[i], &errors, NULL), 0);
        assert_null(errors.data);
        assert_string_equal(cfg.server.bind, "127.0.0.1:8000");
        assert_int_equal(cfg.http.max_headers, 100);
        config_free(&cfg);
    }
}

static void test_unreadable_file(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    char *missing = xasprintf("%s/does-not-exist.yaml", tmpdir);
    assert_int_equal(config_load_file(&cfg, missing, &errors), -ENOENT);
    char *want = xasprintf("%s: cannot read config file: %s\n", missing, strerror(ENOENT));
    assert_string_equal(errors.data, want);
    free(want);
    free(missing);

    /* A directory opens but cannot be read. */
    buf_reset(&errors);
    assert_int_equal(config_load_file(&cfg, tmpdir, &errors), -ENOENT);
    want = xasprintf("%s: cannot read config file: %s\n", tmpdir, strerror(EISDIR));
    assert_string_equal(errors.data, want);
    free(want);

    /* Nothing was changed. */
    assert_string_equal(cfg.server.bind, "127.0.0.1:8000");
    buf_free(&errors);
    config_free(&cfg);
}

static void test_syntax_errors(void **state)
{
    /* libfyaml's own message, at libfyaml's 1-based position, in our format. */
    expect_file_error("server:\n  bind: \"127.0.0.1:8000\n",
                      ":2:10: double-quoted scalar without closing quote");
    expect_file_error("server:\n  bind: a: b\n", ":2:10: invalid nested block mapping on the "
                                                 "same line");
    expect_file_error("log:\n  level: info\n format: json\n", ":3:2: invalid indentation in "
                                                              "mapping");

    /* An error found before the parser fails is kept, on its own line. */
    struct config cfg;
    struct buf errors = BUF_INIT;
    char *path;
    config_init(&cfg);
    assert_int_equal(load_text(&cfg, "server: [a\n", &errors, &path), -EINVAL);
    char *want = xasprintf("%s:1:9: server: a section must be a mapping of keys, got a sequence\n"
                           "%s:2:1: flow sequence without a closing bracket\n",
                           path, path);
    assert_string_equal(errors.data, want);
    free(want);
    free(path);
    buf_free(&errors);
    config_free(&cfg);
}

static void test_structure_errors(void **state)
{
    expect_file_error("- server\n- log\n", ":1:1: the top level must be a mapping of sections "
                                           "(server:, log:, ...), got a sequence");
    expect_file_error("just a string\n", ":1:1: the top level must be a mapping of sections "
                                         "(server:, log:, ...), got a scalar");
    expect_file_error("server: 8000\n", ":1:9: server: a section must be a mapping of keys, got "
                                        "a scalar");
    expect_file_error("log:\n  - level\n", ":2:3: log: a section must be a mapping of keys, got a "
                                           "sequence");
    expect_file_error("server:\n  bind: 127.0.0.1:1\nserver:\n  data_dir: x\n",
                      ":3:1: server: duplicate section (first on line 1)");
    expect_file_error("log: {level: info}\n---\nlog: {level: warn}\n",
                      ":2:1: only one YAML document is allowed");
    expect_file_error("server:\n  [a, b]: 1\n",
                      ":2:3: server: keys must be plain names, got a sequence");
    expect_file_error("server:\n  data_dir: *nowhere\n",
                      ":2:13: server.data_dir: YAML aliases are not supported");
}

static void test_unknown_names(void **state)
{
    expect_file_error("sever:\n  bind: 127.0.0.1:1\n",
                      ":1:1: unknown section 'sever' (did you mean 'server'?)");
    expect_file_error("kubernetes:\n  image: x\n", ":1:1: unknown section 'kubernetes'");
    expect_file_error("server:\n  bnd: 127.0.0.1:1\n",
                      ":2:3: server.bnd: unknown key 'server.bnd' (did you mean 'server.bind'?)");
    expect_file_error("http:\n  max_header: 5\n", ":2:3: http.max_header: unknown key "
                                                  "'http.max_header' (did you mean "
                                                  "'http.max_headers'?)");
    expect_file_error("server:\n  frobnicate: 1\n",
                      ":2:3: server.frobnicate: unknown key 'server.frobnicate'");
    /* A key in the wrong section points at the right one. */
    expect_file_error("server:\n  level: debug\n",
                      ":2:3: server.level: unknown key 'server.level' (did you mean "
                      "'log.level'?)");
}

static void test_type_errors(void **state)
{
    expect_file_error("server:\n  bind: {host: a}\n",
                      ":2:9: server.bind: expected a string, got a mapping");
    expect_file_error("server:\n  bind:\n    host: a\n",
                      ":3:5: server.bind: expected a string, got a mapping");
    expect_file_error("server:\n  data_dir: [a]\n",
                      ":2:13: server.data_dir: expected a string, got a sequence");
    expect_file_error("http:\n  max_headers: abc\n",
                      ":2:16: http.max_headers: expected an integer, got 'abc'");
    expect_file_error("http:\n  max_headers: 1.5\n",
                      ":2:16: http.max_headers: expected an integer, got '1.5'");
    expect_file_error("http:\n  max_headers: [1]\n",
                      ":2:16: http.max_headers: expected an integer, got a sequence");
    expect_file_error("http:\n  max_headers:\n",
                      ":2:3: http.max_headers: missing value (expected an integer)");
    expect_file_error("log:\n  requests: maybe\n",
                      ":2:13: log.requests: expected true/false, yes/no or on/off, got 'maybe'");
    expect_file_error("log:\n  requests: 1\n",
                      ":2:13: log.requests: expected true/false, yes/no or on/off, got '1'");
    expect_file_error("log:\n  level: verbose\n",
                      ":2:10: log.level: expected one of debug, info, warn, error, got "
                      "'verbose'");
    expect_file_error("log:\n  format: yaml\n",
                      ":2:11: log.format: expected one of text, json, got 'yaml'");
    expect_file_error("http:\n  head_timeout: 10 s\n",
                      ":2:17: http.head_timeout: expected a duration in seconds, optionally "
                      "with a suffix s, m, h or d (90, 90s, 5m, 1h, 14d), got '10 s'");
    expect_file_error("http:\n  max_body_size: 1MB\n",
                      ":2:18: http.max_body_size: expected a size in bytes, optionally with a "
                      "suffix K, M or G (KiB, MiB, GiB; 65536, 64K, 1M), got '1MB'");
    expect_file_error("auth:\n  admin_users: ann\n",
                      ":2:16: auth.admin_users: expected a list of strings (a YAML sequence "
                      "such as [a, b]), got a scalar");
    expect_file_error("auth:\n  admin_users:\n    - ann\n    - {name: bob}\n",
                      ":4:7: auth.admin_users: list items must be strings, got a mapping");
    expect_file_error("auth:\n  admin_users: [ann, ~]\n",
                      ":2:22: auth.admin_users: list items must be strings, got an empty value");
    /* A value with a newline cannot split its error line in two. */
    expect_file_error("http:\n  max_headers: |\n    5\n    6\n",
                      ":2:3: http.max_headers: expected an integer, got '5\\n6\\n'");
    expect_file_error("server:\n  \"bi\\nd\": 1\n",
                      ":2:3: server.bi\\nd: unknown key 'server.bi\\nd' (did you mean "
                      "'server.bind'?)");
    expect_file_error("server:\n  data_dir: \"a\\tb\"\n",
                      ":2:13: server.data_dir: control characters are not allowed");
    expect_file_error("server:\n  data_dir: \"a\\0b\"\n",
                      ":2:13: server.data_dir: NUL characters are not allowed");
}

static void test_value_errors(void **state)
{
    expect_file_error("http:\n  max_headers: 0\n",
                      ":2:16: http.max_headers: must be between 1 and 1000, got 0");
    expect_file_error("http:\n  max_headers: -3\n",
                      ":2:16: http.max_headers: must be between 1 and 1000, got -3");
    expect_file_error("http:\n  head_timeout: 2h\n",
                      ":2:17: http.head_timeout: must be between 1s and 1h, got 2h");
    expect_file_error("http:\n  max_head_size: 512\n",
                      ":2:18: http.max_head_size: must be between 1K and 1M, got 512");
    expect_file_error("http:\n  max_connections: 99999999999999999999\n",
                      ":2:20: http.max_connections: '99999999999999999999' is too large");
    expect_file_error("server:\n  bind: localhost\n",
                      ":2:9: server.bind: expected ADDR:PORT, as in 127.0.0.1:8000");
    expect_file_error("server:\n  bind: 127.0.0.1:70000\n",
                      ":2:9: server.bind: invalid port '70000' (expected 0 to 65535)");
    expect_file_error("server:\n  public_url: https://hub.example.com/codehub\n",
                      ":2:15: server.public_url: must not have a path (serving under a path "
                      "prefix is not supported)");
    expect_file_error("server:\n  data_dir: \"\"\n", ":2:13: server.data_dir: must not be empty");
    expect_file_error("proxy:\n  user_subdomains: WS.example.com\n",
                      ":2:20: proxy.user_subdomains: must be lowercase");
    expect_file_error("proxy:\n  user_subdomains: 10.1.2.3\n",
                      ":2:20: proxy.user_subdomains: must be a domain name, not an IP address");
    expect_file_error("proxy:\n  user_subdomains: ws.1\n",
                      ":2:20: proxy.user_subdomains: its last label must not be a number "
                      "(browsers would read NAME.DOMAIN as an IPv4 address)");
    expect_file_error("proxy:\n  user_subdomains: a.0x7F\n",
                      ":2:20: proxy.user_subdomains: must be lowercase");
    expect_file_error("proxy:\n  user_subdomains: a.0x7f\n",
                      ":2:20: proxy.user_subdomains: its last label must not be a number "
                      "(browsers would read NAME.DOMAIN as an IPv4 address)");
    expect_file_error("proxy:\n  user_subdomains: ws..example.com\n",
                      ":2:20: proxy.user_subdomains: expected a domain name of at most 220 "
                      "characters, as in ws.example.com");
    expect_file_error("server:\n  trusted_proxies: [10.0.0.0/8, 10.0.0.0/33]\n",
                      ":2:33: server.trusted_proxies: invalid prefix length in '10.0.0.0/33' "
                      "(expected /0 to /32)");
    expect_file_error("auth:\n  admin_users:\n    - Ann\n",
                      ":3:7: auth.admin_users: invalid user name 'Ann' (1 to 32 characters: "
                      "lowercase letters, digits, '.', '_' and '-', starting with a letter or "
                      "digit)");
    expect_file_error("store:\n  url: mysql://db/hub\n",
                      ":2:8: store.url: expected empty (SQLite in data_dir), sqlite:PATH, or "
                      "postgres://...");
    expect_file_error("server:\n  bind: 127.0.0.1:1\n  bind: 127.0.0.1:2\n",
                      ":3:3: server.bind: duplicate key (first set on line 2)");
}

/* A failed value leaves the previous one in place. */
static void test_bad_value_keeps_old(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    assert_int_equal(load_text(&cfg,
                               "server:\n  bind: nope\n  trusted_proxies: [1.2.3.4, x]\n"
                               "http:\n  max_headers: 5000\n",
                               &errors, NULL),
                     -EINVAL);
    assert_int_equal(count_lines(&errors), 3);
    assert_string_equal(cfg.server.bind, "127.0.0.1:8000");
    assert_int_equal(cfg.server.trusted_proxies.n, 0);
    assert_int_equal(cfg.http.max_headers, 100);
    buf_free(&errors);
    config_free(&cfg);
}

static void test_multiple_errors_reported_together(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    char *path;
    config_init(&cfg);
    assert_int_equal(load_text(&cfg,
                               "server:\n"
                               "  bnd: 1\n"
                               "  data_dir: /ok\n"
                               "logs:\n"
                               "  level: info\n"
                               "http:\n"
                               "  max_headers: many\n"
                               "  max_headers: 7\n"
                               "auth:\n"
                               "  open_signup: perhaps\n",
                               &errors, &path),
                     -EINVAL);
    char *want = xasprintf(
        "%s:2:3: server.bnd: unknown key 'server.bnd' (did you mean 'server.bind'?)\n"
        "%s:4:1: unknown section 'logs' (did you mean 'log'?)\n"
        "%s:7:16: http.max_headers: expected an integer, got 'many'\n"
        "%s:8:3: http.max_headers: duplicate key (first set on line 7)\n"
        "%s:10:16: auth.open_signup: expected true/false, yes/no or on/off, got 'perhaps'\n",
        path, path, path, path, path);
    assert_string_equal(errors.data, want);
    /* Valid keys are still applied. */
    assert_string_equal(cfg.server.data_dir, "/ok");
    free(want);

    /* Semantic errors before a syntax error are kept too. */
    buf_reset(&errors);
    free(path);
    assert_int_equal(load_text(&cfg, "log:\n  level: loud\n  format: \"json\n", &errors, &path),
                     -EINVAL);
    want = xasprintf("%s:2:10: log.level: expected one of debug, info, warn, error, got 'loud'\n"
                     "%s:3:12: double-quoted scalar without closing quote\n",
                     path, path);
    assert_string_equal(errors.data, want);
    free(want);
    free(path);
    buf_free(&errors);
    config_free(&cfg);
}

static void test_null_values(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "auth.admin_users", "ann,bob", "x", &errors), 0);
    assert_int_equal(config_set(&cfg, "server.public_url", "http://a:1", "x", &errors), 0);
    /* An empty or null value means "" for strings and [] for lists; a quoted "null" is text. */
    assert_int_equal(load_text(&cfg,
                               "server:\n  public_url:\n  data_dir: \"null\"\n"
                               "auth:\n  admin_users: ~\n",
                               &errors, NULL),
                     0);
    assert_null(errors.data);
    assert_string_equal(cfg.server.public_url, "");
    assert_string_equal(cfg.server.data_dir, "null");
    assert_int_equal(cfg.auth.admin_users.n, 0);
    config_free(&cfg);
}

static void test_bools(void **state)
{
    static const struct {
        const char *text;
        bool value;
    } ok[] = {{"yes", true},  {"no", false},    {"on", true},   {"off", false},
              {"true", true}, {"false", false}, {"TRUE", true}, {"Off", false}};
    static const char *const bad[] = {"1", "0", "y", "n", "enabled", "", "truee"};
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        cfg.log.requests = !ok[i].value;
        assert_int_equal(config_set(&cfg, "log.requests", ok[i].text, "--x", &errors), 0);
        assert_true(cfg.log.requests == ok[i].value);
    }
    assert_null(errors.data);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        buf_reset(&errors);
        assert_int_equal(config_set(&cfg, "log.requests", bad[i], "--x", &errors), -EINVAL);
        char *want = xasprintf(
            "--x: log.requests: expected true/false, yes/no or on/off, got '%s'\n", bad[i]);
        assert_string_equal(errors.data, want);
        free(want);
    }
    buf_free(&errors);
    config_free(&cfg);
}

static void test_durations_and_sizes(void **state)
{
    static const struct {
        const char *key, *text;
        int64_t value;
    } ok[] = {
        {"auth.session_max_age", "90", 90},
        {"auth.session_max_age", "90s", 90},
        {"auth.session_max_age", "5m", 300},
        {"auth.session_max_age", "1h", 3600},
        {"auth.session_max_age", "14d", 14 * 86400},
        {"auth.session_max_age", "365d", 365 * 86400},
        {"auth.throttle_max_delay", "0", 0},
        {"server.shutdown_grace", "0s", 0},
        {"http.max_body_size", "1024", 1024},
        {"http.max_body_size", "64k", 65536},
        {"http.max_body_size", "64K", 65536},
        {"http.max_body_size", "3m", 3 * 1024 * 1024},
        {"http.max_body_size", "3M", 3 * 1024 * 1024},
        {"http.max_body_size", "1g", 1024 * 1024 * 1024},
        {"http.max_body_size", "1G", 1024 * 1024 * 1024},
        {"http.max_connections", "007", 7},
    };
    static const struct {
        const char *key, *text, *msg;
    } bad[] = {
        {"auth.session_max_age", "30s", "must be between 1m and 365d, got 30s"},
        {"auth.session_max_age", "366d", "must be between 1m and 365d, got 366d"},
        {"auth.session_max_age", "5x", NULL},
        {"auth.session_max_age", "m", NULL},
        {"auth.session_max_age", "1.5h", NULL},
        {"auth.session_max_age", "-1", NULL},
        {"auth.session_max_age", "", NULL},
        {"auth.session_max_age", "5mm", NULL},
        {"auth.session_max_age", "1h30m", NULL},
        {"auth.session_max_age", "9999999999999999999d", "'9999999999999999999d' is too large"},
        {"auth.session_max_age", "99999999999999999d", "'99999999999999999d' is too large"},
        {"http.max_body_size", "2G", "must be between 1K and 1G, got 2G"},
        {"http.max_body_size", "1000", "must be between 1K and 1G, got 1000"},
        {"http.max_body_size", "1KiB", NULL},
        {"http.max_body_size", "1T", NULL},
        {"http.max_body_size", "-1K", NULL},
        {"http.max_connections", "+5", "expected an integer, got '+5'"},
        {"http.max_connections", "0x10", "expected an integer, got '0x10'"},
        {"http.max_connections", " 5", "expected an integer, got ' 5'"},
        {"http.max_connections", "-", "expected an integer, got '-'"},
    };
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(config_set(&cfg, ok[i].key, ok[i].text, "--x", &errors), 0);
        int64_t got = strcmp(ok[i].key, "auth.session_max_age") == 0 ? cfg.auth.session_max_age
                      : strcmp(ok[i].key, "auth.throttle_max_delay") == 0
                          ? cfg.auth.throttle_max_delay
                      : strcmp(ok[i].key, "server.shutdown_grace") == 0 ? cfg.server.shutdown_grace
                      : strcmp(ok[i].key, "http.max_connections") == 0  ? cfg.http.max_connections
                                                                        : cfg.http.max_body_size;
        assert_int_equal(got, ok[i].value);
    }
    assert_null(errors.data);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(set_one(bad[i].key, bad[i].text, &errors), -EINVAL);
        char *prefix = xasprintf("--test: %s: ", bad[i].key);
        assert_non_null(errors.data);
        assert_memory_equal(errors.data, prefix, strlen(prefix));
        if (bad[i].msg) {
            char *want = xasprintf("%s%s\n", prefix, bad[i].msg);
            assert_string_equal(errors.data, want);
            free(want);
        } else {
            assert_non_null(strstr(errors.data, "expected a "));
        }
        free(prefix);
    }
    buf_free(&errors);
    config_free(&cfg);
}

static void test_env_overrides(void **state)
{
    char *env[] = {
        "PATH=/usr/bin",
        "CODEHUB_SERVER_BIND=0.0.0.0:9000",
        "CODEHUB_HTTP_MAX_HEAD_SIZE=64K",
        "CODEHUB_HTTP_IDLE_TIMEOUT=2m",
        "CODEHUB_AUTH_ADMIN_USERS=ann,bob",
        "CODEHUB_AUTH_ALLOWED_USERS= carl , dora ",
        "CODEHUB_SERVER_TRUSTED_PROXIES=10.0.0.0/8,::1",
        "CODEHUB_LOG_REQUESTS=no",
        "CODEHUB_LOG_LEVEL=warn",
        "CODEHUB_STORE_URL=postgres://db/hub",
        "CODEHUB_AUTH_SECRET_FILE=/run/secrets/hub secret",
        /* The program's and the test harness's own variables are not keys. */
        "CODEHUB_CONFIG=/etc/codehub.yaml",
        "CODEHUB_BIN=/x/codehub",
        "CODEHUB_SOURCE_DIR=/src",
        "CODEHUB_SANITIZED=1",
        "codehub_server_bind=ignored:1",
        "CODEHUB_NO_EQUALS_SIGN",
        NULL,
    };
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    assert_int_equal(config_apply_env(&cfg, env, &errors), 0);
    assert_null(errors.data);
    assert_string_equal(cfg.server.bind, "0.0.0.0:9000");
    assert_int_equal(cfg.http.max_head_size, 65536);
    assert_int_equal(cfg.http.idle_timeout, 120);
    assert_int_equal(cfg.auth.admin_users.n, 2);
    assert_string_equal(cfg.auth.admin_users.items[0], "ann");
    assert_string_equal(cfg.auth.admin_users.items[1], "bob");
    assert_int_equal(cfg.auth.allowed_users.n, 2);
    assert_string_equal(cfg.auth.allowed_users.items[0], "carl");
    assert_string_equal(cfg.auth.allowed_users.items[1], "dora");
    assert_int_equal(cfg.server.trusted_proxies.n, 2);
    assert_string_equal(cfg.server.trusted_proxies.items[1], "::1");
    assert_false(cfg.log.requests);
    assert_string_equal(cfg.log.level, "warn");
    assert_string_equal(cfg.store.url, "postgres://db/hub");
    assert_string_equal(cfg.auth.secret_file, "/run/secrets/hub secret");

    /* An empty value empties a list; an empty string goes back to the default. */
    char *clear[] = {"CODEHUB_AUTH_ADMIN_USERS=", "CODEHUB_AUTH_SECRET_FILE=", NULL};
    assert_int_equal(config_apply_env(&cfg, clear, &errors), 0);
    assert_int_equal(cfg.auth.admin_users.n, 0);
    assert_string_equal(cfg.auth.secret_file, "");

    assert_int_equal(config_finish(&cfg, &errors), 0);
    assert_string_equal(cfg.server.public_url, "http://127.0.0.1:9000");
    assert_null(errors.data);
    buf_free(&errors);
    config_free(&cfg);
}

static void test_env_errors(void **state)
{
    char *env[] = {
        "CODEHUB_SERVER_BNID=1.2.3.4:5",
        "CODEHUB_HTTP_MAX_HEADERS=abc",
        "CODEHUB_AUTH_ADMIN_USERS=ann,,bob",
        "CODEHUB_AUTH_ALLOWED_USERS=ann,Bob",
        "CODEHUB_SEVER_BIND=1.2.3.4:5",
        "CODEHUB_TOTALLY_UNRELATED=1",
        "CODEHUB_SERVER_=1",
        "CODEHUB_LOG_LEVEL=loud",
        "CODEHUB_SERVER_DATA_DIR=a\tb",
        "CODEHUB_HTTP_MAX_CONNECTIONS=12",
        "CODEHUB_LOG_FORMAT=json\nx",
        NULL,
    };
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    assert_int_equal(config_apply_env(&cfg, env, &errors), -EINVAL);
    assert_string_equal(
        errors.data,
        "environment CODEHUB_SERVER_BNID: unknown key (did you mean CODEHUB_SERVER_BIND?)\n"
        "environment CODEHUB_HTTP_MAX_HEADERS: expected an integer, got 'abc'\n"
        "environment CODEHUB_AUTH_ADMIN_USERS: empty list item\n"
        "environment CODEHUB_AUTH_ALLOWED_USERS: invalid user name 'Bob' (1 to 32 characters: "
        "lowercase letters, digits, '.', '_' and '-', starting with a letter or digit)\n"
        "environment CODEHUB_SEVER_BIND: unknown variable (expected CODEHUB_<SECTION>_<KEY> "
        "with a section among server, log, http, store, cluster, auth, spawn, local, proxy, cull, "
        "kube) "
        "(did you "
        "mean "
        "CODEHUB_SERVER_BIND?)\n"
        "environment CODEHUB_TOTALLY_UNRELATED: unknown variable (expected "
        "CODEHUB_<SECTION>_<KEY> with a section among server, log, http, store, cluster, auth, "
        "spawn, "
        "local, proxy, cull, kube)\n"
        "environment CODEHUB_SERVER_: unknown key\n"
        "environment CODEHUB_LOG_LEVEL: expected one of debug, info, warn, error, got 'loud'\n"
        "environment CODEHUB_SERVER_DATA_DIR: control characters are not allowed\n"
        "environment CODEHUB_LOG_FORMAT: expected one of text, json, got 'json\\nx'\n");
    /* Bad values change nothing; the good one still applies. */
    assert_int_equal(cfg.http.max_headers, 100);
    assert_int_equal(cfg.auth.admin_users.n, 0);
    assert_int_equal(cfg.auth.allowed_users.n, 0);
    assert_string_equal(cfg.log.level, "info");
    assert_int_equal(cfg.http.max_connections, 12);
    buf_free(&errors);
    config_free(&cfg);
}

static void test_precedence(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    char *env[] = {"CODEHUB_SERVER_BIND=127.0.0.1:2002", "CODEHUB_LOG_LEVEL=warn", NULL};
    config_init(&cfg);
    assert_int_equal(load_text(&cfg,
                               "server:\n  bind: 127.0.0.1:2001\n  data_dir: /file\n"
                               "log:\n  level: debug\n  format: json\n",
                               &errors, NULL),
                     0);
    assert_int_equal(config_apply_env(&cfg, env, &errors), 0);
    assert_int_equal(config_set(&cfg, "server.bind", "127.0.0.1:2003", "--bind", &errors), 0);
    assert_null(errors.data);
    assert_string_equal(cfg.server.bind, "127.0.0.1:2003"); /* flag over env over file */
    assert_string_equal(cfg.log.level, "warn");             /* env over file */
    assert_string_equal(cfg.log.format, "json");            /* file over default */
    assert_string_equal(cfg.server.data_dir, "/file");
    assert_int_equal(cfg.http.max_headers, 100); /* default */
    assert_int_equal(config_finish(&cfg, &errors), 0);
    assert_string_equal(cfg.server.public_url, "http://127.0.0.1:2003");
    config_free(&cfg);
}

static void test_config_set_errors(void **state)
{
    struct buf errors = BUF_INIT;
    assert_int_equal(set_one("server.bnd", "x", &errors), -EINVAL);
    assert_string_equal(errors.data,
                        "--test: unknown key 'server.bnd' (did you mean 'server.bind'?)\n");
    assert_int_equal(set_one("servr.bind", "x", &errors), -EINVAL);
    assert_string_equal(errors.data, "--test: unknown section 'servr' (did you mean 'server'?)\n");
    assert_int_equal(set_one("bind", "x", &errors), -EINVAL);
    assert_string_equal(errors.data, "--test: unknown key 'bind' (keys are written section.key)\n");
    assert_int_equal(set_one("server.bind", "x", &errors), -EINVAL);
    assert_string_equal(errors.data,
                        "--test: server.bind: expected ADDR:PORT, as in 127.0.0.1:8000\n");
    assert_int_equal(set_one("server.data_dir", "\xff\xfe", &errors), -EINVAL);
    assert_string_equal(errors.data, "--test: server.data_dir: not valid UTF-8\n");
    assert_int_equal(set_one("server.data_dir", "caf\xc3\xa9", &errors), 0);
    assert_int_equal(set_one("auth.admin_users", "ann,", &errors), -EINVAL);
    assert_string_equal(errors.data, "--test: auth.admin_users: empty list item\n");

    /* NULL origin names the key; a NULL errors buffer is allowed. */
    struct config cfg;
    config_init(&cfg);
    buf_reset(&errors);
    assert_int_equal(config_set(&cfg, "log.format", "xml", NULL, &errors), -EINVAL);
    assert_string_equal(errors.data,
                        "log.format: log.format: expected one of text, json, got 'xml'\n");
    assert_int_equal(config_set(&cfg, "log.format", "xml", NULL, NULL), -EINVAL);
    assert_int_equal(config_set(&cfg, "log.format", "json", NULL, NULL), 0);
    assert_string_equal(cfg.log.format, "json");
    config_free(&cfg);
    buf_free(&errors);
}

static void test_parse_bind(void **state)
{
    static const struct {
        const char *bind, *host;
        int port;
    } ok[] = {
        {"127.0.0.1:8000", "127.0.0.1", 8000},
        {"0.0.0.0:65535", "0.0.0.0", 65535},
        {"[::1]:8000", "::1", 8000},
        {"[::]:1", "::", 1},
        {"[fd00::1:2]:443", "fd00::1:2", 443},
        {"localhost:0", "localhost", 0},
        {"hub-1.example.com:8080", "hub-1.example.com", 8080},
        {"a:00080", "a", 80},
    };
    static const char *const bad[] = {
        "",
        ":8000",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:65536",
        "127.0.0.1:123456",
        "127.0.0.1:-1",
        "127.0.0.1:+80",
        "127.0.0.1:80x",
        "::1:8000",
        "[::1]8000",
        "[::1]",
        "[zz::1]:80",
        "[127.0.0.1]:80",
        "[::1:80",
        "300.1.1.1:80",
        "1.2.3:80",
        "-bad.example:80",
        "bad-.example:80",
        "a..b:80",
        "under_score:80",
        "host name:80",
        "*:80",
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *host = NULL;
        int port = -1;
        assert_int_equal(config_parse_bind(ok[i].bind, &host, &port), 0);
        assert_string_equal(host, ok[i].host);
        assert_int_equal(port, ok[i].port);
        free(host);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *host = (char *)"sentinel";
        int port = -1;
        assert_int_equal(config_parse_bind(bad[i], &host, &port), -EINVAL);
        assert_null(host);
        assert_int_equal(port, -1);
    }
    assert_int_equal(config_parse_bind(NULL, NULL, NULL), -EINVAL);
    /* A 63-character label is the longest allowed. */
    char label[80];
    memset(label, 'a', 63);
    memcpy(label + 63, ":1", 3);
    assert_int_equal(config_parse_bind(label, NULL, NULL), 0);
    memset(label, 'a', 64);
    memcpy(label + 64, ":1", 3);
    assert_int_equal(config_parse_bind(label, NULL, NULL), -EINVAL);
}

/* config_finish on a config whose only change is `key` = `value`: returns its result and
 * leaves public_url (after finish) in *url_out (caller frees). */
static int finish_with(const char *key, const char *value, char **url_out, struct buf *errors)
{
    struct config cfg;
    config_init(&cfg);
    buf_reset(errors);
    int r = config_set(&cfg, key, value, "--x", errors);
    if (r == 0)
        r = config_finish(&cfg, errors);
    if (url_out)
        *url_out = xstrdup(cfg.server.public_url);
    config_free(&cfg);
    return r;
}

static void test_public_url(void **state)
{
    static const struct {
        const char *key, *value, *url;
    } ok[] = {
        {"server.public_url", "https://hub.example.com", "https://hub.example.com"},
        {"server.public_url", "https://hub.example.com/", "https://hub.example.com"},
        {"server.public_url", "http://10.0.0.1:8000/", "http://10.0.0.1:8000"},
        {"server.public_url", "http://[::1]:8080", "http://[::1]:8080"},
        {"server.public_url", "https://HUB.Example.com:443", "https://HUB.Example.com:443"},
        /* Derived from bind when empty. */
        {"server.bind", "0.0.0.0:9000", "http://127.0.0.1:9000"},
        {"server.bind", "[::]:9000", "http://[::1]:9000"},
        {"server.bind", "[0:0::0]:9001", "http://[::1]:9001"},
        {"server.bind", "[fd00::1]:80", "http://[fd00::1]:80"},
        {"server.bind", "localhost:8000", "http://localhost:8000"},
        {"server.bind", "10.1.2.3:1", "http://10.1.2.3:1"},
        /* Port 0: the real port is known only once listening; the server derives it. */
        {"server.bind", "127.0.0.1:0", ""},
    };
    static const struct {
        const char *value, *msg;
    } bad[] = {
        {"ftp://hub.example.com", "must start with http:// or https://"},
        {"hub.example.com", "must start with http:// or https://"},
        {"HTTPS://hub.example.com", "must start with http:// or https://"},
        {"https://", "missing host"},
        {"https:///", "missing host"},
        {"https://:443", "missing host"},
        {"https://ann@hub.example.com", "must not contain user info (user@)"},
        {"https://ann:pw@hub.example.com", "must not contain user info (user@)"},
        {"https://hub.example.com/x",
         "must not have a path (serving under a path prefix is not supported)"},
        {"https://hub.example.com//",
         "must not have a path (serving under a path prefix is not supported)"},
        {"https://hub.example.com/?a=1", "must not have a query or fragment"},
        {"https://hub.example.com#top", "must not have a query or fragment"},
        {"https://hub.example.com:0", "invalid port '0' (expected 1 to 65535)"},
        {"https://hub.example.com:65536", "invalid port '65536' (expected 1 to 65535)"},
        {"https://hub.example.com:", "invalid port '' (expected 1 to 65535)"},
        {"https://hub.example.com:80:80", "invalid port '80:80' (expected 1 to 65535)"},
        {"https://[::1", "invalid IPv6 address '['"},
        {"https://[zz]:80", "invalid IPv6 address '[zz]'"},
        {"https://::1", "IPv6 addresses must be in brackets, as in [::1]"},
        {"https://hub_1.example.com",
         "invalid host 'hub_1.example.com' (expected an IPv4 address, [IPv6] or a host name)"},
    };
    struct buf errors = BUF_INIT;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        char *url;
        assert_int_equal(finish_with(ok[i].key, ok[i].value, &url, &errors), 0);
        assert_string_equal(url, ok[i].url);
        free(url);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(finish_with("server.public_url", bad[i].value, NULL, &errors), -EINVAL);
        char *want = xasprintf("--x: server.public_url: %s\n", bad[i].msg);
        assert_string_equal(errors.data, want);
        free(want);
    }
    buf_free(&errors);
}

static void test_trusted_proxies(void **state)
{
    static const char *const ok[] = {
        "10.0.0.0/8", "192.168.1.1", "192.168.1.1/32", "0.0.0.0/0",       "::1",
        "fd00::/8",   "::/0",        "2001:db8::/128", "::ffff:10.0.0.1",
    };
    static const char *const bad_addr[] = {
        "host.example", "10.0.0", "[::1]", "10.0.0.1 x", "/8", "fe80::1%eth0", "1.2.3.4,",
    };
    static const char *const bad_prefix[] = {
        "10.0.0.0/33", "fd00::/129", "10.0.0.0/", "10.0.0.0/8/9", "10.0.0.0/+8", "10.0.0.0/0008",
    };
    struct buf errors = BUF_INIT;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(set_one("server.trusted_proxies", ok[i], &errors), 0);
        assert_null(errors.data);
    }
    for (size_t i = 0; i < sizeof(bad_addr) / sizeof(bad_addr[0]); i++) {
        assert_int_equal(set_one("server.trusted_proxies", bad_addr[i], &errors), -EINVAL);
        assert_non_null(errors.data);
    }
    /* "" is the empty list, not an empty item; blanks around items are dropped. */
    struct config cfg;
    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "server.trusted_proxies", " ::1 ,\t10.0.0.0/8", "x", &errors),
                     0);
    assert_int_equal(cfg.server.trusted_proxies.n, 2);
    assert_string_equal(cfg.server.trusted_proxies.items[0], "::1");
    assert_string_equal(cfg.server.trusted_proxies.items[1], "10.0.0.0/8");
    assert_int_equal(config_set(&cfg, "server.trusted_proxies", "", "x", &errors), 0);
    assert_int_equal(cfg.server.trusted_proxies.n, 0);
    config_free(&cfg);
    for (size_t i = 0; i < sizeof(bad_prefix) / sizeof(bad_prefix[0]); i++) {
        assert_int_equal(set_one("server.trusted_proxies", bad_prefix[i], &errors), -EINVAL);
        assert_non_null(strstr(errors.data, "invalid prefix length"));
    }
    buf_reset(&errors);
    assert_int_equal(set_one("server.trusted_proxies", "10.0.0", &errors), -EINVAL);
    assert_string_equal(errors.data,
                        "--test: server.trusted_proxies: invalid address '10.0.0' (expected an "
                        "IPv4 or IPv6 address, optionally with /PREFIX, such as 10.0.0.0/8 or "
                        "fd00::/8)\n");
    buf_free(&errors);
}

static void test_usernames(void **state)
{
    static const char *const ok[] = {
        "ann", "a", "0", "a.b_c-d", "abcdefghijklmnopqrstuvwxyz012345", "9lives",
    };
    static const char *const bad[] = {
        "Ann",         "-ann",   ".ann",  "_ann", "ann smith", "abcdefghijklmnopqrstuvwxyz0123456",
        "caf\xc3\xa9", "ann/..", "ann@x",
    };
    struct buf errors = BUF_INIT;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        assert_int_equal(set_one("auth.admin_users", ok[i], &errors), 0);
        assert_int_equal(set_one("auth.allowed_users", ok[i], &errors), 0);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(set_one("auth.admin_users", bad[i], &errors), -EINVAL);
        char *want = xasprintf("--test: auth.admin_users: invalid user name '%s' (1 to 32 "
                               "characters: lowercase letters, digits, '.', '_' and '-', "
                               "starting with a letter or digit)\n",
                               bad[i]);
        assert_string_equal(errors.data, want);
        free(want);
        assert_int_equal(set_one("auth.allowed_users", bad[i], &errors), -EINVAL);
    }
    buf_free(&errors);
}

static void test_store_url(void **state)
{
    static const char *const ok[] = {
        "",
        "sqlite:",
        "sqlite:/var/lib/codehub/hub.db",
        "sqlite:hub.db",
        "postgres://codehub@db/codehub",
        "postgresql://db:5432/codehub?sslmode=require",
    };
    static const char *const bad[] = {"mysql://db/x", "/var/lib/hub.db", "sqlite", "postgres:/x",
                                      "SQLITE:x"};
    struct buf errors = BUF_INIT;
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
        assert_int_equal(finish_with("store.url", ok[i], NULL, &errors), 0);
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(finish_with("store.url", bad[i], NULL, &errors), -EINVAL);
        assert_string_equal(errors.data, "--x: store.url: expected empty (SQLite in data_dir), "
                                         "sqlite:PATH, or postgres://...\n");
    }
    buf_free(&errors);
}

/* Values stored by code (not through the parser) are checked by config_finish, which also
 * reports cross-key problems; every problem is on its own line. */
static void test_finish_errors(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    free(cfg.server.bind);
    cfg.server.bind = xstrdup("nowhere");
    free(cfg.server.data_dir);
    cfg.server.data_dir = xstrdup("");
    free(cfg.log.level);
    cfg.log.level = xstrdup("chatty");
    cfg.http.max_headers = 0;
    cfg.http.max_url_length = 65536; /* in range, but larger than max_head_size (32K) */
    cfg.auth.admin_users.items = xcalloc(1, sizeof(char *));
    cfg.auth.admin_users.items[0] = xstrdup("Root");
    cfg.auth.admin_users.n = 1;
    assert_int_equal(config_finish(&cfg, &errors), -EINVAL);
    assert_string_equal(errors.data,
                        "server.bind: expected ADDR:PORT, as in 127.0.0.1:8000\n"
                        "server.data_dir: must not be empty\n"
                        "log.level: expected one of debug, info, warn, error, got 'chatty'\n"
                        "http.max_headers: must be between 1 and 1000, got 0\n"
                        "auth.admin_users: invalid user name 'Root' (1 to 32 characters: "
                        "lowercase letters, digits, '.', '_' and '-', starting with a letter or "
                        "digit)\n"
                        "http.max_url_length: must not exceed http.max_head_size (32K), got 64K\n");
    /* public_url is derived only from a valid configuration. */
    assert_string_equal(cfg.server.public_url, "");
    config_free(&cfg);

    /* A NULL public_url set by code counts as empty. */
    config_init(&cfg);
    free(cfg.server.public_url);
    cfg.server.public_url = NULL;
    buf_reset(&errors);
    assert_int_equal(config_finish(&cfg, &errors), 0);
    assert_string_equal(cfg.server.public_url, "http://127.0.0.1:8000");
    config_free(&cfg);
    buf_free(&errors);
}

/* With per-user origins, the hub's host must not be NAME.DOMAIN itself. */
static void test_finish_subdomains_vs_hub_host(void **state)
{
    static const struct {
        const char *url, *domain;
        bool ok;
    } cases[] = {
        {"https://code.example.org", "example.org", false},
        {"https://CODE.Example.org:8443/", "example.org", false},
        {"https://code.example.org", "code.example.org", true}, /* the hub's host itself */
        {"https://code.example.org", "ws.example.org", true},
        {"https://a.code.example.org", "example.org", true}, /* two labels deep */
        {"https://xexample.org", "example.org", true},
        {"http://127.0.0.1:8000", "localhost", true},
        {"http://localhost:8000", "localhost", true},
        {"http://ann.localhost:8000", "localhost", false},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg;
        struct buf errors = BUF_INIT;
        config_init(&cfg);
        free(cfg.server.public_url);
        cfg.server.public_url = xstrdup(cases[i].url);
        free(cfg.proxy.user_subdomains);
        cfg.proxy.user_subdomains = xstrdup(cases[i].domain);
        int rc = config_finish(&cfg, &errors);
        if (cases[i].ok) {
            assert_int_equal(rc, 0);
        } else {
            assert_int_equal(rc, -EINVAL);
            assert_non_null(strstr(errors.data, "proxy.user_subdomains: the hub's own host"));
            assert_non_null(strstr(errors.data, "(server.public_url) would be taken for user"));
        }
        config_free(&cfg);
        buf_free(&errors);
    }
    struct buf errors = BUF_INIT;
    struct config cfg;
    config_init(&cfg);
    free(cfg.server.public_url);
    cfg.server.public_url = xstrdup("https://code.example.org");
    free(cfg.proxy.user_subdomains);
    cfg.proxy.user_subdomains = xstrdup("example.org");
    assert_int_equal(config_finish(&cfg, &errors), -EINVAL);
    assert_string_equal(errors.data,
                        "proxy.user_subdomains: the hub's own host 'code.example.org' "
                        "(server.public_url) would be taken for user 'code''s workspace; use the "
                        "hub's host itself as the domain, or a domain that is not its parent\n");
    config_free(&cfg);
    buf_free(&errors);
}

static void test_finish_null_errors_buffer(void **state)
{
    struct config cfg;
    config_init(&cfg);
    cfg.http.max_headers = 100000;
    assert_int_equal(config_finish(&cfg, NULL), -EINVAL);
    cfg.http.max_headers = 10;
    assert_int_equal(config_finish(&cfg, NULL), 0);
    char *env[] = {"CODEHUB_NOPE=1", NULL};
    assert_int_equal(config_apply_env(&cfg, env, NULL), -EINVAL);
    assert_int_equal(config_load_file(&cfg, "/nonexistent/codehub.yaml", NULL), -ENOENT);
    config_free(&cfg);
}

/* Loads `text` (a dump) into a fresh config; the caller frees it. */
static void load_dump(struct config *cfg, const char *text)
{
    struct buf errors = BUF_INIT;
    config_init(cfg);
    int r = load_text(cfg, text, &errors, NULL);
    if (r != 0)
        fprintf(stderr, "%s", errors.data);
    assert_int_equal(r, 0);
    assert_null(errors.data);
}

static void assert_configs_equal(const struct config *a, const struct config *b)
{
    const struct config_list *la[] = {&a->server.trusted_proxies, &a->auth.allowed_users,
                                      &a->auth.admin_users};
    const struct config_list *lb[] = {&b->server.trusted_proxies, &b->auth.allowed_users,
                                      &b->auth.admin_users};
    assert_string_equal(a->server.bind, b->server.bind);
    assert_string_equal(a->server.public_url, b->server.public_url);
    assert_string_equal(a->server.data_dir, b->server.data_dir);
    assert_int_equal(a->server.shutdown_grace, b->server.shutdown_grace);
    assert_string_equal(a->log.level, b->log.level);
    assert_string_equal(a->log.format, b->log.format);
    assert_true(a->log.requests == b->log.requests);
    assert_int_equal(a->http.max_head_size, b->http.max_head_size);
    assert_int_equal(a->http.max_headers, b->http.max_headers);
    assert_int_equal(a->http.max_url_length, b->http.max_url_length);
    assert_int_equal(a->http.max_body_size, b->http.max_body_size);
    assert_int_equal(a->http.head_timeout, b->http.head_timeout);
    assert_int_equal(a->http.body_timeout, b->http.body_timeout);
    assert_int_equal(a->http.idle_timeout, b->http.idle_timeout);
    assert_int_equal(a->http.max_connections, b->http.max_connections);
    assert_string_equal(a->store.url, b->store.url);
    assert_true(a->auth.open_signup == b->auth.open_signup);
    assert_int_equal(a->auth.min_password_length, b->auth.min_password_length);
    assert_int_equal(a->auth.session_max_age, b->auth.session_max_age);
    assert_int_equal(a->auth.throttle_free_attempts, b->auth.throttle_free_attempts);
    assert_int_equal(a->auth.throttle_max_delay, b->auth.throttle_max_delay);
    assert_string_equal(a->auth.secret_file, b->auth.secret_file);
    for (size_t i = 0; i < 3; i++) {
        assert_int_equal(la[i]->n, lb[i]->n);
        for (size_t j = 0; j < la[i]->n; j++)
            assert_string_equal(la[i]->items[j], lb[i]->items[j]);
    }
}

static void check_round_trip(struct config *cfg)
{
    struct buf dump = BUF_INIT, again = BUF_INIT;
    struct config copy;
    config_dump(cfg, &dump);
    load_dump(&copy, dump.data);
    assert_configs_equal(cfg, &copy);
    /* And the copy dumps to the same text. */
    config_dump(&copy, &again);
    assert_string_equal(dump.data, again.data);
    config_free(&copy);
    buf_free(&dump);
    buf_free(&again);
}

static void test_dump_round_trip(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;

    /* Defaults, finished. */
    config_init(&cfg);
    assert_int_equal(config_finish(&cfg, &errors), 0);
    check_round_trip(&cfg);
    config_free(&cfg);

    /* Every key changed, including awkward strings and odd numbers. */
    config_init(&cfg);
    assert_int_equal(load_text(&cfg, full_file, &errors, NULL), 0);
    assert_int_equal(
        config_set(&cfg, "server.data_dir", "/srv/a \"b\" \\c: #d caf\xc3\xa9 'e'", "x", &errors),
        0);
    assert_int_equal(config_set(&cfg, "http.max_body_size", "1025", "x", &errors), 0);
    assert_int_equal(config_set(&cfg, "auth.session_max_age", "3661", "x", &errors), 0);
    assert_int_equal(config_set(&cfg, "server.shutdown_grace", "0", "x", &errors), 0);
    assert_int_equal(config_set(&cfg, "store.url", "sqlite:", "x", &errors), 0);
    assert_int_equal(config_finish(&cfg, &errors), 0);
    assert_null(errors.data);
    check_round_trip(&cfg);

    /* The dump is readable YAML with the values in their shortest exact unit. */
    struct buf dump = BUF_INIT;
    config_dump(&cfg, &dump);
    assert_non_null(strstr(dump.data, "\nserver:\n"));
    assert_non_null(strstr(dump.data, "  bind: \"[::1]:9000\"\n"));
    assert_non_null(strstr(dump.data, "  public_url: \"https://hub.example.com\"\n"));
    assert_non_null(
        strstr(dump.data, "  data_dir: \"/srv/a \\\"b\\\" \\\\c: #d caf\xc3\xa9 'e'\"\n"));
    assert_non_null(strstr(dump.data, "  trusted_proxies: [\"10.0.0.0/8\", \"fd00::/8\", "
                                      "\"192.168.1.7\"]\n"));
    assert_non_null(strstr(dump.data, "  shutdown_grace: 0s\n"));
    assert_non_null(strstr(dump.data, "  requests: false\n"));
    assert_non_null(strstr(dump.data, "  max_head_size: 64K\n"));
    assert_non_null(strstr(dump.data, "  max_body_size: 1025\n"));
    assert_non_null(strstr(dump.data, "  idle_timeout: 1h\n"));
    assert_non_null(strstr(dump.data, "  session_max_age: 3661s\n"));
    assert_non_null(strstr(dump.data, "  throttle_max_delay: 90s\n"));
    assert_non_null(strstr(dump.data, "  secret_file: \"/etc/codehub/hub-secret\"\n"));
    assert_non_null(strstr(dump.data, "  allowed_users: [\"ann\", \"bob.smith\"]\n"));
    buf_free(&dump);
    config_free(&cfg);

    /* Empty lists and a public_url left empty (port 0) round-trip too. */
    config_init(&cfg);
    assert_int_equal(config_set(&cfg, "server.bind", "[::]:0", "x", &errors), 0);
    assert_int_equal(config_finish(&cfg, &errors), 0);
    assert_string_equal(cfg.server.public_url, "");
    check_round_trip(&cfg);
    config_free(&cfg);
    buf_free(&errors);
}

struct key_names {
    char *names[256];
    size_t n;
};

static void collect_key(const char *key, const char *doc, void *data)
{
    struct key_names *k = data;
    assert_true(k->n < 256);
    assert_non_null(strchr(key, '.'));
    assert_true(strlen(doc) > 10);
    k->names[k->n++] = xstrdup(key);
}

static void test_each_key(void **state)
{
    struct key_names keys = {.n = 0};
    config_each_key(collect_key, &keys);
    /* Every field of struct config has a row. */
    assert_int_equal(keys.n, 84);
    assert_string_equal(keys.names[0], "server.bind");
    assert_string_equal(keys.names[keys.n - 1], "kube.profiles");
    for (size_t i = 0; i < keys.n; i++) {
        /* Each dotted name is accepted by config_set (value validity aside)... */
        struct buf errors = BUF_INIT;
        struct config cfg;
        config_init(&cfg);
        config_set(&cfg, keys.names[i], "", "x", &errors);
        assert_true(errors.data == NULL || strstr(errors.data, "unknown") == NULL);
        buf_free(&errors);
        config_free(&cfg);
        /* ...and unique. */
        for (size_t j = 0; j < i; j++)
            assert_string_not_equal(keys.names[i], keys.names[j]);
    }
    for (size_t i = 0; i < keys.n; i++)
        free(keys.names[i]);
}

/* Returns docs/NAME (caller frees). */
static char *read_doc(const char *name)
{
    const char *src = getenv("CODEHUB_SOURCE_DIR");
    char *path = src ? xasprintf("%s/docs/%s", src, name) : xasprintf("../docs/%s", name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s (set CODEHUB_SOURCE_DIR): %s", path, strerror(errno));
    struct buf b = BUF_INIT;
    char chunk[4096];
    for (;;) {
        size_t n = fread(chunk, 1, sizeof(chunk), f);
        if (n == 0)
            break;
        buf_append(&b, chunk, n);
    }
    fclose(f);
    free(path);
    return buf_steal(&b);
}

static void check_documented(const char *key, const char *doc, void *data)
{
    const char *md = data;
    char *quoted = xasprintf("`%s`", key);
    if (strstr(md, quoted) == NULL)
        fail_msg("docs/config.md does not mention %s", quoted);
    free(quoted);

    /* The environment variable is listed too. */
    char *env = xasprintf("CODEHUB_%s", key);
    for (char *p = env; *p; p++) {
        if (*p == '.')
            *p = '_';
        else if (*p >= 'a' && *p <= 'z')
            *p = (char)(*p - 'a' + 'A');
    }
    if (strstr(md, env) == NULL)
        fail_msg("docs/config.md does not mention %s", env);
    free(env);
}

static void test_docs_list_every_key(void **state)
{
    char *md = read_doc("config.md");
    config_each_key(check_documented, md);
    free(md);
}

struct two_docs {
    const char *config_md, *kubernetes_md;
};

/* docs/kubernetes.md repeats the kube rows of docs/config.md: each, verbatim. */
static void check_kube_row(const char *key, const char *doc, void *data)
{
    const struct two_docs *d = data;
    if (strncmp(key, "kube.", 5) != 0)
        return;
    char *cell = xasprintf("| `%s` |", key);
    const char *row = strstr(d->config_md, cell);
    assert_non_null(row);
    const char *end = strchr(row, '\n');
    char *line = end ? xstrndup(row, (size_t)(end - row)) : xstrdup(row);
    if (strstr(d->kubernetes_md, line) == NULL)
        fail_msg("docs/kubernetes.md lacks (or differs in) the row of %s in docs/config.md", key);
    free(line);
    free(cell);
}

static void test_kubernetes_doc_lists_every_kube_key(void **state)
{
    struct two_docs d = {read_doc("config.md"), read_doc("kubernetes.md")};
    config_each_key(check_kube_row, &d);
    free((char *)d.config_md);
    free((char *)d.kubernetes_md);
}

/* Every ```yaml example in the docs is a valid config. */
static void test_docs_examples_are_valid(void **state)
{
    char *md = read_doc("config.md");
    size_t examples = 0;
    const char *p = md;
    for (;;) {
        const char *start = strstr(p, "```yaml\n");
        if (start == NULL)
            break;
        start += strlen("```yaml\n");
        const char *end = strstr(start, "```");
        assert_non_null(end);
        char *yaml = xstrndup(start, (size_t)(end - start));
        struct config cfg;
        struct buf errors = BUF_INIT;
        config_init(&cfg);
        int r = load_text(&cfg, yaml, &errors, NULL);
        if (r == 0)
            r = config_finish(&cfg, &errors);
        if (r != 0)
            fail_msg("example %zu in docs/config.md: %s", examples + 1, errors.data);
        buf_free(&errors);
        config_free(&cfg);
        free(yaml);
        examples++;
        p = end + 3;
    }
    assert_true(examples >= 2);
    free(md);
}

/* ---- the kube section: scalars, lists, and mapping/list values carried as JSON ---- */

static const char kube_file[] =
    "spawn:\n"
    "  spawner: kubernetes\n"
    "kube:\n"
    "  kubeconfig: /etc/codehub/kubeconfig\n"
    "  namespace: team-a\n"
    "  image: reg.example/ws:1.2\n"
    "  image_pull_policy: Always\n"
    "  uid: 1000\n"
    "  gid: 100\n"
    "  fs_gid: 0\n"
    "  port: 9000\n"
    "  env: [A=1, B=]\n"
    "  cpu_guarantee: 500m\n"
    "  mem_limit: 2Gi\n"
    "  automount_service_account_token: yes\n"
    "  volumes:\n"
    "    - name: docker\n"
    "      hostPath: {path: /var/run/docker.sock, type: Socket}\n"
    "  volume_mounts:\n"
    "    - {name: docker, mountPath: /var/run/docker.sock, readOnly: true}\n"
    "  node_selector:\n"
    "    disktype: ssd\n"
    "    example.com/pool: \"42\"\n"
    "  tolerations:\n"
    "    - key: gpu\n"
    "      operator: Exists\n"
    "      effect: NoSchedule\n"
    "      tolerationSeconds: 300\n"
    "  annotations: {note: 'a: b # c'}\n"
    "  storage_access_modes: [ReadWriteMany]\n"
    "  pod_name: ws-{user}-x\n"
    "  profiles:\n"
    "    gpu:\n"
    "      display_name: GPU box\n"
    "      image: reg.example/ws-gpu:1\n"
    "      cpu_limit: \"4\"\n"
    "      uid: 0\n"
    "      automount_service_account_token: false\n"
    "      env: [CUDA=1]\n"
    "      tolerations: [{key: gpu, operator: Exists}]\n";

static void test_kube_keys(void **state)
{
    struct config cfg;
    struct buf errors = BUF_INIT;

    config_init(&cfg);
    /* Defaults. */
    assert_string_equal(cfg.kube.kubeconfig, "");
    assert_string_equal(cfg.kube.image, "codehub/workspace:latest");
    assert_string_equal(cfg.kube.image_pull_policy, "IfNotPresent");
    assert_int_equal(cfg.kube.uid, -1);
    assert_int_equal(cfg.kube.fs_gid, -1);
    assert_int_equal(cfg.kube.port, 8080);
    assert_string_equal(cfg.kube.pod_name, "codehub-{user}");
    assert_string_equal(cfg.kube.pvc_name, "claim-{user}");
    assert_string_equal(cfg.kube.home_mount_path, "/home/coder");
    assert_string_equal(cfg.kube.storage_capacity, "10Gi");
    assert_int_equal(cfg.kube.storage_access_modes.n, 1);
    assert_string_equal(cfg.kube.storage_access_modes.items[0], "ReadWriteOnce");
    assert_string_equal(cfg.kube.volumes, "[]");
    assert_string_equal(cfg.kube.node_selector, "{}");
    assert_string_equal(cfg.kube.profiles, "{}");
    assert_false(cfg.kube.automount_service_account_token);

    /* A file: YAML mappings and lists become JSON with YAML's types. */
    assert_int_equal(load_text(&cfg, kube_file, &errors, NULL), 0);
    assert_int_equal(config_finish(&cfg, &errors), 0);
    assert_null(errors.data);
    assert_string_equal(cfg.spawn.spawner, "kubernetes");
    assert_string_equal(cfg.kube.namespace, "team-a");
    assert_int_equal(cfg.kube.uid, 1000);
    assert_int_equal(cfg.kube.fs_gid, 0);
    assert_true(cfg.kube.automount_service_account_token);
    assert_string_equal(cfg.kube.volumes, "[{\"name\":\"docker\",\"hostPath\":{\"path\":"
                                          "\"/var/run/docker.sock\",\"type\":\"Socket\"}}]");
    assert_string_equal(cfg.kube.volume_mounts, "[{\"name\":\"docker\",\"mountPath\":"
                                                "\"/var/run/docker.sock\",\"readOnly\":true}]");
    assert_string_equal(cfg.kube.node_selector,
                        "{\"disktype\":\"ssd\",\"example.com/pool\":\"42\"}");
    assert_string_equal(cfg.kube.tolerations,
                        "[{\"key\":\"gpu\",\"operator\":\"Exists\","
                        "\"effect\":\"NoSchedule\",\"tolerationSeconds\":300}]");
    assert_string_equal(cfg.kube.annotations, "{\"note\":\"a: b # c\"}");
    assert_non_null(strstr(cfg.kube.profiles, "\"gpu\":{\"display_name\":\"GPU box\""));
    assert_non_null(strstr(cfg.kube.profiles, "\"uid\":0"));
    check_round_trip(&cfg);
    struct buf dump = BUF_INIT;
    config_dump(&cfg, &dump);
    assert_non_null(strstr(dump.data, "\nkube:\n"));
    assert_non_null(strstr(dump.data, "  node_selector: {\"disktype\":\"ssd\",\"example.com/pool\""
                                      ":\"42\"}\n"));
    buf_free(&dump);

    /* The environment gives JSON text; blank restores the default. */
    char *env[] = {"CODEHUB_KUBE_LABELS={\"team\": \"b\"}", "CODEHUB_KUBE_VOLUMES= ",
                   "CODEHUB_KUBE_STORAGE_ACCESS_MODES=ReadWriteOnce,ReadOnlyMany",
                   "CODEHUB_K8S_SERVICEACCOUNT_DIR=/var/run/x", NULL};
    assert_int_equal(config_apply_env(&cfg, env, &errors), 0);
    assert_null(errors.data);
    assert_string_equal(cfg.kube.labels, "{\"team\":\"b\"}");
    assert_string_equal(cfg.kube.volumes, "[]");
    assert_int_equal(cfg.kube.storage_access_modes.n, 2);
    config_free(&cfg);
}

static void test_kube_errors(void **state)
{
    static const struct {
        const char *yaml;
        const char *error;
    } cases[] = {
        {"kube:\n  volumes: {name: x}\n", ":2:12: kube.volumes: expected a list of Volume"},
        {"kube:\n  volumes:\n    - name: home\n      emptyDir: {}\n",
         ":3:5: kube.volumes: [0].name: 'home' is the user's volume"},
        {"kube:\n  volumes:\n    - {name: a, emptyDir: {}}\n    - {name: a, emptyDir: {}}\n",
         "kube.volumes: [1].name: 'a' is used twice"},
        {"kube:\n  volumes: [{emptyDir: {}}]\n", "kube.volumes: [0].name: expected a Kubernetes"},
        {"kube:\n  volume_mounts: [{name: a, mountPath: rel}]\n",
         "kube.volume_mounts: [0].mountPath: expected an absolute path"},
        {"kube:\n  node_selector: {a: 1}\n",
         "kube.node_selector: a: expected a string value (quote numbers"},
        {"kube:\n  labels: {a: 'x y'}\n", "kube.labels: a: 'x y' is not a valid label value"},
        {"kube:\n  labels: {'-bad': x}\n", "kube.labels: -bad: not a valid label key"},
        {"kube:\n  tolerations: [gpu]\n", "kube.tolerations: [0]: expected a mapping"},
        {"kube:\n  node_selector:\n    a: b\n    a: c\n",
         ":4:5: kube.node_selector: duplicate key 'a'"},
        {"kube:\n  volumes: [&x {name: a}, *x]\n", "YAML aliases are not supported"},
        {"kube:\n  cpu_limit: 2 cores\n", "kube.cpu_limit: '2 cores' is not a Kubernetes quantity"},
        {"kube:\n  mem_guarantee: 1.5Gx\n", "is not a Kubernetes quantity"},
        {"kube:\n  storage_capacity: ''\n", "kube.storage_capacity: must not be empty"},
        {"kube:\n  pod_name: codehub\n", "kube.pod_name: 'codehub' must contain {user} exactly"},
        {"kube:\n  pod_name: Pod-{user}\n", "only lowercase letters, digits and inner '-'"},
        {"kube:\n  pvc_name: '{user}-{user}'\n", "must contain {user} exactly once"},
        {"kube:\n  namespace: Team_A\n", "kube.namespace: 'Team_A' is not a valid Kubernetes name"},
        {"kube:\n  hub_name: ''\n", "kube.hub_name: '' is not a valid label value"},
        {"kube:\n  home_mount_path: home\n", "kube.home_mount_path: 'home' is not an absolute"},
        {"kube:\n  uid: -2\n", "kube.uid: must be between -1 and 2147483647"},
        {"kube:\n  image_pull_policy: always\n", "expected one of IfNotPresent, Always, Never"},
        {"kube:\n  storage_access_modes: [RWO]\n", "expected one of ReadWriteOnce"},
        {"kube:\n  env: [1X=a]\n", "kube.env: '1X=a' is not NAME=value"},
        {"kube:\n  profiles: [a]\n", "kube.profiles: expected a mapping of profile names"},
        {"kube:\n  profiles:\n    Big: {}\n", "kube.profiles: Big: a profile name is"},
        {"kube:\n  profiles:\n    big: {imag: x}\n", "kube.profiles: big.imag: unknown profile"},
        {"kube:\n  profiles:\n    big: {cpu_limit: lots}\n",
         "kube.profiles: 'lots' is not a Kubernetes quantity"},
        {"kube:\n  profiles:\n    big: {uid: x}\n", "kube.profiles: big.uid: expected an integer"},
        {"kube:\n  profiles:\n    big: {env: [x]}\n", "kube.profiles: 'x' is not NAME=value"},
        {"kube:\n  profiles:\n    big: {image_pull_policy: Sometimes}\n",
         "big.image_pull_policy: expected IfNotPresent, Always or Never"},
        {"kube:\n  profiles:\n    big: {volumes: [{name: home}]}\n",
         "big.volumes: [0].name: 'home' is the user's volume"},
        {"kube:\n  profiles:\n    big: {automount_service_account_token: 1}\n",
         "big.automount_service_account_token: expected true or false"},
        {"kube:\n  profiles:\n    big: x\n", "kube.profiles: big: expected a mapping of settings"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        struct config cfg;
        struct buf errors = BUF_INIT;
        config_init(&cfg);
        char *before = xstrdup(cfg.kube.volumes);
        int r = load_text(&cfg, cases[i].yaml, &errors, NULL);
        if (r != -EINVAL || errors.data == NULL || strstr(errors.data, cases[i].error) == NULL)
            fail_msg("case %zu: got %d, errors:\n%s\nwanted: %s", i, r,
                     errors.data ? errors.data : "(none)", cases[i].error);
        /* A value that fails is not applied. */
        assert_string_equal(cfg.kube.volumes, before);
        free(before);
        buf_free(&errors);
        config_free(&cfg);
    }

    /* Environment: JSON text with its column, and shape errors. */
    struct config cfg;
    struct buf errors = BUF_INIT;
    config_init(&cfg);
    char *env[] = {"CODEHUB_KUBE_NODE_SELECTOR={\"a\": }", "CODEHUB_KUBE_TOLERATIONS={}",
                   "CODEHUB_KUBE_SPAWNER=x", NULL};
    assert_int_equal(config_apply_env(&cfg, env, &errors), -EINVAL);
    assert_non_null(strstr(errors.data, "environment CODEHUB_KUBE_NODE_SELECTOR: invalid JSON at "
                                        "column"));
    assert_non_null(strstr(errors.data, "environment CODEHUB_KUBE_TOLERATIONS: expected a list "
                                        "of Toleration"));
    assert_non_null(strstr(errors.data, "environment CODEHUB_KUBE_SPAWNER: unknown key"));
    assert_string_equal(cfg.kube.node_selector, "{}");
    buf_free(&errors);

    /* Values stored by code bypass the parser; config_finish checks them again. */
    free(cfg.kube.labels);
    cfg.kube.labels = xstrdup("[1]");
    assert_int_equal(config_finish(&cfg, &errors), -EINVAL);
    assert_non_null(strstr(errors.data, "kube.labels: expected a mapping"));
    buf_free(&errors);
    config_free(&cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_defaults),
        cmocka_unit_test(test_full_valid_file),
        cmocka_unit_test(test_load_over_previous_values),
        cmocka_unit_test(test_empty_files_are_defaults),
        cmocka_unit_test(test_unreadable_file),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_structure_errors),
        cmocka_unit_test(test_unknown_names),
        cmocka_unit_test(test_type_errors),
        cmocka_unit_test(test_value_errors),
        cmocka_unit_test(test_bad_value_keeps_old),
        cmocka_unit_test(test_multiple_errors_reported_together),
        cmocka_unit_test(test_null_values),
        cmocka_unit_test(test_bools),
        cmocka_unit_test(test_durations_and_sizes),
        cmocka_unit_test(test_env_overrides),
        cmocka_unit_test(test_env_errors),
        cmocka_unit_test(test_precedence),
        cmocka_unit_test(test_config_set_errors),
        cmocka_unit_test(test_parse_bind),
        cmocka_unit_test(test_public_url),
        cmocka_unit_test(test_trusted_proxies),
        cmocka_unit_test(test_usernames),
        cmocka_unit_test(test_store_url),
        cmocka_unit_test(test_finish_errors),
        cmocka_unit_test(test_finish_subdomains_vs_hub_host),
        cmocka_unit_test(test_finish_null_errors_buffer),
        cmocka_unit_test(test_dump_round_trip),
        cmocka_unit_test(test_kube_keys),
        cmocka_unit_test(test_kube_errors),
        cmocka_unit_test(test_each_key),
        cmocka_unit_test(test_docs_list_every_key),
        cmocka_unit_test(test_kubernetes_doc_lists_every_kube_key),
        cmocka_unit_test(test_docs_examples_are_valid),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
