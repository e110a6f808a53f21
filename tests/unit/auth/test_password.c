#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/password.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include <sodium.h>

static unsigned long long default_ops;
static size_t default_mem;

/* Remember the defaults, then hash at the minimum cost so the suite runs in well under a
 * second; the code paths are the same at any cost. */
static int group_setup(void **state)
{
    if (sodium_init() < 0)
        return -1;
    auth_password_cost(&default_ops, &default_mem);
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN);
    return 0;
}

static void expect_policy(const char *pw, size_t min_len, int rc, const char *msg)
{
    const char *why = NULL;
    assert_int_equal(auth_password_check_policy(pw, min_len, &why), rc);
    if (msg != NULL)
        assert_string_equal(why, msg);
    else
        assert_null(why);
}

static void test_default_cost(void **state)
{
    assert_int_equal(default_ops, crypto_pwhash_OPSLIMIT_INTERACTIVE);
    assert_int_equal(default_mem, crypto_pwhash_MEMLIMIT_INTERACTIVE);
}

static void test_policy_length_in_code_points(void **state)
{
    expect_policy("abcdefgh", 8, 0, NULL);
    expect_policy("abcdefg", 8, -EINVAL, "is too short");
    /* "été" is 5 bytes but 3 characters. */
    expect_policy("\xc3\xa9t\xc3\xa9", 3, 0, NULL);
    expect_policy("\xc3\xa9t\xc3\xa9", 4, -EINVAL, "is too short");
    /* Four CJK characters: 12 bytes, 4 characters. */
    expect_policy("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x83\x86", 4, 0, NULL);
    expect_policy("\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x83\x86", 5, -EINVAL, "is too short");
    /* An emoji outside the BMP: 4 bytes, 1 character. */
    expect_policy("\xf0\x9f\x94\x91", 1, 0, NULL);
    expect_policy("\xf0\x9f\x94\x91", 2, -EINVAL, "is too short");
    expect_policy("", 0, 0, NULL);
    expect_policy("", 1, -EINVAL, "is too short");
    /* Spaces are fine: pass phrases have them. */
    expect_policy("correct horse battery staple", 8, 0, NULL);
}

static void test_policy_max_bytes(void **state)
{
    char pw[AUTH_PASSWORD_MAX_BYTES + 2];

    memset(pw, 'x', AUTH_PASSWORD_MAX_BYTES);
    pw[AUTH_PASSWORD_MAX_BYTES] = '\0';
    expect_policy(pw, 8, 0, NULL);
    pw[AUTH_PASSWORD_MAX_BYTES] = 'x';
    pw[AUTH_PASSWORD_MAX_BYTES + 1] = '\0';
    expect_policy(pw, 8, -EINVAL, "must be at most 1024 bytes long");
    /* The limit is in bytes: 512 two-byte characters fit, 513 do not. */
    for (size_t i = 0; i < 1024; i += 2) {
        pw[i] = '\xc3';
        pw[i + 1] = '\xa9';
    }
    pw[1024] = '\0';
    expect_policy(pw, 512, 0, NULL);
    pw[1024] = '\xc3';
    pw[1025] = '\0';
    expect_policy(pw, 8, -EINVAL, "must be at most 1024 bytes long");
}

static void test_policy_control_characters(void **state)
{
    const char *msg = "must not contain control characters";
    expect_policy("password\x01", 1, -EINVAL, msg);
    expect_policy("pass\tword", 1, -EINVAL, msg);
    expect_policy("password\n", 1, -EINVAL, msg);
    expect_policy("password\r", 1, -EINVAL, msg);
    expect_policy("\x1b[31mpassword", 1, -EINVAL, msg);
    expect_policy("password\x7f", 1, -EINVAL, msg);
    expect_policy("pass\xc2\x85word", 1, -EINVAL, msg); /* U+0085, a C1 control */
    expect_policy("pass\xc2\x9fword", 1, -EINVAL, msg);
    expect_policy("pass\xc2\xa0word", 1, 0, NULL); /* U+00A0 is printable */
}

