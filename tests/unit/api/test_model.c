/* Unit tests for the REST API's JSON models (src/api/model.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "api/model.h"

#include <stdlib.h>
#include <string.h>

static void assert_json_string(json_t *j, const char *expected)
{
    assert_non_null(j);
    assert_true(json_is_string(j));
    assert_string_equal(json_string_value(j), expected);
}

static void assert_one_string_list(json_t *j, const char *only)
{
    assert_true(json_is_array(j));
    assert_int_equal(json_array_size(j), 1);
    assert_json_string(json_array_get(j, 0), only);
}

static void test_time(void **state)
{
    (void)state;
    json_t *j = api_model_time(0);
    assert_true(json_is_null(j));
    json_decref(j);
    j = api_model_time(-1);
    assert_true(json_is_null(j));
    json_decref(j);
    j = api_model_time(1796040000000LL);
    assert_json_string(j, "2026-11-30T12:00:00.000Z");
    json_decref(j);
    j = api_model_time(1700000000123LL);
    assert_json_string(j, "2023-11-14T22:13:20.123Z");
    json_decref(j);
}

static void test_text(void **state)
{
    (void)state;
    json_t *j = api_model_text(NULL);
    assert_json_string(j, "");
    json_decref(j);
    j = api_model_text("\xc3\xa9t\xc3\xa9");
    assert_json_string(j, "\xc3\xa9t\xc3\xa9");
    json_decref(j);
    /* Invalid UTF-8 is kept, made printable, rather than dropped. */
    j = api_model_text("\xff\xfe"
                       "ab\x01");
    assert_json_string(j, "??ab?");
    json_decref(j);
}

static void test_user_plain(void **state)
{
    (void)state;
    struct store_user u = {.id = 7,
                           .name = "ann",
                           .admin = false,
                           .created_ms = 1796040000000LL,
                           .last_activity_ms = 0};
    json_t *m = api_model_user(&u, NULL);
    assert_json_string(json_object_get(m, "kind"), "user");
    assert_json_string(json_object_get(m, "name"), "ann");
    assert_true(json_is_false(json_object_get(m, "admin")));
    assert_one_string_list(json_object_get(m, "roles"), "user");
    assert_true(json_is_array(json_object_get(m, "groups")));
    assert_int_equal(json_array_size(json_object_get(m, "groups")), 0);
    assert_json_string(json_object_get(m, "created"), "2026-11-30T12:00:00.000Z");
    assert_true(json_is_null(json_object_get(m, "last_activity")));
    assert_true(json_is_null(json_object_get(m, "server")));
    assert_true(json_is_null(json_object_get(m, "pending")));
    assert_true(json_is_object(json_object_get(m, "servers")));
    assert_int_equal(json_object_size(json_object_get(m, "servers")), 0);
    /* Exactly JupyterHub's fields, nothing from the store that is not meant to leave it. */
    assert_int_equal(json_object_size(m), 10);
    assert_null(json_object_get(m, "password_hash"));
    assert_null(json_object_get(m, "id"));
    json_decref(m);
}

static void test_user_admin_with_activity(void **state)
{
    (void)state;
    struct store_user u = {.id = 1,
                           .name = "root",
                           .password_hash = "$argon2id$secret",
                           .admin = true,
                           .created_ms = 1700000000123LL,
                           .last_activity_ms = 1796040000000LL};
    json_t *m = api_model_user(&u, NULL);
    assert_true(json_is_true(json_object_get(m, "admin")));
    assert_one_string_list(json_object_get(m, "roles"), "admin");
    assert_json_string(json_object_get(m, "last_activity"), "2026-11-30T12:00:00.000Z");
    char *text = json_dumps(m, 0);
    assert_null(strstr(text, "argon2id"));
    free(text);
    json_decref(m);
}

