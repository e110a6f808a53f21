/* Reading a password from standard input. Passwords never come from argv (other users
 * can read it in /proc) and are never echoed. The line is read a byte at a time with
 * read(2) rather than through stdio, so that no copy stays in stdio's buffer and nothing
 * after the first line is consumed. */
#include "cli/cli.h"

#include "auth/password.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

/* Reads one byte; returns 1, 0 at end of input, or -errno. */
static int read_byte(char *c)
{
    for (;;) {
        ssize_t n = read(STDIN_FILENO, c, 1);
        if (n >= 0)
            return (int)n;
        if (errno != EINTR)
            return -errno;
    }
}

/* Reads the line into out; returns its length, or a negative errno (-E2BIG: too long,
 * -EILSEQ: a NUL byte, -ENODATA: nothing at all before end of input). */
static long read_line(char *out, size_t size)
{
    size_t len = 0;
    bool any = false;
    bool nul = false;
    long r;

    for (;;) {
        char c;
        int n = read_byte(&c);
        if (n < 0) {
            r = n;
            goto done;
        }
        if (n == 0)
            break;
        any = true;
        if (c == '\n')
            break;
        if (c == '\0')
            nul = true;
        /* Keep reading a too-long line to its end, so that the error is the same however
         * long it is, but store no more than fits. */
        if (len + 1 < size)
            out[len] = c;
        len++;
    }
    if (!any) {
        r = -ENODATA;
        goto done;
    }
    if (len + 1 > size) {
        r = -E2BIG;
        goto done;
    }
    out[len] = '\0';
    if (len > 0 && out[len - 1] == '\r')
        out[--len] = '\0';
    /* The buffer has room for one byte more than a password may have: the '\r'. */
    if (len + 2 > size) {
        r = -E2BIG;
        goto done;
    }
    r = nul ? -EILSEQ : (long)len;
done:
    return r;
}

int cli_password_read(const char *who, char *out, size_t size)
{
    struct termios saved;
    bool tty = isatty(STDIN_FILENO) == 1;
    bool echo_off = false;
    int rc = 0;

    if (tty) {
        fprintf(stderr, "Password for %s: ", who);
        fflush(stderr);
        if (tcgetattr(STDIN_FILENO, &saved) == 0) {
            struct termios quiet = saved;
            quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
            echo_off = tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) == 0;
        }
    }
    /* One byte more than the longest password, for a '\r' before the '\n'. */
    long len =
        read_line(out, size < AUTH_PASSWORD_MAX_BYTES + 2 ? size : AUTH_PASSWORD_MAX_BYTES + 2);
    if (echo_off)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    if (tty)
        fputc('\n', stderr);

    if (len == -ENODATA) {
        rc = cli_fail("no password on standard input (--password-stdin reads its first line)");
    } else if (len == -E2BIG) {
        rc = cli_fail("password is longer than %d bytes", AUTH_PASSWORD_MAX_BYTES);
    } else if (len == -EILSEQ) {
        rc = cli_fail("password contains a NUL byte");
    } else if (len < 0) {
        rc = cli_fail("cannot read the password from standard input: %s", strerror((int)-len));
    } else if (len == 0) {
        rc = cli_fail("refusing an empty password");
    }
    if (rc != 0) {
        sodium_memzero(out, size);
        return -EINVAL;
    }
    return 0;
}