static void test_policy_invalid_utf8(void **state)
{
    const char *msg = "must be valid UTF-8 text";
    expect_policy("pass\xffword", 1, -EINVAL, msg);
    expect_policy("pass\x80word", 1, -EINVAL, msg);                 /* stray continuation */
    expect_policy("pass\xc3", 1, -EINVAL, msg);                     /* truncated at the end */
    expect_policy("pass\xe6\x97word", 1, -EINVAL, msg);             /* truncated inside */
    expect_policy("pass\xc0\xafword", 1, -EINVAL, msg);             /* overlong '/' */
    expect_policy("pass\xe0\x80\xafword", 1, -EINVAL, msg);         /* overlong, 3 bytes */
    expect_policy("pass\xed\xa0\x80word", 1, -EINVAL, msg);         /* surrogate U+D800 */
    expect_policy("pass\xf4\x90\x80\x80word", 1, -EINVAL, msg);     /* beyond U+10FFFF */
    expect_policy("pass\xf8\x88\x80\x80\x80word", 1, -EINVAL, msg); /* 5-byte form */
}

static void test_policy_null(void **state)
{
    expect_policy(NULL, 0, -EINVAL, "a password is required");
    assert_int_equal(auth_password_check_policy(NULL, 0, NULL), -EINVAL);
    assert_int_equal(auth_password_check_policy("short", 8, NULL), -EINVAL);
    assert_int_equal(auth_password_check_policy("long enough", 8, NULL), 0);
}

static void test_hash_round_trip(void **state)
{
    char hash[AUTH_PASSWORD_HASH_MAX];
    char prefix[64];

    assert_int_equal(auth_password_hash("correct horse", hash), 0);
    snprintf(prefix, sizeof prefix, "$argon2id$v=19$m=%zu,t=%llu,p=1$",
             (size_t)crypto_pwhash_MEMLIMIT_MIN / 1024,
             (unsigned long long)crypto_pwhash_OPSLIMIT_MIN);
    assert_memory_equal(hash, prefix, strlen(prefix));
    assert_true(strlen(hash) < crypto_pwhash_STRBYTES);
    assert_true(auth_password_verify(hash, "correct horse"));
    assert_false(auth_password_verify(hash, "correct hors"));
    assert_false(auth_password_verify(hash, "correct horse "));
    assert_false(auth_password_verify(hash, "Correct horse"));
    assert_false(auth_password_verify(hash, ""));
    assert_false(auth_password_verify(hash, NULL));
}

static void test_hash_unicode_and_empty(void **state)
{
    char hash[AUTH_PASSWORD_HASH_MAX];

    assert_int_equal(auth_password_hash("\xc3\xa9t\xc3\xa9 \xf0\x9f\x94\x91", hash), 0);
    assert_true(auth_password_verify(hash, "\xc3\xa9t\xc3\xa9 \xf0\x9f\x94\x91"));
    /* The same letters decomposed (e + combining acute) are other bytes: no match. */
    assert_false(auth_password_verify(hash, "e\xcc\x81t\xc3\xa9 \xf0\x9f\x94\x91"));

    assert_int_equal(auth_password_hash("", hash), 0);
    assert_true(auth_password_verify(hash, ""));
    assert_false(auth_password_verify(hash, "x"));
}

static void test_hash_is_salted(void **state)
{
    char a[AUTH_PASSWORD_HASH_MAX];
    char b[AUTH_PASSWORD_HASH_MAX];

    assert_int_equal(auth_password_hash("same password", a), 0);
    assert_int_equal(auth_password_hash("same password", b), 0);
    assert_string_not_equal(a, b);
    assert_true(auth_password_verify(a, "same password"));
    assert_true(auth_password_verify(b, "same password"));
}

static void test_hash_null_password(void **state)
{
    char hash[AUTH_PASSWORD_HASH_MAX];

    memset(hash, 'x', sizeof hash);
    assert_int_equal(auth_password_hash(NULL, hash), -EINVAL);
    assert_string_equal(hash, "");
}

