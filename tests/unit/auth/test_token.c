#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/token.h"

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

static int group_setup(void **state)
{
    return sodium_init() < 0 ? -1 : 0;
}

static bool is_base64url(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '-' || c == '_';
        if (!ok)
            return false;
    }
    return true;
}

static void check_format(const char *token, const char *prefix)
{
    size_t plen = strlen(prefix);
    unsigned char raw[64];
    size_t raw_len = 0;

    assert_int_equal(strlen(token), plen + AUTH_TOKEN_RANDOM_CHARS);
    assert_memory_equal(token, prefix, plen);
    assert_true(is_base64url(token + plen, AUTH_TOKEN_RANDOM_CHARS));
    /* The random part decodes back to exactly 32 bytes. */
    assert_int_equal(sodium_base642bin(raw, sizeof raw, token + plen, AUTH_TOKEN_RANDOM_CHARS, NULL,
                                       &raw_len, NULL, sodium_base64_VARIANT_URLSAFE_NO_PADDING),
                     0);
    assert_int_equal(raw_len, 32);
}

static void test_format(void **state)
{
    char *session = auth_token_new(AUTH_TOKEN_PREFIX_SESSION);
    char *api = auth_token_new(AUTH_TOKEN_PREFIX_API);
    char *none = auth_token_new(NULL);
    char *custom = auth_token_new("x-");

    check_format(session, "");
    check_format(api, "chb_");
    check_format(none, "");
    check_format(custom, "x-");
    free(session);
    free(api);
    free(none);
    free(custom);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void test_uniqueness(void **state)
{
    enum { N = 20000 };
    char **tokens = calloc(N, sizeof *tokens);
    unsigned long long counts[64] = {0};

    assert_non_null(tokens);
    for (int i = 0; i < N; i++) {
        tokens[i] = auth_token_new("chb_");
        for (int j = 4; j < 4 + AUTH_TOKEN_RANDOM_CHARS - 1; j++) {
            const char *alphabet =
                "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            counts[strchr(alphabet, tokens[i][j]) - alphabet]++;
        }
    }
    qsort(tokens, N, sizeof *tokens, cmp_str);
    for (int i = 1; i < N; i++)
        assert_string_not_equal(tokens[i - 1], tokens[i]);
    /* Every one of the 64 symbols shows up in the first 42 positions (the 43rd carries only
     * 4 bits). With ~13000 expected per symbol, a symbol seen fewer than 10000 times would
     * mean a broken generator, not bad luck. */
    for (int k = 0; k < 64; k++)
        assert_true(counts[k] > 10000);
    for (int i = 0; i < N; i++)
        free(tokens[i]);
    free(tokens);
}

static void hex_of(const unsigned char *bin, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bin[i] >> 4];
        out[2 * i + 1] = digits[bin[i] & 0xf];
    }
    out[2 * len] = '\0';
}

static void test_hash_known_values(void **state)
{
    char out[AUTH_TOKEN_HASH_HEX];

    /* Vectors from an independent BLAKE2b implementation (Python's hashlib.blake2b with
     * digest_size=32). */
    auth_token_hash("abc", out);
    assert_string_equal(out, "bddd813c634239723171ef3fee98579b94964e3bb1cb3e427262c8c068d52319");
    auth_token_hash("chb_test-token", out);
    assert_string_equal(out, "94c5534365b45f1b48737dd184ae49811be8b6c3b22bc1278e976cc019a43542");
    auth_token_hash("", out);
    assert_string_equal(out, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
    auth_token_hash(NULL, out);
    assert_string_equal(out, "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8");
}

static void test_hash_matches_generichash(void **state)
{
    char *token = auth_token_new("chb_");
    unsigned char digest[32];
    char expected[65];
    char out[AUTH_TOKEN_HASH_HEX];
    char again[AUTH_TOKEN_HASH_HEX];

    crypto_generichash(digest, sizeof digest, (const unsigned char *)token, strlen(token), NULL, 0);
    hex_of(digest, sizeof digest, expected);
    auth_token_hash(token, out);
    assert_string_equal(out, expected);
    auth_token_hash(token, again);
    assert_string_equal(out, again);

    /* One character changed: a different hash. */
    token[10] = token[10] == 'A' ? 'B' : 'A';
    auth_token_hash(token, again);
    assert_string_not_equal(out, again);
    free(token);
}

static void test_display_prefix(void **state)
{
    char out[AUTH_TOKEN_DISPLAY_MAX];
    char *api = auth_token_new("chb_");
    char *session = auth_token_new("");

    auth_token_display_prefix("chb_Ab12cdefghijklmnop", out);
    assert_string_equal(out, "chb_Ab12");
    /* Random characters may include '_': only the prefix's '_' counts. */
    auth_token_display_prefix("chb_A_b_cdef", out);
    assert_string_equal(out, "chb_A_b_");
    auth_token_display_prefix("chb_Ab", out);
    assert_string_equal(out, "chb_Ab");
    auth_token_display_prefix("Xyz9-abcdef", out);
    assert_string_equal(out, "Xyz9");
    auth_token_display_prefix("ab", out);
    assert_string_equal(out, "ab");
    auth_token_display_prefix("", out);
    assert_string_equal(out, "");
    auth_token_display_prefix(NULL, out);
    assert_string_equal(out, "");
    /* A run of lowercase letters longer than a prefix can be is not a prefix. */
    auth_token_display_prefix("abcdefghijklmnop_qrst", out);
    assert_string_equal(out, "abcd");
    /* The longest prefix allowed still fits the buffer. */
    auth_token_display_prefix("abcdefghij_KLMNOPQ", out);
    assert_string_equal(out, "abcdefghij_KLMN");

    auth_token_display_prefix(api, out);
    assert_int_equal(strlen(out), 8);
    assert_memory_equal(out, api, 8);
    auth_token_display_prefix(session, out);
    assert_true(strlen(out) >= 4);
    assert_memory_equal(out, session, strlen(out));
    free(api);
    free(session);
}

static void test_secure_equal(void **state)
{
    assert_true(auth_secure_equal("abc", "abc"));
    assert_true(auth_secure_equal("", ""));
    assert_false(auth_secure_equal("abc", "abd"));
    assert_false(auth_secure_equal("abc", "xbc"));
    assert_false(auth_secure_equal("abc", "ab"));
    assert_false(auth_secure_equal("ab", "abc"));
    assert_false(auth_secure_equal("abc", ""));
    assert_false(auth_secure_equal("abc", NULL));
    assert_false(auth_secure_equal(NULL, "abc"));
    assert_false(auth_secure_equal(NULL, NULL));

    char *t = auth_token_new("chb_");
    char *copy = strdup(t);
    assert_true(auth_secure_equal(t, copy));
    copy[strlen(copy) - 1] ^= 1;
    assert_false(auth_secure_equal(t, copy));
    free(t);
    free(copy);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format),
        cmocka_unit_test(test_uniqueness),
        cmocka_unit_test(test_hash_known_values),
        cmocka_unit_test(test_hash_matches_generichash),
        cmocka_unit_test(test_display_prefix),
        cmocka_unit_test(test_secure_equal),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
