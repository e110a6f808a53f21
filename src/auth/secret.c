#include "auth/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#define DERIVE_PREFIX "codehub-hub-secret:"

/* Room for the longest content allowed, its CR LF, and one byte more: a read that fills
 * the buffer proves the file is too long without reading a file of any size. */
#define READ_CAP (AUTH_SECRET_FILE_MAX + 3)

void auth_secret_derive(const char *content, size_t len, unsigned char out[AUTH_SECRET_BYTES])
{
    crypto_generichash_state st;

    crypto_generichash_init(&st, NULL, 0, AUTH_SECRET_BYTES);
    crypto_generichash_update(&st, (const unsigned char *)DERIVE_PREFIX, sizeof DERIVE_PREFIX - 1);
    crypto_generichash_update(&st, (const unsigned char *)content, len);
    crypto_generichash_final(&st, out, AUTH_SECRET_BYTES);
    sodium_memzero(&st, sizeof st);
}

static void set_err(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    va_list ap;

    if (err == NULL || errlen == 0)
        return;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static const char *plural(size_t n)
{
    return n == 1 ? "" : "s";
}

int auth_secret_from_file(const char *path, unsigned char out[AUTH_SECRET_BYTES],
                          unsigned *mode_out, char *err, size_t errlen)
{
    char data[READ_CAP];
    size_t len = 0;
    int fd = -1;
    int rc;
    struct stat sb;

    sodium_memzero(out, AUTH_SECRET_BYTES);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (path == NULL || path[0] == '\0') {
        set_err(err, errlen, "auth.secret_file is empty");
        return -EINVAL;
    }
    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        rc = -errno;
        set_err(err, errlen, "cannot read auth.secret_file %s: %s", path, strerror(errno));
        return rc;
    }
    /* fstat on the open descriptor gives the mode of the file actually read: a Kubernetes
     * Secret volume presents each key as a symlink (0777) to a file that is 0644 unless
     * the volume's defaultMode says otherwise. */
    if (mode_out != NULL && fstat(fd, &sb) == 0)
        *mode_out = (unsigned)(sb.st_mode & 07777);
    for (;;) {
        ssize_t n = read(fd, data + len, sizeof data - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            set_err(err, errlen, "cannot read auth.secret_file %s: %s", path, strerror(errno));
            goto done;
        }
        if (n == 0)
            break;
        len += (size_t)n;
        if (len == sizeof data)
            break;
    }
    if (len == sizeof data) {
        rc = -EINVAL;
        set_err(err, errlen,
                "auth.secret_file %s holds more than %d characters; at most %d are allowed", path,
                AUTH_SECRET_FILE_MAX, AUTH_SECRET_FILE_MAX);
        goto done;
    }
    /* Exactly one line end goes: `echo`, editors and `kubectl create secret --from-file`
     * of such a file add one, and Windows editors a CR LF. Anything more is content. */
    if (len >= 2 && data[len - 2] == '\r' && data[len - 1] == '\n')
        len -= 2;
    else if (len >= 1 && data[len - 1] == '\n')
        len -= 1;
    if (len > AUTH_SECRET_FILE_MAX) {
        rc = -EINVAL;
        set_err(err, errlen, "auth.secret_file %s holds %zu characters; at most %d are allowed",
                path, len, AUTH_SECRET_FILE_MAX);
        goto done;
    }
    if (memchr(data, '\0', len) != NULL) {
        rc = -EINVAL;
        set_err(err, errlen, "auth.secret_file %s holds a NUL byte", path);
        goto done;
    }
    if (len < AUTH_SECRET_FILE_MIN) {
        rc = -EINVAL;
        set_err(err, errlen, "auth.secret_file %s holds %zu character%s; at least %d are needed",
                path, len, plural(len), AUTH_SECRET_FILE_MIN);
        goto done;
    }
    auth_secret_derive(data, len, out);
    rc = 0;
done:
    sodium_memzero(data, sizeof data);
    close(fd);
    return rc;
}