static void test_verify_bad_hashes(void **state)
{
    char hash[AUTH_PASSWORD_HASH_MAX];
    char longer[300];

    assert_false(auth_password_verify(NULL, "pw"));
    assert_false(auth_password_verify("", "pw"));
    assert_false(auth_password_verify("", ""));
    assert_false(auth_password_verify("not a hash", "pw"));
    assert_false(auth_password_verify("$argon2id$", "pw"));

    assert_int_equal(auth_password_hash("pw", hash), 0);
    /* Truncated: drop the last characters of the digest. */
    hash[strlen(hash) - 3] = '\0';
    assert_false(auth_password_verify(hash, "pw"));

    /* A valid hash followed by junk that pushes it past the buffer size. */
    assert_int_equal(auth_password_hash("pw", hash), 0);
    memset(longer, 'a', sizeof longer);
    memcpy(longer, hash, strlen(hash));
    longer[sizeof longer - 1] = '\0';
    assert_false(auth_password_verify(longer, "pw"));
}

static void test_verify_other_cost(void **state)
{
    char hash[AUTH_PASSWORD_HASH_MAX];

    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN + 1, crypto_pwhash_MEMLIMIT_MIN * 2);
    assert_int_equal(auth_password_hash("pw", hash), 0);
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN);
    /* The cost is read from the hash, not from the current setting. */
    assert_true(auth_password_verify(hash, "pw"));
    assert_false(auth_password_verify(hash, "pW"));
    assert_true(auth_password_needs_rehash(hash));
}

static void test_needs_rehash(void **state)
{
    char hash[AUTH_PASSWORD_HASH_MAX];
    char argon2i[crypto_pwhash_argon2i_STRBYTES];

    assert_int_equal(auth_password_hash("pw", hash), 0);
    assert_false(auth_password_needs_rehash(hash));

    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN + 1, crypto_pwhash_MEMLIMIT_MIN);
    assert_true(auth_password_needs_rehash(hash));
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN * 2);
    assert_true(auth_password_needs_rehash(hash));
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN);
    assert_false(auth_password_needs_rehash(hash));

    /* Argon2i at exactly the current cost: libsodium alone would call it current; we want
     * Argon2id. (Argon2i needs at least 3 passes, so raise the cost to match.) */
    auth_password_set_cost(crypto_pwhash_argon2i_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN);
    assert_int_equal(crypto_pwhash_argon2i_str(argon2i, "pw", 2, crypto_pwhash_argon2i_OPSLIMIT_MIN,
                                               crypto_pwhash_MEMLIMIT_MIN),
                     0);
    assert_int_equal(crypto_pwhash_str_needs_rehash(argon2i, crypto_pwhash_argon2i_OPSLIMIT_MIN,
                                                    crypto_pwhash_MEMLIMIT_MIN),
                     0);
    assert_true(auth_password_verify(argon2i, "pw"));
    assert_true(auth_password_needs_rehash(argon2i));
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN);

    assert_true(auth_password_needs_rehash(NULL));
    assert_true(auth_password_needs_rehash(""));
    assert_true(auth_password_needs_rehash("garbage"));
    assert_true(auth_password_needs_rehash("$argon2id$v=19$m=8,t=1,p=1$broken"));
}

static void test_set_cost_clamps(void **state)
{
    unsigned long long ops = 0;
    size_t mem = 0;

    auth_password_set_cost(0, 0);
    auth_password_cost(&ops, &mem);
    assert_int_equal(ops, crypto_pwhash_OPSLIMIT_MIN);
    assert_int_equal(mem, crypto_pwhash_MEMLIMIT_MIN);

    auth_password_set_cost(~0ULL, (size_t)-1);
    auth_password_cost(&ops, &mem);
    assert_int_equal(ops, crypto_pwhash_OPSLIMIT_MAX);
    assert_int_equal(mem, crypto_pwhash_MEMLIMIT_MAX);

    auth_password_set_cost(7, 1 << 20);
    auth_password_cost(&ops, NULL);
    auth_password_cost(NULL, &mem);
    assert_int_equal(ops, 7);
    assert_int_equal(mem, 1 << 20);

    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN);
}

