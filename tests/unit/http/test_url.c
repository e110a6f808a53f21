/* Tests for src/http/url.c: target splitting, path normalisation, percent-encoding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "http/url.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static void split_ok(const char *target, const char *want_path, const char *want_query)
{
    char *path, *query;
    assert_int_equal(http_target_split(target, strlen(target), &path, &query), 0);
    assert_string_equal(path, want_path);
    if (want_query == NULL)
        assert_null(query);
    else
        assert_string_equal(query, want_query);
    free(path);
    free(query);
}

static void split_bad(const char *target, size_t len)
{
    char *path = (char *)1, *query = (char *)1;
    assert_int_equal(http_target_split(target, len, &path, &query), -EINVAL);
    assert_null(path);
    assert_null(query);
}

static void test_split(void **state)
{
    split_ok("/", "/", NULL);
    split_ok("/user/ann/x", "/user/ann/x", NULL);
    split_ok("/a?b=1&c=2", "/a", "b=1&c=2");
    split_ok("/a?", "/a", "");
    split_ok("/a?x?y", "/a", "x?y");
    split_ok("/%2e%2E/x?q=%41", "/%2e%2E/x", "q=%41");
    /* Only the first len bytes count. */
    char *path, *query;
    assert_int_equal(http_target_split("/abc?def", 3, &path, &query), 0);
    assert_string_equal(path, "/ab");
    assert_null(query);
    free(path);
}

static void test_split_rejects(void **state)
{
    split_bad("", 0);
    split_bad("http://evil/x", 13);
    split_bad("HTTPS://hub/user/bob/", 21);
    split_bad("hub.example:443", 15);
    split_bad("*", 1);
    split_bad("/a#frag", 7);
    split_bad("/a b", 4);
    split_bad("/a\tb", 4);
    split_bad("/a\x7f", 3);
    split_bad("/\xc3\xa9", 3);
    split_bad("/a\0b", 4);
    split_bad("a/b", 3);
}

static void norm_ok(const char *raw, const char *want)
{
    char *out = NULL;
    int rc = http_path_normalize(raw, &out);
    if (rc != 0)
        fail_msg("normalize(\"%s\") failed with %d, wanted \"%s\"", raw, rc, want);
    assert_string_equal(out, want);
    /* Normalising is idempotent. */
    char *again = NULL;
    assert_int_equal(http_path_normalize(out, &again), 0);
    assert_string_equal(again, out);
    free(again);
    free(out);
}

static void norm_bad(const char *raw)
{
    char *out = (char *)1;
    int rc = http_path_normalize(raw, &out);
    if (rc != -EINVAL)
        fail_msg("normalize(\"%s\") gave %d, wanted -EINVAL", raw, rc);
    assert_null(out);
}

static void test_normalize_plain(void **state)
{
    norm_ok("/", "/");
    norm_ok("/user/ann", "/user/ann");
    norm_ok("/user/ann/", "/user/ann/");
    norm_ok("//user///ann//x", "/user/ann/x");
    norm_ok("/user/ann//", "/user/ann/");
    norm_ok("/a:b@c!$&'()*+,;=", "/a:b@c!$&'()*+,;=");
    norm_ok("/..a/...b/a..", "/..a/...b/a..");
    norm_ok("/.hidden/x.", "/.hidden/x.");
}

static void test_normalize_dots(void **state)
{
    norm_ok("/a/./b", "/a/b");
    norm_ok("/a/../b", "/b");
    norm_ok("/a/b/..", "/a/");
    norm_ok("/a/b/.", "/a/b/");
    norm_ok("/..", "/");
    norm_ok("/../../..", "/");
    norm_ok("/../x", "/x");
    norm_ok("/user/ann/../bob/", "/user/bob/");
    norm_ok("/user/ann/../../../../etc/passwd", "/etc/passwd");
    norm_ok("/a/b/c/../../d", "/a/d");
    norm_ok("/./", "/");
    norm_ok("/.", "/");
    norm_ok("/a//..//b", "/b");
}

static void test_normalize_encoded_dots(void **state)
{
    norm_ok("/user/ann/%2e%2e/bob", "/user/bob");
    norm_ok("/user/ann/%2E%2E/bob", "/user/bob");
    norm_ok("/user/ann/.%2e/bob", "/user/bob");
    norm_ok("/user/ann/%2e./bob", "/user/bob");
    norm_ok("/user/ann/%2e/x", "/user/ann/x");
    norm_ok("/%2e%2e/%2e%2e/x", "/x");
    /* Double-encoded dots are not dots: "%252e" is the three characters "%2e". */
    norm_ok("/user/ann/%252e%252e/bob", "/user/ann/%252e%252e/bob");
}

static void test_normalize_escapes(void **state)
{
    /* Unreserved escapes are decoded; the others keep their escape with upper-case hex. */
    norm_ok("/%61%62%7E%2D%5f%30", "/ab~-_0");
    norm_ok("/a%3ab", "/a%3Ab");
    norm_ok("/a%3Fb%23c%25d%20e", "/a%3Fb%23c%25d%20e");
    norm_ok("/caf%c3%a9", "/caf%C3%A9");
    norm_ok("/%75ser/ann", "/user/ann");
}

