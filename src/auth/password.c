#include "auth/password.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

_Static_assert(AUTH_PASSWORD_HASH_MAX >= crypto_pwhash_STRBYTES,
               "AUTH_PASSWORD_HASH_MAX must hold a libsodium encoded hash");

static const char msg_null[] = "a password is required";
static const char msg_long[] = "must be at most 1024 bytes long";
static const char msg_utf8[] = "must be valid UTF-8 text";
static const char msg_control[] = "must not contain control characters";
static const char msg_short[] = "is too short";

/* The cost is a pair that must be read and written together (a hash made with the ops of
 * one setting and the memory of another would be a cost nobody configured), hence a mutex
 * rather than two atomics. It is taken once per hash, which costs nothing next to Argon2. */
static pthread_mutex_t cost_lock = PTHREAD_MUTEX_INITIALIZER;
static unsigned long long cost_ops = crypto_pwhash_OPSLIMIT_INTERACTIVE;
static size_t cost_mem = crypto_pwhash_MEMLIMIT_INTERACTIVE;

/* The hash auth_password_burn() verifies against, and the cost it was made at. */
static pthread_mutex_t burn_lock = PTHREAD_MUTEX_INITIALIZER;
static char burn_hash[AUTH_PASSWORD_HASH_MAX];
static unsigned long long burn_ops;
static size_t burn_mem;

static const char argon2id_prefix[] = "$argon2id$";

/* Decodes one UTF-8 sequence at `s` into *cp and returns its length in bytes, or 0 when it
 * is malformed: truncated, overlong, a surrogate or beyond U+10FFFF. Overlongs matter
 * because they would let the same password be typed as two different byte strings. */
static size_t utf8_decode(const unsigned char *s, uint32_t *cp)
{
    uint32_t c = s[0];
    uint32_t min;
    size_t len;

    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2;
        c &= 0x1f;
        min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3;
        c &= 0x0f;
        min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4;
        c &= 0x07;
        min = 0x10000;
    } else {
        return 0;
    }
    for (size_t i = 1; i < len; i++) {
        /* A NUL here fails this test too, so we never read past the terminator. */
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = (c << 6) | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return len;
}

int auth_password_check_policy(const char *password, size_t min_len, const char **why)
{
    const unsigned char *p = (const unsigned char *)password;
    const char *reason = msg_null;
    size_t chars = 0;

    if (password == NULL)
        goto fail;
    /* Bound the length before scanning, so a huge body is not walked character by
     * character only to be refused. */
    if (strnlen(password, AUTH_PASSWORD_MAX_BYTES + 1) > AUTH_PASSWORD_MAX_BYTES) {
        reason = msg_long;
        goto fail;
    }
    while (*p != '\0') {
        uint32_t cp;
        size_t n = utf8_decode(p, &cp);
        if (n == 0) {
            reason = msg_utf8;
            goto fail;
        }
        if (cp < 0x20 || (cp >= 0x7f && cp <= 0x9f)) {
            reason = msg_control;
            goto fail;
        }
        p += n;
        chars++;
    }
    if (chars < min_len) {
        reason = msg_short;
        goto fail;
    }
    return 0;

fail:
    if (why != NULL)
        *why = reason;
    return -EINVAL;
}

void auth_password_set_cost(unsigned long long opslimit, size_t memlimit)
{
    /* Clamped here so that hashing can only fail for lack of memory. */
    if (opslimit < crypto_pwhash_OPSLIMIT_MIN)
        opslimit = crypto_pwhash_OPSLIMIT_MIN;
    if (opslimit > crypto_pwhash_OPSLIMIT_MAX)
        opslimit = crypto_pwhash_OPSLIMIT_MAX;
    if (memlimit < crypto_pwhash_MEMLIMIT_MIN)
        memlimit = crypto_pwhash_MEMLIMIT_MIN;
    if (memlimit > crypto_pwhash_MEMLIMIT_MAX)
        memlimit = crypto_pwhash_MEMLIMIT_MAX;
    pthread_mutex_lock(&cost_lock);
    cost_ops = opslimit;
    cost_mem = memlimit;
    pthread_mutex_unlock(&cost_lock);
}