/* True when the kernel refuses an anonymous mapping far larger than the machine, which
 * is what makes the out-of-memory path testable without risking the OOM killer. */
static bool kernel_refuses_huge_maps(void)
{
    FILE *f = fopen("/proc/sys/vm/overcommit_memory", "r");
    int mode = -1;

    if (f == NULL)
        return false;
    if (fscanf(f, "%d", &mode) != 1)
        mode = -1;
    fclose(f);
    return mode == 0 || mode == 2;
}

static void test_hash_out_of_memory(void **state)
{
    char hash[AUTH_PASSWORD_HASH_MAX];

    if (!kernel_refuses_huge_maps())
        skip();
    /* 4 TiB of Argon2 memory cannot be had. */
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MAX);
    memset(hash, 'x', sizeof hash);
    assert_int_equal(auth_password_hash("pw", hash), -ENOMEM);
    assert_string_equal(hash, "");
    /* burn must survive the same failure and work again once the cost is sane. */
    auth_password_burn("pw");
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN);
    auth_password_burn("pw");
    assert_int_equal(auth_password_hash("pw", hash), 0);
    assert_true(auth_password_verify(hash, "pw"));
}

struct worker {
    pthread_t thread;
    int id;
    bool ok;
};

static void *hash_worker(void *arg)
{
    struct worker *w = arg;
    char pw[32];
    char other[32];
    char hash[AUTH_PASSWORD_HASH_MAX];

    snprintf(pw, sizeof pw, "password-%d", w->id);
    snprintf(other, sizeof other, "password-%d", w->id + 100);
    w->ok = true;
    for (int i = 0; i < 5; i++) {
        auth_password_burn(pw);
        if (auth_password_hash(pw, hash) != 0 || !auth_password_verify(hash, pw) ||
            auth_password_verify(hash, other) || auth_password_needs_rehash(hash))
            w->ok = false;
    }
    return NULL;
}

static void test_threads(void **state)
{
    struct worker w[6];

    for (int i = 0; i < 6; i++) {
        w[i].id = i;
        assert_int_equal(pthread_create(&w[i].thread, NULL, hash_worker, &w[i]), 0);
    }
    for (int i = 0; i < 6; i++) {
        assert_int_equal(pthread_join(w[i].thread, NULL), 0);
        assert_true(w[i].ok);
    }
}

static void test_burn(void **state)
{
    char hash[AUTH_PASSWORD_HASH_MAX];

    auth_password_burn(NULL);
    auth_password_burn("");
    auth_password_burn("anything");
    /* After a cost change the burn hash is remade; real hashes are unaffected. */
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN + 1, crypto_pwhash_MEMLIMIT_MIN);
    assert_int_equal(auth_password_hash("pw", hash), 0);
    auth_password_burn("pw");
    assert_true(auth_password_verify(hash, "pw"));
    auth_password_set_cost(crypto_pwhash_OPSLIMIT_MIN, crypto_pwhash_MEMLIMIT_MIN);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_default_cost),
        cmocka_unit_test(test_policy_length_in_code_points),
        cmocka_unit_test(test_policy_max_bytes),
        cmocka_unit_test(test_policy_control_characters),
        cmocka_unit_test(test_policy_invalid_utf8),
        cmocka_unit_test(test_policy_null),
        cmocka_unit_test(test_hash_round_trip),
        cmocka_unit_test(test_hash_unicode_and_empty),
        cmocka_unit_test(test_hash_is_salted),
        cmocka_unit_test(test_hash_null_password),
        cmocka_unit_test(test_verify_bad_hashes),
        cmocka_unit_test(test_verify_other_cost),
        cmocka_unit_test(test_needs_rehash),
        cmocka_unit_test(test_set_cost_clamps),
        cmocka_unit_test(test_hash_out_of_memory),
        cmocka_unit_test(test_threads),
        cmocka_unit_test(test_burn),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