static void test_normalize_rejects(void **state)
{
    norm_bad("");
    norm_bad("user/ann");
    norm_bad("/user/ann%2F..%2Fbob");
    norm_bad("/user/ann%2f..%2fbob");
    norm_bad("/a%2Fb");
    norm_bad("/a%5Cb");
    norm_bad("/a%5cb");
    norm_bad("/a\\..\\b");
    norm_bad("/a%00b");
    norm_bad("/a%0ab");
    norm_bad("/a%0Db");
    norm_bad("/a%1fb");
    norm_bad("/a%7Fb");
    norm_bad("/a%");
    norm_bad("/a%2");
    norm_bad("/a%zz");
    norm_bad("/a%u002e");
    norm_bad("/a%%32%65");
    norm_bad("/a b");
    norm_bad("/a\tb");
    norm_bad("/a\x01");
    norm_bad("/a\x7f");
    norm_bad("/caf\xc3\xa9");
    norm_bad("/a?b");
    norm_bad("/a#b");
    norm_bad("/user/ann/..;/bob");
    norm_bad("/user/ann/%2e%2e;x/bob");
    norm_bad("/user/ann/.;/x");
}

/* The property the proxy relies on: whatever the spelling, a path that normalises inside
 * /user/ann stays inside, and one that escapes does not look like it stays. */
static bool inside_ann(const char *raw)
{
    char *out;
    if (http_path_normalize(raw, &out) != 0)
        return false;
    bool inside = strcmp(out, "/user/ann") == 0 || strncmp(out, "/user/ann/", 10) == 0;
    free(out);
    return inside;
}

static void test_normalize_prefix_check(void **state)
{
    assert_true(inside_ann("/user/ann"));
    assert_true(inside_ann("/user/ann/"));
    assert_true(inside_ann("/user//ann/x/../y"));
    assert_true(inside_ann("/user/%61nn/x"));
    assert_false(inside_ann("/user/ann/../bob"));
    assert_false(inside_ann("/user/ann/%2e%2e/bob"));
    assert_false(inside_ann("/user/ann/..%2fbob"));
    assert_false(inside_ann("/user/annabel/"));
    assert_false(inside_ann("/user/ann%2f../bob"));
    assert_false(inside_ann("/user/ann\\../bob"));
}

static void test_urlencode(void **state)
{
    struct buf b = BUF_INIT;
    http_urlencode(&b, "/user/ann/?x=1&y=a b~._-\xc3\xa9");
    assert_string_equal(b.data, "%2Fuser%2Fann%2F%3Fx%3D1%26y%3Da%20b~._-%C3%A9");
    buf_reset(&b);
    http_urlencode(&b, "");
    assert_int_equal(b.len, 0);
    buf_free(&b);
}

static void test_urldecode(void **state)
{
    char *s = http_urldecode("a%20b+c%2Bd", 11, false);
    assert_string_equal(s, "a b+c+d");
    free(s);
    s = http_urldecode("a%20b+c%2Bd", 11, true);
    assert_string_equal(s, "a b c+d");
    free(s);
    s = http_urldecode("%C3%a9", 6, false);
    assert_string_equal(s, "\xc3\xa9");
    free(s);
    s = http_urldecode("", 0, false);
    assert_string_equal(s, "");
    free(s);
    /* Only len bytes are read. */
    s = http_urldecode("ab%41", 2, false);
    assert_string_equal(s, "ab");
    free(s);
    assert_null(http_urldecode("%", 1, false));
    assert_null(http_urldecode("%4", 2, false));
    assert_null(http_urldecode("ab%4", 4, false));
    assert_null(http_urldecode("%g1", 3, false));
    assert_null(http_urldecode("a%00b", 5, false));
    assert_null(http_urldecode("a\0b", 3, false));
    /* The escape must be within len even when the bytes after it are valid hex. */
    assert_null(http_urldecode("%41", 2, false));
}

static void test_roundtrip(void **state)
{
    const char *inputs[] = {"next=/user/ann/?a=b&c", "sp ace", "\x01\x7f\xff", "~"};
    for (size_t i = 0; i < sizeof(inputs) / sizeof(*inputs); i++) {
        struct buf b = BUF_INIT;
        http_urlencode(&b, inputs[i]);
        char *back = http_urldecode(b.data ? b.data : "", b.len, true);
        assert_string_equal(back, inputs[i]);
        free(back);
        buf_free(&b);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_split_rejects),
        cmocka_unit_test(test_normalize_plain),
        cmocka_unit_test(test_normalize_dots),
        cmocka_unit_test(test_normalize_encoded_dots),
        cmocka_unit_test(test_normalize_escapes),
        cmocka_unit_test(test_normalize_rejects),
        cmocka_unit_test(test_normalize_prefix_check),
        cmocka_unit_test(test_urlencode),
        cmocka_unit_test(test_urldecode),
        cmocka_unit_test(test_roundtrip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