static void check_server_state(const char *state, const char *server, const char *pending)
{
    struct store_user u = {.id = 3, .name = "bob.x", .created_ms = 1};
    struct store_server s = {.user_id = 3, .state = (char *)state, .url = "unix:/tmp/s"};
    json_t *m = api_model_user(&u, &s);
    json_t *sv = json_object_get(m, "server");
    json_t *pd = json_object_get(m, "pending");
    if (server == NULL)
        assert_true(json_is_null(sv));
    else
        assert_json_string(sv, server);
    if (pending == NULL)
        assert_true(json_is_null(pd));
    else
        assert_json_string(pd, pending);
    /* The upstream address is the proxy's business, never the API's. */
    char *text = json_dumps(m, 0);
    assert_null(strstr(text, "unix:"));
    free(text);
    json_decref(m);
}

static void test_user_server_states(void **state)
{
    (void)state;
    check_server_state("running", "/user/bob.x/", NULL);
    check_server_state("starting", NULL, "spawn");
    check_server_state("stopping", NULL, "stop");
    check_server_state("stopped", NULL, NULL);
    check_server_state("failed", NULL, NULL);
}

static void test_token(void **state)
{
    (void)state;
    struct store_token t = {.id = 42,
                            .hash = "deadbeef",
                            .prefix = "chb_Ab12",
                            .user_id = 3,
                            .user_name = "joined",
                            .scope = STORE_SCOPE_ADMIN,
                            .note = "ci deploys",
                            .created_ms = 1700000000123LL,
                            .expires_ms = 1796040000000LL,
                            .last_used_ms = 0};
    json_t *m = api_model_token(&t, "ann");
    assert_json_string(json_object_get(m, "kind"), "api_token");
    assert_json_string(json_object_get(m, "id"), "42");
    assert_json_string(json_object_get(m, "user"), "ann");
    assert_json_string(json_object_get(m, "prefix"), "chb_Ab12");
    assert_json_string(json_object_get(m, "note"), "ci deploys");
    assert_one_string_list(json_object_get(m, "scopes"), "admin");
    assert_json_string(json_object_get(m, "created"), "2023-11-14T22:13:20.123Z");
    assert_json_string(json_object_get(m, "expires_at"), "2026-11-30T12:00:00.000Z");
    assert_true(json_is_null(json_object_get(m, "last_activity")));
    assert_int_equal(json_object_size(m), 9);
    char *text = json_dumps(m, 0);
    assert_null(strstr(text, "deadbeef"));
    free(text);
    json_decref(m);

    /* Defaults: the joined owner name, a NULL note, never expires, user scope. */
    struct store_token t2 = {.id = 9000000000LL,
                             .prefix = "chb_zz",
                             .user_name = "joined",
                             .scope = STORE_SCOPE_USER,
                             .created_ms = 5,
                             .last_used_ms = 1796040000000LL};
    m = api_model_token(&t2, NULL);
    assert_json_string(json_object_get(m, "id"), "9000000000");
    assert_json_string(json_object_get(m, "user"), "joined");
    assert_json_string(json_object_get(m, "note"), "");
    assert_one_string_list(json_object_get(m, "scopes"), "user");
    assert_true(json_is_null(json_object_get(m, "expires_at")));
    assert_json_string(json_object_get(m, "last_activity"), "2026-11-30T12:00:00.000Z");
    json_decref(m);
}

static json_t *page_of(size_t n_items, uint64_t offset, uint64_t limit, uint64_t total)
{
    json_t *items = json_array();
    for (size_t i = 0; i < n_items; i++)
        json_array_append_new(items, json_integer((json_int_t)i));
    return api_model_page(items, offset, limit, total, "/hub/api/users");
}

