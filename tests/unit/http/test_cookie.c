/* Tests for src/http/cookie.c: reading, stripping and formatting cookies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "http/cookie.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char *get(const char *header, const char *name, int *rc)
{
    char *v = (char *)1;
    *rc = http_cookie_get(header, strlen(header), name, &v);
    if (*rc != 0)
        assert_null(v);
    return v;
}

static void test_get(void **state)
{
    int rc;
    const char *h = "a=1; codehub-session=tok; b=\"quoted\";c=3 ;  d = 4 ;e";
    char *v = get(h, "codehub-session", &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(v, "tok");
    free(v);
    v = get(h, "b", &rc);
    assert_string_equal(v, "quoted");
    free(v);
    v = get(h, "c", &rc);
    assert_string_equal(v, "3");
    free(v);
    v = get(h, "d", &rc);
    assert_string_equal(v, "4");
    free(v);
    get(h, "e", &rc); /* no '=': a value without a name */
    assert_int_equal(rc, -ENOENT);
    get(h, "A", &rc); /* names are case-sensitive */
    assert_int_equal(rc, -ENOENT);
    get(h, "codehub", &rc);
    assert_int_equal(rc, -ENOENT);
    get("", "a", &rc);
    assert_int_equal(rc, -ENOENT);
    v = get("a=", "a", &rc);
    assert_int_equal(rc, 0);
    assert_string_equal(v, "");
    free(v);
    v = get("a=\"\"", "a", &rc);
    assert_string_equal(v, "");
    free(v);
    v = get("a=\"", "a", &rc);
    assert_string_equal(v, "\"");
    free(v);
    v = get("a=x=y", "a", &rc);
    assert_string_equal(v, "x=y");
    free(v);
}

static void test_get_first_and_count(void **state)
{
    int rc;
    const char *h = "sid=first; other=1; sid=second";
    char *v = get(h, "sid", &rc);
    assert_string_equal(v, "first");
    free(v);
    assert_int_equal(http_cookie_count(h, strlen(h), "sid"), 2);
    assert_int_equal(http_cookie_count(h, strlen(h), "other"), 1);
    assert_int_equal(http_cookie_count(h, strlen(h), "none"), 0);
    assert_int_equal(http_cookie_count(";;; ;", 5, "sid"), 0);
    /* Only len bytes are read. */
    assert_int_equal(http_cookie_count(h, 9, "sid"), 1);

    /* Each of several cookies of one name, in order; none past the last. */
    const char *many = "sid=a; sidx=no; \"q\"=1; sid=\"b\"; bad\x01=x; sid=c";
    const char *want[] = {"a", "b", "c"};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(http_cookie_get_nth(many, strlen(many), "sid", i, &v), 0);
        assert_string_equal(v, want[i]);
        free(v);
    }
    assert_int_equal(http_cookie_get_nth(many, strlen(many), "sid", 3, &v), -ENOENT);
    assert_null(v);
    assert_int_equal(http_cookie_count(many, strlen(many), "sid"), 3);
}

static bool drop_codehub(const char *name, size_t len, void *data)
{
    int *calls = data;
    if (calls)
        (*calls)++;
    return len >= 7 && memcmp(name, "codehub", 7) == 0;
}

static char *strip(const char *h)
{
    return http_cookie_strip(h, strlen(h), drop_codehub, NULL);
}

static void test_strip(void **state)
{
    char *s = strip("a=1; codehub-session=x; b=2");
    assert_string_equal(s, "a=1; b=2");
    free(s);
    s = strip("codehub-session=x");
    assert_null(s);
    s = strip("codehub-session=x; codehub-xsrf=y");
    assert_null(s);
    s = strip("");
    assert_null(s);
    s = strip(" ; ;; ");
    assert_null(s);
    /* Odd spacing, empty pairs and pairs without '=' are tidied, not lost. */
    s = strip(" a=1 ;;\tb = 2;flag ;  ; codehub=z ");
    assert_string_equal(s, "a=1; b = 2; flag");
    free(s);
    int calls = 0;
    s = http_cookie_strip("a=1", 3, drop_codehub, &calls);
    assert_string_equal(s, "a=1");
    assert_true(calls >= 1);
    free(s);
}

