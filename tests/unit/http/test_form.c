/* Tests for src/http/form.c: x-www-form-urlencoded bodies and query strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/buf.h"
#include "http/form.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static char *get(const char *body, const char *name)
{
    return http_form_get(body, strlen(body), name);
}

static void test_get(void **state)
{
    const char *body = "username=ann&password=p%40ss+word%21&_xsrf=abc&username=bob";
    char *v = get(body, "username");
    assert_string_equal(v, "ann"); /* the first one wins */
    free(v);
    v = get(body, "password");
    assert_string_equal(v, "p@ss word!");
    free(v);
    v = get(body, "_xsrf");
    assert_string_equal(v, "abc");
    free(v);
    assert_null(get(body, "missing"));
    assert_null(get(body, "user"));
    assert_null(get("", "a"));
}

static void test_get_odd_fields(void **state)
{
    char *v = get("&&flag&a=&=x&b=1=2&", "flag");
    assert_string_equal(v, "");
    free(v);
    v = get("&&flag&a=&=x&b=1=2&", "a");
    assert_string_equal(v, "");
    free(v);
    v = get("&&flag&a=&=x&b=1=2&", "");
    assert_string_equal(v, "x");
    free(v);
    v = get("&&flag&a=&=x&b=1=2&", "b");
    assert_string_equal(v, "1=2");
    free(v);
    /* Names are compared after decoding. */
    v = get("us%65r+name=ann", "user name");
    assert_string_equal(v, "ann");
    free(v);
    /* Only len bytes are read. */
    v = http_form_get("a=1&b=2", 3, "a");
    assert_string_equal(v, "1");
    free(v);
    assert_null(http_form_get("a=1&b=2", 3, "b"));
}

static void test_get_malformed(void **state)
{
    assert_null(get("a=%zz", "a"));
    assert_null(get("a=1%", "a"));
    assert_null(get("a=%00", "a"));
    /* A malformed field anywhere makes the whole body malformed. */
    assert_null(get("a=1&b=%4", "a"));
    assert_null(get("%=1&a=1", "a"));
}

static void test_parse(void **state)
{
    struct http_form f;
    const char *body = "a=1&b=two+words&a=3&empty=&novalue&%C3%A9=%E2%82%AC";
    assert_int_equal(http_form_parse(body, strlen(body), &f), 0);
    assert_int_equal(f.count, 6);
    assert_string_equal(f.names[0], "a");
    assert_string_equal(f.values[0], "1");
    assert_string_equal(f.values[1], "two words");
    assert_string_equal(f.names[2], "a");
    assert_string_equal(f.values[2], "3");
    assert_string_equal(f.values[3], "");
    assert_string_equal(f.names[4], "novalue");
    assert_string_equal(f.values[4], "");
    assert_string_equal(f.names[5], "\xc3\xa9");
    assert_string_equal(f.values[5], "\xe2\x82\xac");
    http_form_free(&f);
    assert_int_equal(f.count, 0);
    assert_null(f.names);
    http_form_free(&f); /* twice is harmless */

    assert_int_equal(http_form_parse("", 0, &f), 0);
    assert_int_equal(f.count, 0);
    http_form_free(&f);
    assert_int_equal(http_form_parse("&&&", 3, &f), 0);
    assert_int_equal(f.count, 0);
    http_form_free(&f);
}

static void test_parse_errors(void **state)
{
    struct http_form f;
    assert_int_equal(http_form_parse("a=1&b=%x1", 9, &f), -EINVAL);
    assert_int_equal(f.count, 0);
    assert_null(f.names);
    assert_int_equal(http_form_parse("a=%00", 5, &f), -EINVAL);

    struct buf b = BUF_INIT;
    for (int i = 0; i < HTTP_FORM_MAX_FIELDS; i++)
        buf_appendf(&b, "f%d=%d&", i, i);
    assert_int_equal(http_form_parse(b.data, b.len, &f), 0);
    assert_int_equal(f.count, HTTP_FORM_MAX_FIELDS);
    assert_string_equal(f.names[255], "f255");
    http_form_free(&f);
    buf_append_str(&b, "one=more");
    assert_int_equal(http_form_parse(b.data, b.len, &f), -E2BIG);
    assert_int_equal(f.count, 0);
    assert_null(f.values);
    buf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),           cmocka_unit_test(test_get_odd_fields),
        cmocka_unit_test(test_get_malformed), cmocka_unit_test(test_parse),
        cmocka_unit_test(test_parse_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
