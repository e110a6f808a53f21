#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

/* A private directory per test, removed with everything in it afterwards. */
struct fixture {
    char dir[64];
    char path[128];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (f == NULL || sodium_init() < 0)
        return -1;
    snprintf(f->dir, sizeof f->dir, "/tmp/codehub-secret-XXXXXX");
    if (mkdtemp(f->dir) == NULL)
        return -1;
    snprintf(f->path, sizeof f->path, "%s/secret", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    int rc = system(cmd);
    free(f);
    return rc == 0 ? 0 : -1;
}

/* Writes `len` bytes of `data` to `path` (replacing it) with permission bits `mode`. */
static void write_bytes(const char *path, const void *data, size_t len, mode_t mode)
{
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text), 0600);
}

/* `n` characters of 'x' followed by `tail` (caller frees). */
static char *x_times(size_t n, const char *tail)
{
    size_t tl = strlen(tail);
    char *s = malloc(n + tl + 1);
    assert_non_null(s);
    memset(s, 'x', n);
    memcpy(s + n, tail, tl + 1);
    return s;
}

static bool all_zero(const unsigned char *key)
{
    for (size_t i = 0; i < AUTH_SECRET_BYTES; i++)
        if (key[i] != 0)
            return false;
    return true;
}

/* Reads f->path into `key`, expecting success. */
static void read_ok(struct fixture *f, unsigned char key[AUTH_SECRET_BYTES])
{
    char err[256] = "untouched";
    int rc = auth_secret_from_file(f->path, key, NULL, err, sizeof err);
    if (rc != 0)
        fail_msg("auth_secret_from_file: %d %s", rc, err);
    assert_string_equal(err, "");
}

/* Reads f->path expecting -EINVAL and an error equal to "auth.secret_file PATH " + `rest`. */
static void read_invalid(struct fixture *f, const char *rest)
{
    unsigned char key[AUTH_SECRET_BYTES];
    char err[512];
    char want[512];
    memset(key, 0xAA, sizeof key);
    assert_int_equal(auth_secret_from_file(f->path, key, NULL, err, sizeof err), -EINVAL);
    snprintf(want, sizeof want, "auth.secret_file %s %s", f->path, rest);
    assert_string_equal(err, want);
    assert_true(all_zero(key));
}