static void test_strip_evasions(void **state)
{
    /* However codehub's cookie is written, it does not survive. */
    const char *evasions[] = {
        "codehub-session=x",     "  codehub-session  =  x  ", "\tcodehub-session\t=x",
        "codehub-session",       "codehub-session=",          "codehub-session=\"quoted value\"",
        "\"codehub-session\"=x", "codehub%2Dsession=x",       "%63odehub-session=x",
        "%2563odehub-session=x", "a=1, codehub-session=x",    "a=1,codehub-session",
        "\"%63odehub\"=x",
    };
    for (size_t i = 0; i < sizeof(evasions) / sizeof(*evasions); i++) {
        char *s = strip(evasions[i]);
        if (s != NULL)
            fail_msg("\"%s\" survived as \"%s\"", evasions[i], s);
        char *h = xasprintf("a=1; %s; b=2", evasions[i]);
        s = strip(h);
        if (s == NULL || strcmp(s, "a=1; b=2") != 0)
            fail_msg("\"%s\" gave \"%s\"", h, s ? s : "(null)");
        free(s);
        free(h);
    }
    /* A quoted value holding ';' splits the pair (cookies have no quoting of ';'), and the
     * part after it is a pair of its own. */
    char *s = strip("a=\"x; codehub=1\"; b=2");
    assert_string_equal(s, "a=\"x; b=2");
    free(s);
    /* Deeply wrapped names are dropped rather than trusted. */
    s = strip("%25252525252563odehub=x; ok=1");
    assert_string_equal(s, "ok=1");
    free(s);
    /* Names that merely contain the word are the callback's business, not ours. */
    s = strip("my-codehub=1");
    assert_string_equal(s, "my-codehub=1");
    free(s);
}

static void test_format(void **state)
{
    struct http_cookie_attrs a = {"/", 3600, true, true, "Lax", NULL};
    char *s = http_cookie_format("__Host-codehub-session", "abc.DEF_123", &a);
    assert_string_equal(s, "__Host-codehub-session=abc.DEF_123; Path=/; Max-Age=3600; Secure; "
                           "HttpOnly; SameSite=Lax");
    free(s);

    struct http_cookie_attrs del = {"/hub/", 0, true, false, "Strict", NULL};
    s = http_cookie_format("codehub-session", "", &del);
    assert_string_equal(s, "codehub-session=; Path=/hub/; Max-Age=0; "
                           "Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Strict");
    free(s);

    struct http_cookie_attrs sess = {NULL, -1, false, false, NULL, "example.com"};
    s = http_cookie_format("a", "b", &sess);
    assert_string_equal(s, "a=b; Domain=example.com");
    free(s);

    s = http_cookie_format("a", "b", NULL);
    assert_string_equal(s, "a=b");
    free(s);

    struct http_cookie_attrs none = {"/", -5, false, true, "None", NULL};
    s = http_cookie_format("x", "!#$%&'()*+-./09:<=>?@AZ[]^_`az{|}~", &none);
    assert_string_equal(s, "x=!#$%&'()*+-./09:<=>?@AZ[]^_`az{|}~; Path=/; Secure; SameSite=None");
    free(s);
}