void auth_password_cost(unsigned long long *ops, size_t *mem)
{
    pthread_mutex_lock(&cost_lock);
    if (ops != NULL)
        *ops = cost_ops;
    if (mem != NULL)
        *mem = cost_mem;
    pthread_mutex_unlock(&cost_lock);
}

static int hash_at(const char *password, unsigned long long ops, size_t mem,
                   char out[AUTH_PASSWORD_HASH_MAX])
{
    /* Never leave a half-written buffer that a careless caller could store. */
    memset(out, 0, AUTH_PASSWORD_HASH_MAX);
    if (crypto_pwhash_str_alg(out, password, strlen(password), ops, mem,
                              crypto_pwhash_ALG_ARGON2ID13) != 0) {
        memset(out, 0, AUTH_PASSWORD_HASH_MAX);
        return -ENOMEM;
    }
    return 0;
}

int auth_password_hash(const char *password, char out[AUTH_PASSWORD_HASH_MAX])
{
    unsigned long long ops;
    size_t mem;

    memset(out, 0, AUTH_PASSWORD_HASH_MAX);
    if (password == NULL)
        return -EINVAL;
    /* Fails only without a usable random source; no salt, no hash. */
    if (sodium_init() < 0)
        return -ENOMEM;
    auth_password_cost(&ops, &mem);
    return hash_at(password, ops, mem, out);
}

/* True when `hash` is a string libsodium may be handed: its parameters expect a
 * NUL-terminated string within crypto_pwhash_STRBYTES, and a stored value is not trusted
 * to be one. */
static bool hash_plausible(const char *hash)
{
    size_t len;

    if (hash == NULL)
        return false;
    len = strnlen(hash, AUTH_PASSWORD_HASH_MAX);
    return len > 0 && len < crypto_pwhash_STRBYTES;
}

bool auth_password_verify(const char *hash, const char *password)
{
    if (!hash_plausible(hash) || password == NULL)
        return false;
    if (sodium_init() < 0)
        return false;
    return crypto_pwhash_str_verify(hash, password, strlen(password)) == 0;
}

bool auth_password_needs_rehash(const char *hash)
{
    unsigned long long ops;
    size_t mem;

    if (!hash_plausible(hash))
        return true;
    /* libsodium would also accept an Argon2i hash at the right cost; we want Argon2id. */
    if (strncmp(hash, argon2id_prefix, sizeof argon2id_prefix - 1) != 0)
        return true;
    if (sodium_init() < 0)
        return true;
    auth_password_cost(&ops, &mem);
    return crypto_pwhash_str_needs_rehash(hash, ops, mem) != 0;
}

void auth_password_burn(const char *password)
{
    char hash[AUTH_PASSWORD_HASH_MAX];
    unsigned long long ops;
    size_t mem;
    bool ready = true;

    if (password == NULL)
        password = "";
    if (sodium_init() < 0)
        return;
    auth_password_cost(&ops, &mem);
    /* Computing under the lock makes concurrent first callers wait for one computation
     * instead of each hashing; once it is done the lock is held only to copy 128 bytes. */
    pthread_mutex_lock(&burn_lock);
    if (burn_hash[0] == '\0' || burn_ops != ops || burn_mem != mem) {
        unsigned char secret[32];
        char secret_hex[sizeof secret * 2 + 1];
        randombytes_buf(secret, sizeof secret);
        sodium_bin2hex(secret_hex, sizeof secret_hex, secret, sizeof secret);
        if (hash_at(secret_hex, ops, mem, burn_hash) == 0) {
            burn_ops = ops;
            burn_mem = mem;
        } else {
            ready = false;
        }
        sodium_memzero(secret, sizeof secret);
        sodium_memzero(secret_hex, sizeof secret_hex);
    }
    memcpy(hash, burn_hash, sizeof hash);
    pthread_mutex_unlock(&burn_lock);
    if (ready) {
        /* The outcome is meaningless (nobody knows the password); only the work counts. */
        int ignored = crypto_pwhash_str_verify(hash, password, strlen(password));
        (void)ignored;
    }
}