static void test_known_value(void **state)
{
    struct fixture *f = *state;
    unsigned char want[AUTH_SECRET_BYTES], got[AUTH_SECRET_BYTES];

    /* From an independent implementation: Python's
     * hashlib.blake2b(b"codehub-hub-secret:" + b"a" * 32, digest_size=32).hexdigest(). */
    assert_int_equal(
        sodium_hex2bin(want, sizeof want,
                       "8b467ef3f7be287657ee6977b1d5ab917c00d708f85b0b18f4f169b7adbc56e7", 64, NULL,
                       NULL, NULL),
        0);
    auth_secret_derive("aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", 32, got);
    assert_memory_equal(got, want, sizeof want);

    write_text(f->path, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\n");
    read_ok(f, got);
    assert_memory_equal(got, want, sizeof want);

    /* The second vector, the way `openssl rand -hex 16` would write it. */
    assert_int_equal(
        sodium_hex2bin(want, sizeof want,
                       "5dd4d48b05c197099433ef5bd1015c0f91758e555368ef65b0c9d66b98b7e77f", 64, NULL,
                       NULL, NULL),
        0);
    write_text(f->path, "0123456789abcdef0123456789abcdef");
    read_ok(f, got);
    assert_memory_equal(got, want, sizeof want);
}

/* One trailing LF or CR LF is not part of the secret; anything beyond one is. */
static void test_line_end(void **state)
{
    struct fixture *f = *state;
    static const char base[] = "S3cr3t-text-from-randAlphaNum-64-0123456789abcdefghijklmnopqrst";
    static const char *const same[] = {"", "\n", "\r\n"};
    static const char *const differ[] = {"\n\n", "\r", "\r\n\r\n", "\n\r\n", " ", " \n"};
    unsigned char bare[AUTH_SECRET_BYTES], key[AUTH_SECRET_BYTES];
    char text[128];

    auth_secret_derive(base, strlen(base), bare);
    for (size_t i = 0; i < sizeof same / sizeof same[0]; i++) {
        snprintf(text, sizeof text, "%s%s", base, same[i]);
        write_text(f->path, text);
        read_ok(f, key);
        assert_memory_equal(key, bare, sizeof bare);
    }
    for (size_t i = 0; i < sizeof differ / sizeof differ[0]; i++) {
        snprintf(text, sizeof text, "%s%s", base, differ[i]);
        write_text(f->path, text);
        read_ok(f, key);
        assert_memory_not_equal(key, bare, sizeof bare);
    }
    /* "\n\n" keeps one "\n" as content. */
    snprintf(text, sizeof text, "%s\n", base);
    auth_secret_derive(text, strlen(text), bare);
    snprintf(text, sizeof text, "%s\n\n", base);
    write_text(f->path, text);
    read_ok(f, key);
    assert_memory_equal(key, bare, sizeof bare);
}

static void test_deterministic_and_distinct(void **state)
{
    struct fixture *f = *state;
    unsigned char a[AUTH_SECRET_BYTES], b[AUTH_SECRET_BYTES], c[AUTH_SECRET_BYTES];
    char text[] = "ffffffffffffffffffffffffffffffffffffffffffffffff";

    write_text(f->path, text);
    read_ok(f, a);
    read_ok(f, b);
    assert_memory_equal(a, b, sizeof a);
    /* A copy elsewhere, as a second replica's mount would be, gives the same key. */
    char other[160];
    snprintf(other, sizeof other, "%s/copy", f->dir);
    write_text(other, text);
    char err[256];
    assert_int_equal(auth_secret_from_file(other, c, NULL, err, sizeof err), 0);
    assert_memory_equal(a, c, sizeof a);

    /* Any one byte changed, or one more byte, changes the key. */
    text[20] = 'e';
    write_text(f->path, text);
    read_ok(f, b);
    assert_memory_not_equal(a, b, sizeof a);
    text[20] = 'f';
    char longer[64];
    snprintf(longer, sizeof longer, "%sf", text);
    write_text(f->path, longer);
    read_ok(f, b);
    assert_memory_not_equal(a, b, sizeof a);

    /* The prefix matters: the key is not the plain BLAKE2b-256 of the text. */
    unsigned char plain[AUTH_SECRET_BYTES];
    crypto_generichash(plain, sizeof plain, (const unsigned char *)text, strlen(text), NULL, 0);
    assert_memory_not_equal(a, plain, sizeof a);
}

static void test_missing_and_unreadable(void **state)
{
    struct fixture *f = *state;
    unsigned char key[AUTH_SECRET_BYTES];
    char err[256];
    unsigned mode = 12345;

    memset(key, 0xAA, sizeof key);
    assert_int_equal(
        auth_secret_from_file("/nonexistent/codehub-secret", key, &mode, err, sizeof err), -ENOENT);
    assert_string_equal(err, "cannot read auth.secret_file /nonexistent/codehub-secret: "
                             "No such file or directory");
    assert_true(all_zero(key));
    assert_int_equal(mode, 12345); /* never opened: untouched */

    /* A directory opens but cannot be read. */
    assert_int_equal(auth_secret_from_file(f->dir, key, NULL, err, sizeof err), -EISDIR);
    char want[256];
    snprintf(want, sizeof want, "cannot read auth.secret_file %s: Is a directory", f->dir);
    assert_string_equal(err, want);

    /* A dangling symlink, as a Secret volume's would be with the key missing. */
    char link[160];
    snprintf(link, sizeof link, "%s/dangling", f->dir);
    assert_int_equal(symlink("/nonexistent/codehub-secret", link), 0);
    assert_int_equal(auth_secret_from_file(link, key, NULL, err, sizeof err), -ENOENT);
    assert_non_null(strstr(err, link));

    /* Permission denied, unless we run as root (who may read anything). */
    write_bytes(f->path, "0123456789abcdef0123456789abcdef", 32, 0000);
    int rc = auth_secret_from_file(f->path, key, NULL, err, sizeof err);
    if (geteuid() != 0) {
        assert_int_equal(rc, -EACCES);
        snprintf(want, sizeof want, "cannot read auth.secret_file %s: Permission denied", f->path);
        assert_string_equal(err, want);
    } else {
        assert_int_equal(rc, 0);
    }

    /* No path at all. */
    assert_int_equal(auth_secret_from_file("", key, NULL, err, sizeof err), -EINVAL);
    assert_string_equal(err, "auth.secret_file is empty");
    assert_int_equal(auth_secret_from_file(NULL, key, NULL, err, sizeof err), -EINVAL);
    assert_string_equal(err, "auth.secret_file is empty");
}

static void test_too_short(void **state)
{
    struct fixture *f = *state;
    unsigned char key[AUTH_SECRET_BYTES];

    write_text(f->path, "");
    read_invalid(f, "holds 0 characters; at least 32 are needed");
    write_text(f->path, "\n");
    read_invalid(f, "holds 0 characters; at least 32 are needed");
    write_text(f->path, "\r\n");
    read_invalid(f, "holds 0 characters; at least 32 are needed");
    write_text(f->path, "x");
    read_invalid(f, "holds 1 character; at least 32 are needed");
    write_text(f->path, "changeme\n");
    read_invalid(f, "holds 8 characters; at least 32 are needed");

    /* 31 characters, with or without the line end, are one short; 32 are enough. */
    char *s = x_times(31, "");
    write_text(f->path, s);
    read_invalid(f, "holds 31 characters; at least 32 are needed");
    free(s);
    s = x_times(31, "\r\n");
    write_text(f->path, s);
    read_invalid(f, "holds 31 characters; at least 32 are needed");
    free(s);
    /* The stripped line end does not count, but a second one does. */
    s = x_times(31, "\n\n");
    write_text(f->path, s);
    read_ok(f, key);
    free(s);
    s = x_times(32, "\n");
    write_text(f->path, s);
    read_ok(f, key);
    free(s);
}

static void test_too_long(void **state)
{
    struct fixture *f = *state;
    unsigned char key[AUTH_SECRET_BYTES], want[AUTH_SECRET_BYTES];

    /* 4096 is allowed, with either line end. */
    char *s = x_times(4096, "");
    auth_secret_derive(s, 4096, want);
    write_text(f->path, s);
    read_ok(f, key);
    assert_memory_equal(key, want, sizeof want);
    free(s);
    s = x_times(4096, "\r\n");
    write_text(f->path, s);
    read_ok(f, key);
    assert_memory_equal(key, want, sizeof want);
    free(s);

    s = x_times(4097, "");
    write_text(f->path, s);
    read_invalid(f, "holds 4097 characters; at most 4096 are allowed");
    free(s);
    s = x_times(4097, "\n");
    write_text(f->path, s);
    read_invalid(f, "holds 4097 characters; at most 4096 are allowed");
    free(s);
    s = x_times(4096, "\n\n");
    write_text(f->path, s);
    read_invalid(f, "holds 4097 characters; at most 4096 are allowed");
    free(s);
    /* Beyond what is read, the count is not known; a 1 MiB file is not read whole. */
    s = x_times(4099, "");
    write_text(f->path, s);
    read_invalid(f, "holds more than 4096 characters; at most 4096 are allowed");
    free(s);
    s = x_times(1024 * 1024, "\n");
    write_text(f->path, s);
    read_invalid(f, "holds more than 4096 characters; at most 4096 are allowed");
    free(s);
}

static void test_nul_byte(void **state)
{
    struct fixture *f = *state;
    unsigned char key[AUTH_SECRET_BYTES];
    char err[512];
    char text[48];

    memset(text, 'q', sizeof text);
    text[10] = '\0';
    write_bytes(f->path, text, sizeof text, 0600);
    read_invalid(f, "holds a NUL byte");
    /* Wherever it is, even last, or in a file that is too short as well. */
    memset(text, 'q', sizeof text);
    text[sizeof text - 1] = '\0';
    write_bytes(f->path, text, sizeof text, 0600);
    read_invalid(f, "holds a NUL byte");
    write_bytes(f->path, "ab\0cd\n", 6, 0600);
    read_invalid(f, "holds a NUL byte");
    /* No message quotes the content. */
    memset(text, 'q', sizeof text);
    memcpy(text, "VISIBLE-SECRET", 14);
    text[30] = '\0';
    write_bytes(f->path, text, sizeof text, 0600);
    assert_int_equal(auth_secret_from_file(f->path, key, NULL, err, sizeof err), -EINVAL);
    assert_null(strstr(err, "VISIBLE"));
    write_text(f->path, "VISIBLE-SECRET");
    assert_int_equal(auth_secret_from_file(f->path, key, NULL, err, sizeof err), -EINVAL);
    assert_null(strstr(err, "VISIBLE"));
}

/* The mode reported is the target's, through symbolic links as Kubernetes mounts them
 * (..data/KEY behind KEY), also when the content is then refused. */
static void test_mode(void **state)
{
    struct fixture *f = *state;
    unsigned char key[AUTH_SECRET_BYTES];
    char err[256];
    unsigned mode = 0;
    char *s = x_times(64, "\n");

    write_bytes(f->path, s, strlen(s), 0600);
    assert_int_equal(auth_secret_from_file(f->path, key, &mode, err, sizeof err), 0);
    assert_int_equal(mode, 0600);
    assert_int_equal(mode & 0004, 0);

    write_bytes(f->path, s, strlen(s), 0644);
    assert_int_equal(auth_secret_from_file(f->path, key, &mode, err, sizeof err), 0);
    assert_int_equal(mode, 0644);
    assert_int_not_equal(mode & 0004, 0);

    char data_dir[160], link1[160], link2[160];
    snprintf(data_dir, sizeof data_dir, "%s/..data", f->dir);
    snprintf(link1, sizeof link1, "%s/..data/hub-secret", f->dir);
    snprintf(link2, sizeof link2, "%s/hub-secret", f->dir);
    assert_int_equal(mkdir(data_dir, 0755), 0);
    assert_int_equal(symlink(f->path, link1), 0);
    assert_int_equal(symlink("..data/hub-secret", link2), 0);
    write_bytes(f->path, s, strlen(s), 0440);
    mode = 0;
    assert_int_equal(auth_secret_from_file(link2, key, &mode, err, sizeof err), 0);
    assert_int_equal(mode, 0440);

    write_bytes(f->path, "short", 5, 0604);
    mode = 0;
    assert_int_equal(auth_secret_from_file(link2, key, &mode, err, sizeof err), -EINVAL);
    assert_int_equal(mode, 0604);
    free(s);
}

/* err may be NULL or short: the result is the same, the message is cut, never overrun. */
static void test_err_buffer(void **state)
{
    struct fixture *f = *state;
    unsigned char a[AUTH_SECRET_BYTES], b[AUTH_SECRET_BYTES];
    char err[16];

    write_text(f->path, "short");
    assert_int_equal(auth_secret_from_file(f->path, a, NULL, NULL, 0), -EINVAL);
    memset(err, '#', sizeof err);
    assert_int_equal(auth_secret_from_file(f->path, a, NULL, err, 1), -EINVAL);
    assert_int_equal(err[0], '\0');
    assert_int_equal(err[1], '#');
    assert_int_equal(auth_secret_from_file(f->path, a, NULL, err, sizeof err), -EINVAL);
    assert_int_equal(strlen(err), sizeof err - 1);
    assert_memory_equal(err, "auth.secret_fil", sizeof err - 1);

    write_text(f->path, "0123456789abcdef0123456789abcdef\n");
    assert_int_equal(auth_secret_from_file(f->path, a, NULL, NULL, 0), 0);
    read_ok(f, b);
    assert_memory_equal(a, b, sizeof a);
    assert_false(all_zero(a));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_known_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_line_end, setup, teardown),
        cmocka_unit_test_setup_teardown(test_deterministic_and_distinct, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_and_unreadable, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_short, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_nul_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_mode, setup, teardown),
        cmocka_unit_test_setup_teardown(test_err_buffer, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