static void test_format_rejects(void **state)
{
    struct http_cookie_attrs a = {"/", -1, true, false, "Lax", NULL};
    assert_null(http_cookie_format("", "v", &a));
    assert_null(http_cookie_format(NULL, "v", &a));
    assert_null(http_cookie_format("a", NULL, &a));
    assert_null(http_cookie_format("a b", "v", &a));
    assert_null(http_cookie_format("a=b", "v", &a));
    assert_null(http_cookie_format("a;b", "v", &a));
    assert_null(http_cookie_format("a(b)", "v", &a));
    assert_null(http_cookie_format("a\r\nSet-Cookie: x", "v", &a));
    assert_null(http_cookie_format("a", "v w", &a));
    assert_null(http_cookie_format("a", "v;w", &a));
    assert_null(http_cookie_format("a", "v,w", &a));
    assert_null(http_cookie_format("a", "\"v\"", &a));
    assert_null(http_cookie_format("a", "v\\w", &a));
    assert_null(http_cookie_format("a", "v\r\nX: y", &a));
    assert_null(http_cookie_format("a", "\xc3\xa9", &a));

    struct http_cookie_attrs bad_path = {"/a;Domain=evil", -1, false, false, NULL, NULL};
    assert_null(http_cookie_format("a", "v", &bad_path));
    struct http_cookie_attrs ctl_path = {"/a\n", -1, false, false, NULL, NULL};
    assert_null(http_cookie_format("a", "v", &ctl_path));
    struct http_cookie_attrs bad_domain = {NULL, -1, false, false, NULL, "a.com; Secure"};
    assert_null(http_cookie_format("a", "v", &bad_domain));
    struct http_cookie_attrs empty_domain = {NULL, -1, false, false, NULL, ""};
    assert_null(http_cookie_format("a", "v", &empty_domain));
    struct http_cookie_attrs bad_site = {NULL, -1, false, true, "lax", NULL};
    assert_null(http_cookie_format("a", "v", &bad_site));
    struct http_cookie_attrs none_insecure = {NULL, -1, false, false, "None", NULL};
    assert_null(http_cookie_format("a", "v", &none_insecure));

    /* Cookie prefixes: the browser would refuse these. */
    struct http_cookie_attrs insecure = {"/", -1, true, false, "Lax", NULL};
    assert_null(http_cookie_format("__Secure-a", "v", &insecure));
    assert_null(http_cookie_format("__Host-a", "v", &insecure));
    struct http_cookie_attrs host_path = {"/hub", -1, true, true, "Lax", NULL};
    assert_null(http_cookie_format("__Host-a", "v", &host_path));
    struct http_cookie_attrs host_domain = {"/", -1, true, true, "Lax", "example.com"};
    assert_null(http_cookie_format("__host-a", "v", &host_domain));
    struct http_cookie_attrs host_nopath = {NULL, -1, true, true, "Lax", NULL};
    assert_null(http_cookie_format("__Host-a", "v", &host_nopath));
    char *s = http_cookie_format("__Secure-a", "v", &host_domain);
    assert_string_equal(s,
                        "__Secure-a=v; Path=/; Domain=example.com; Secure; HttpOnly; SameSite=Lax");
    free(s);
}

/* What http_cookie_format writes, http_cookie_get reads back. */
static void test_roundtrip(void **state)
{
    struct http_cookie_attrs a = {"/", 60, true, true, "Lax", NULL};
    char *set = http_cookie_format("sid", "tok-123_ABC", &a);
    assert_non_null(set);
    const char *semi = strchr(set, ';');
    char *v;
    assert_int_equal(http_cookie_get(set, (size_t)(semi - set), "sid", &v), 0);
    assert_string_equal(v, "tok-123_ABC");
    free(v);
    free(set);
}

/* Found by fuzz_cookie: a pair with a NUL was kept and cut the result string short. */
static void test_control_bytes(void **state)
{
    static const char h[] = "\0\0a=1; b=2; c=\x01; d=\x7f; e=\r\n; f=\t1";
    char *s = http_cookie_strip(h, sizeof(h) - 1, drop_codehub, NULL);
    assert_string_equal(s, "b=2; f=\t1");
    free(s);
    static const char only[] = "a=\0";
    assert_null(http_cookie_strip(only, sizeof(only) - 1, drop_codehub, NULL));
    char *v;
    assert_int_equal(http_cookie_get(h, sizeof(h) - 1, "a", &v), -ENOENT);
    assert_int_equal(http_cookie_get(h, sizeof(h) - 1, "c", &v), -ENOENT);
    assert_int_equal(http_cookie_count(h, sizeof(h) - 1, "e"), 0);
    assert_int_equal(http_cookie_get(h, sizeof(h) - 1, "f", &v), 0);
    assert_string_equal(v, "1");
    free(v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),       cmocka_unit_test(test_get_first_and_count),
        cmocka_unit_test(test_strip),     cmocka_unit_test(test_strip_evasions),
        cmocka_unit_test(test_format),    cmocka_unit_test(test_format_rejects),
        cmocka_unit_test(test_roundtrip), cmocka_unit_test(test_control_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
