#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/username.h"

#include <errno.h>
#include <string.h>

static const char *rule_msg = "must be 1 to 32 characters: lowercase letters, digits, '.', '_' "
                              "or '-', starting with a letter or digit";

static void expect_ok(const char *name)
{
    const char *why = "untouched";
    assert_int_equal(auth_username_check(name, &why), 0);
    /* A valid name leaves *why alone. */
    assert_string_equal(why, "untouched");
}

static void expect_bad(const char *name, const char *msg)
{
    const char *why = NULL;
    assert_int_equal(auth_username_check(name, &why), -EINVAL);
    assert_non_null(why);
    assert_string_equal(why, msg);
}

static void test_valid_names(void **state)
{
    expect_ok("a");
    expect_ok("0");
    expect_ok("ann");
    expect_ok("ann.lee");
    expect_ok("ann_lee-2");
    expect_ok("9lives");
    expect_ok("a.");
    expect_ok("a-");
    expect_ok("a..__--");
    expect_ok("abcdefghijklmnopqrstuvwxyz012345"); /* exactly 32 */
}

static void test_length_limits(void **state)
{
    char name[40];

    expect_bad("", rule_msg);
    expect_bad(NULL, rule_msg);
    memset(name, 'a', 33);
    name[33] = '\0';
    expect_bad(name, rule_msg);
    name[32] = '\0';
    expect_ok(name);
    /* Too long and upper-case: the length is the problem to report. */
    memset(name, 'A', 33);
    name[33] = '\0';
    expect_bad(name, rule_msg);
}

static void test_first_character(void **state)
{
    expect_bad(".ann", rule_msg);
    expect_bad("_ann", rule_msg);
    expect_bad("-ann", rule_msg);
    expect_bad(".", rule_msg);
}

static void test_bad_characters(void **state)
{
    expect_bad("ann lee", rule_msg);
    expect_bad("ann/lee", rule_msg);
    expect_bad("../etc", rule_msg);
    expect_bad("ann@example.com", rule_msg);
    expect_bad("ann\n", rule_msg);
    expect_bad("ann\t", rule_msg);
    expect_bad("ann%2f", rule_msg);
    expect_bad("ann+lee", rule_msg);
    expect_bad("ann:lee", rule_msg);
    expect_bad("j\xc3\xbcrgen", rule_msg);  /* ü in UTF-8 */
    expect_bad("\xef\xbd\x81nn", rule_msg); /* full-width 'a' */
    expect_bad("ann\xff", rule_msg);
}

static void test_uppercase(void **state)
{
    expect_bad("Ann", "must be lowercase");
    expect_bad("ANN", "must be lowercase");
    expect_bad("ann.Lee", "must be lowercase");
    expect_bad("A", "must be lowercase");
    /* Lowercasing would not make these valid: the general rule is the honest answer. */
    expect_bad("Ann Lee", rule_msg);
    expect_bad("_Ann", rule_msg);
}

static void test_why_may_be_null(void **state)
{
    assert_int_equal(auth_username_check("ann", NULL), 0);
    assert_int_equal(auth_username_check("Ann", NULL), -EINVAL);
    assert_int_equal(auth_username_check("", NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_names),     cmocka_unit_test(test_length_limits),
        cmocka_unit_test(test_first_character), cmocka_unit_test(test_bad_characters),
        cmocka_unit_test(test_uppercase),       cmocka_unit_test(test_why_may_be_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
