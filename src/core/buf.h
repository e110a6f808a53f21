/* A growable byte buffer. Always NUL-terminated after its `len` bytes so that text
 * built in it can be used as a C string. */
#ifndef CODEHUB_CORE_BUF_H
#define CODEHUB_CORE_BUF_H

#include <stdarg.h>
#include <stddef.h>

struct buf {
    char *data; /* NULL until the first append */
    size_t len;
    size_t cap;
};

#define BUF_INIT                                                                                   \
    {                                                                                              \
        NULL, 0, 0                                                                                 \
    }

void buf_reserve(struct buf *b, size_t extra);
void buf_append(struct buf *b, const void *data, size_t len);
void buf_append_str(struct buf *b, const char *s);
void buf_append_char(struct buf *b, char c);
void buf_appendf(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void buf_vappendf(struct buf *b, const char *fmt, va_list ap) __attribute__((format(printf, 2, 0)));
/* Appends `len` bytes of `s` with control characters written as \n, \t or \xNN, so that a
 * value quoted in a one-line message can never split it or forge a second line. */
void buf_append_escaped(struct buf *b, const char *s, size_t len);
/* Appends `s` with &, <, >, " and ' replaced by HTML entities. */
void buf_append_html(struct buf *b, const char *s);
/* Drops the first `n` bytes, moving the rest to the front. */
void buf_consume(struct buf *b, size_t n);
void buf_reset(struct buf *b);
/* Returns the data as a C string ("" when empty) and leaves `b` empty; caller frees. */
char *buf_steal(struct buf *b);
void buf_free(struct buf *b);

#endif