static void test_page_with_next(void **state)
{
    (void)state;
    json_t *p = page_of(2, 0, 2, 5);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 2);
    json_t *pg = json_object_get(p, "_pagination");
    assert_int_equal(json_integer_value(json_object_get(pg, "offset")), 0);
    assert_int_equal(json_integer_value(json_object_get(pg, "limit")), 2);
    assert_int_equal(json_integer_value(json_object_get(pg, "total")), 5);
    json_t *next = json_object_get(pg, "next");
    assert_true(json_is_object(next));
    assert_int_equal(json_integer_value(json_object_get(next, "offset")), 2);
    assert_int_equal(json_integer_value(json_object_get(next, "limit")), 2);
    assert_json_string(json_object_get(next, "url"), "/hub/api/users?offset=2&limit=2");
    assert_int_equal(json_object_size(p), 2);
    json_decref(p);

    p = page_of(2, 2, 2, 5);
    next = json_object_get(json_object_get(p, "_pagination"), "next");
    assert_json_string(json_object_get(next, "url"), "/hub/api/users?offset=4&limit=2");
    json_decref(p);
}

static void test_page_last(void **state)
{
    (void)state;
    /* Exactly filled last page. */
    json_t *p = page_of(2, 3, 2, 5);
    assert_true(json_is_null(json_object_get(json_object_get(p, "_pagination"), "next")));
    json_decref(p);
    /* Short last page. */
    p = page_of(1, 4, 2, 5);
    assert_true(json_is_null(json_object_get(json_object_get(p, "_pagination"), "next")));
    json_decref(p);
    /* Past the end. */
    p = page_of(0, 10, 200, 5);
    json_t *pg = json_object_get(p, "_pagination");
    assert_true(json_is_null(json_object_get(pg, "next")));
    assert_int_equal(json_integer_value(json_object_get(pg, "offset")), 10);
    assert_int_equal(json_array_size(json_object_get(p, "items")), 0);
    json_decref(p);
    /* Empty store. */
    p = page_of(0, 0, 200, 0);
    assert_true(json_is_null(json_object_get(json_object_get(p, "_pagination"), "next")));
    json_decref(p);
}

static void test_body_ok(void **state)
{
    (void)state;
    char err[256] = "unchanged";
    const char text[] = "{\"usernames\": [\"a\", \"b\"], \"admin\": true}";
    json_t *j = api_body_parse(text, strlen(text), err, sizeof err);
    assert_non_null(j);
    assert_true(json_is_true(json_object_get(j, "admin")));
    assert_int_equal(json_array_size(json_object_get(j, "usernames")), 2);
    json_decref(j);
    /* The length bounds the input: no NUL terminator needed, trailing bytes not read. */
    const char longer[] = "{}XXXX";
    j = api_body_parse(longer, 2, err, sizeof err);
    assert_non_null(j);
    assert_int_equal(json_object_size(j), 0);
    json_decref(j);
}

static void test_body_syntax_error_position(void **state)
{
    (void)state;
    char err[256];
    const char text[] = "{\n  \"a\": 1,\n  \"b\": }";
    assert_null(api_body_parse(text, strlen(text), err, sizeof err));
    assert_string_equal(err, "invalid JSON at line 3 column 8: unexpected token near '}'");

    /* Columns count characters, not bytes. */
    const char wide[] = "{\"\xc3\xa9\xc3\xa9\": }";
    assert_null(api_body_parse(wide, strlen(wide), err, sizeof err));
    assert_string_equal(err, "invalid JSON at line 1 column 8: unexpected token near '}'");
}

