#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/csrf.h"
#include "auth/token.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>

static unsigned char key_a[AUTH_SECRET_BYTES];
static unsigned char key_b[AUTH_SECRET_BYTES];

static int group_setup(void **state)
{
    if (sodium_init() < 0)
        return -1;
    for (int i = 0; i < AUTH_SECRET_BYTES; i++) {
        key_a[i] = (unsigned char)i;
        key_b[i] = (unsigned char)(i + 1);
    }
    return 0;
}

static void test_known_value(void **state)
{
    char session[65];
    char out[AUTH_CSRF_LEN];

    /* From an independent implementation: Python's
     * base64.urlsafe_b64encode(blake2b(b"csrf:" + b"a" * 64, digest_size=32,
     * key=bytes(range(32))).digest()) without the padding. */
    memset(session, 'a', 64);
    session[64] = '\0';
    auth_csrf_for_session(key_a, session, out);
    assert_string_equal(out, "oT6vAZ4HqE6Hpmwb9C6f-2rZTbqoM8UPUw4d-5rS8lw");
}

static void test_matches_keyed_generichash(void **state)
{
    char session[AUTH_TOKEN_HASH_HEX];
    unsigned char input[5 + 64];
    unsigned char digest[32];
    char expected[AUTH_CSRF_LEN];
    char out[AUTH_CSRF_LEN];

    auth_token_hash("some session cookie", session);
    memcpy(input, "csrf:", 5);
    memcpy(input + 5, session, 64);
    crypto_generichash(digest, sizeof digest, input, sizeof input, key_a, sizeof key_a);
    sodium_bin2base64(expected, sizeof expected, digest, sizeof digest,
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    auth_csrf_for_session(key_a, session, out);
    assert_string_equal(out, expected);
    assert_int_equal(strlen(out), AUTH_CSRF_LEN - 1);
}

static void test_deterministic_and_distinct(void **state)
{
    char s1[AUTH_TOKEN_HASH_HEX];
    char s2[AUTH_TOKEN_HASH_HEX];
    char a[AUTH_CSRF_LEN];
    char b[AUTH_CSRF_LEN];

    auth_token_hash("session one", s1);
    auth_token_hash("session two", s2);
    auth_csrf_for_session(key_a, s1, a);
    auth_csrf_for_session(key_a, s1, b);
    assert_string_equal(a, b);
    auth_csrf_for_session(key_a, s2, b);
    assert_string_not_equal(a, b);
    auth_csrf_for_session(key_b, s1, b);
    assert_string_not_equal(a, b);
}

static void test_check(void **state)
{
    char s1[AUTH_TOKEN_HASH_HEX];
    char s2[AUTH_TOKEN_HASH_HEX];
    char tok[AUTH_CSRF_LEN];
    char other[AUTH_CSRF_LEN];
    char tampered[AUTH_CSRF_LEN];

    auth_token_hash("session one", s1);
    auth_token_hash("session two", s2);
    auth_csrf_for_session(key_a, s1, tok);
    auth_csrf_for_session(key_a, s2, other);

    assert_true(auth_csrf_check(key_a, s1, tok));
    /* Another session's token, or our token under another key. */
    assert_false(auth_csrf_check(key_a, s1, other));
    assert_false(auth_csrf_check(key_a, s2, tok));
    assert_false(auth_csrf_check(key_b, s1, tok));
    /* Tampered, truncated, extended, empty, missing. */
    memcpy(tampered, tok, sizeof tok);
    tampered[0] = tampered[0] == 'A' ? 'B' : 'A';
    assert_false(auth_csrf_check(key_a, s1, tampered));
    memcpy(tampered, tok, sizeof tok);
    tampered[AUTH_CSRF_LEN - 2] = '\0';
    assert_false(auth_csrf_check(key_a, s1, tampered));
    char extended[AUTH_CSRF_LEN + 1];
    memcpy(extended, tok, AUTH_CSRF_LEN - 1);
    extended[AUTH_CSRF_LEN - 1] = '=';
    extended[AUTH_CSRF_LEN] = '\0';
    assert_false(auth_csrf_check(key_a, s1, extended));
    assert_false(auth_csrf_check(key_a, s1, ""));
    assert_false(auth_csrf_check(key_a, s1, NULL));
    /* The session's own hash is not its CSRF token. */
    assert_false(auth_csrf_check(key_a, s1, s1));
}

static void test_no_session_never_validates(void **state)
{
    char tok[AUTH_CSRF_LEN];

    auth_csrf_for_session(key_a, "", tok);
    assert_false(auth_csrf_check(key_a, "", tok));
    auth_csrf_for_session(key_a, NULL, tok);
    assert_false(auth_csrf_check(key_a, NULL, tok));
}

static void test_secret_round_trip(void **state)
{
    char hex[AUTH_SECRET_HEX];
    char hex2[AUTH_SECRET_HEX];
    unsigned char key[AUTH_SECRET_BYTES];
    char back[AUTH_SECRET_HEX];

    auth_secret_generate(hex);
    assert_int_equal(strlen(hex), 64);
    assert_int_equal(strspn(hex, "0123456789abcdef"), 64);
    auth_secret_generate(hex2);
    assert_string_not_equal(hex, hex2);

    assert_int_equal(auth_secret_decode(hex, key), 0);
    sodium_bin2hex(back, sizeof back, key, sizeof key);
    assert_string_equal(back, hex);
}

static void test_secret_decode_known(void **state)
{
    unsigned char key[AUTH_SECRET_BYTES];

    assert_int_equal(
        auth_secret_decode("000102030405060708090a0b0c0d0e0f101112131415161718191A1B1C1D1E1F", key),
        0);
    assert_memory_equal(key, key_a, sizeof key);
}

static void expect_decode_fails(const char *hex)
{
    unsigned char key[AUTH_SECRET_BYTES];

    memset(key, 0xaa, sizeof key);
    assert_int_equal(auth_secret_decode(hex, key), -EINVAL);
    for (size_t i = 0; i < sizeof key; i++)
        assert_int_equal(key[i], 0);
}

static void test_secret_decode_rejects(void **state)
{
    const char *good = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";
    char buf[80];

    expect_decode_fails(NULL);
    expect_decode_fails("");
    expect_decode_fails("00");
    /* 63 digits */
    memcpy(buf, good, 63);
    buf[63] = '\0';
    expect_decode_fails(buf);
    /* 66 digits */
    memcpy(buf, good, 64);
    memcpy(buf + 64, "00", 3);
    expect_decode_fails(buf);
    /* trailing newline, as a file read carelessly would give */
    memcpy(buf, good, 64);
    memcpy(buf + 64, "\n", 2);
    expect_decode_fails(buf);
    /* a non-hex digit anywhere */
    memcpy(buf, good, 65);
    buf[10] = 'g';
    expect_decode_fails(buf);
    memcpy(buf, good, 65);
    buf[63] = ' ';
    expect_decode_fails(buf);
    memcpy(buf, good, 65);
    buf[0] = ':';
    expect_decode_fails(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_known_value),
        cmocka_unit_test(test_matches_keyed_generichash),
        cmocka_unit_test(test_deterministic_and_distinct),
        cmocka_unit_test(test_check),
        cmocka_unit_test(test_no_session_never_validates),
        cmocka_unit_test(test_secret_round_trip),
        cmocka_unit_test(test_secret_decode_known),
        cmocka_unit_test(test_secret_decode_rejects),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
