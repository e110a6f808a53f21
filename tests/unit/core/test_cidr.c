#include "core/cidr.h"

#include <errno.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

static void test_parse(void **state)
{
    struct cidr c;
    assert_int_equal(cidr_parse("10.0.0.0/8", &c), 0);
    assert_int_equal(c.prefix, 8);
    assert_int_equal(cidr_parse("127.0.0.1", &c), 0);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(cidr_parse("fd00::/8", &c), 0);
    assert_int_equal(cidr_parse("::1", &c), 0);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(cidr_parse("10.0.0.0/33", &c), -EINVAL);
    assert_int_equal(cidr_parse("10.0.0.0/", &c), -EINVAL);
    assert_int_equal(cidr_parse("10.0.0.0/-1", &c), -EINVAL);
    assert_int_equal(cidr_parse("example.com", &c), -EINVAL);
    assert_int_equal(cidr_parse("", &c), -EINVAL);
    assert_int_equal(cidr_parse("/8", &c), -EINVAL);
}

static void test_match(void **state)
{
    struct cidr r[3];
    assert_int_equal(cidr_parse("10.1.0.0/16", &r[0]), 0);
    assert_int_equal(cidr_parse("127.0.0.1", &r[1]), 0);
    assert_int_equal(cidr_parse("fd00:1::/32", &r[2]), 0);
    assert_true(cidr_match_any(r, 3, "10.1.2.3"));
    assert_false(cidr_match_any(r, 3, "10.2.0.1"));
    assert_true(cidr_match_any(r, 3, "127.0.0.1"));
    assert_false(cidr_match_any(r, 3, "127.0.0.2"));
    assert_true(cidr_match_any(r, 3, "::ffff:127.0.0.1"));
    assert_true(cidr_match_any(r, 3, "fd00:1:ffff::1"));
    assert_false(cidr_match_any(r, 3, "fd00:2::1"));
    assert_false(cidr_match_any(r, 3, "not an ip"));
    assert_false(cidr_match_any(r, 0, "10.1.2.3"));
}

static void test_odd_prefix(void **state)
{
    struct cidr r;
    assert_int_equal(cidr_parse("192.168.1.128/25", &r), 0);
    assert_true(cidr_match_any(&r, 1, "192.168.1.200"));
    assert_false(cidr_match_any(&r, 1, "192.168.1.127"));
    assert_int_equal(cidr_parse("0.0.0.0/0", &r), 0);
    assert_true(cidr_match_any(&r, 1, "8.8.8.8"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_match),
        cmocka_unit_test(test_odd_prefix),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