static void test_body_rejects(void **state)
{
    (void)state;
    char err[256];
    const char dup[] = "{\"admin\": false, \"admin\": true}";
    assert_null(api_body_parse(dup, strlen(dup), err, sizeof err));
    assert_string_equal(err, "invalid JSON at line 1 column 24: duplicate object key near "
                             "'\"admin\"'");

    const char trailing[] = "{\"a\": 1} x";
    assert_null(api_body_parse(trailing, strlen(trailing), err, sizeof err));
    assert_non_null(strstr(err, "line 1 column 10"));
    assert_non_null(strstr(err, "end of file expected"));

    const char nul[] = "{\"password\": \"ab\\u0000cd\"}";
    assert_null(api_body_parse(nul, strlen(nul), err, sizeof err));
    assert_true(strncmp(err, "invalid JSON at line 1 column ", 30) == 0);

    assert_null(api_body_parse(NULL, 0, err, sizeof err));
    assert_true(strncmp(err, "invalid JSON at line 1 column 0: ", 33) == 0);

    const char arr[] = "[1, 2]";
    assert_null(api_body_parse(arr, strlen(arr), err, sizeof err));
    assert_string_equal(err, "the request body must be a JSON object");

    const char str[] = "\"x\"";
    assert_null(api_body_parse(str, strlen(str), err, sizeof err));
    assert_true(strncmp(err, "invalid JSON at line 1 column", 29) == 0);
}

static void assert_printable(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p != '\0'; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
}

static void test_body_error_is_printable(void **state)
{
    (void)state;
    char err[256];
    /* Invalid UTF-8 and control bytes from the client never reach the error message raw. */
    const char bad[] = "{\"a\": \"\xff\xfe\"}";
    assert_null(api_body_parse(bad, strlen(bad), err, sizeof err));
    assert_printable(err);
    const char ctl[] = "{\"a\": tru\x01}";
    assert_null(api_body_parse(ctl, strlen(ctl), err, sizeof err));
    assert_printable(err);
    /* A small buffer is cut, still terminated. */
    char tiny[12];
    assert_null(api_body_parse(bad, strlen(bad), tiny, sizeof tiny));
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

static void test_sanitize(void **state)
{
    (void)state;
    char out[8];
    api_text_sanitize("abc", out, sizeof out);
    assert_string_equal(out, "abc");
    api_text_sanitize(NULL, out, sizeof out);
    assert_string_equal(out, "");
    api_text_sanitize("a\nb\x7f\xc3\xa9", out, sizeof out);
    assert_string_equal(out, "a?b???");
    /* Exactly fits: 7 bytes. */
    api_text_sanitize("abcdefg", out, sizeof out);
    assert_string_equal(out, "abcdefg");
    /* One too many: cut with an ellipsis, still 7 bytes. */
    api_text_sanitize("abcdefgh", out, sizeof out);
    assert_string_equal(out, "abcd...");
}

static void test_chars(void **state)
{
    (void)state;
    assert_int_equal(api_text_chars(""), 0);
    assert_int_equal(api_text_chars("abc"), 3);
    assert_int_equal(api_text_chars("\xc3\xa9t\xc3\xa9"), 3);
    assert_int_equal(api_text_chars("\xf0\x9f\x98\x80!"), 2);
}

static void test_json_helpers(void **state)
{
    (void)state;
    json_t *o = json_object();
    api_json_set(o, "k", json_string("v"));
    api_json_set(o, "k", json_integer(2)); /* replaces */
    assert_int_equal(json_integer_value(json_object_get(o, "k")), 2);
    json_t *a = json_array();
    api_json_append(a, json_true());
    api_json_set(o, "a", a);
    char *text = json_dumps(o, JSON_COMPACT);
    assert_string_equal(text, "{\"k\":2,\"a\":[true]}");
    free(text);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_time),
        cmocka_unit_test(test_text),
        cmocka_unit_test(test_user_plain),
        cmocka_unit_test(test_user_admin_with_activity),
        cmocka_unit_test(test_user_server_states),
        cmocka_unit_test(test_token),
        cmocka_unit_test(test_page_with_next),
        cmocka_unit_test(test_page_last),
        cmocka_unit_test(test_body_ok),
        cmocka_unit_test(test_body_syntax_error_position),
        cmocka_unit_test(test_body_rejects),
        cmocka_unit_test(test_body_error_is_printable),
        cmocka_unit_test(test_sanitize),
        cmocka_unit_test(test_chars),
        cmocka_unit_test(test_json_helpers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
