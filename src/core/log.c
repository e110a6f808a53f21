#include "core/log.h"

#include "core/buf.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static enum log_level min_level = LOG_INFO;
static enum log_format out_format = LOG_FORMAT_TEXT;
static pthread_mutex_t write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *name, enum log_level *out)
{
    for (int i = 0; i <= LOG_ERROR; i++) {
        if (strcmp(name, level_names[i]) == 0) {
            *out = (enum log_level)i;
            return 0;
        }
    }
    return -EINVAL;
}

int log_format_parse(const char *name, enum log_format *out)
{
    if (strcmp(name, "text") == 0)
        *out = LOG_FORMAT_TEXT;
    else if (strcmp(name, "json") == 0)
        *out = LOG_FORMAT_JSON;
    else
        return -EINVAL;
    return 0;
}

void log_configure(enum log_level level, enum log_format format)
{
    min_level = level;
    out_format = format;
}

bool log_enabled(enum log_level level)
{
    return level >= min_level;
}

static void append_time(struct buf *b)
{
    struct timeval tv;
    struct tm tm;
    char stamp[32];
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    buf_appendf(b, "%s.%03dZ", stamp, (int)(tv.tv_usec / 1000));
}

static void append_json_string(struct buf *b, const char *s)
{
    buf_append_char(b, '"');
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_appendf(b, "\\%c", *p);
        else if (*p < 0x20 || *p == 0x7f)
            buf_appendf(b, "\\u%04x", *p);
        else
            buf_append_char(b, (char)*p);
    }
    buf_append_char(b, '"');
}

/* Text values are quoted when they hold a space, a quote, '=' or a control byte, so
 * that a log line can always be split back into its fields. */
static void append_text_value(struct buf *b, const char *s)
{
    bool plain = *s != '\0';
    for (const unsigned char *p = (const unsigned char *)s; *p && plain; p++)
        if (*p <= 0x20 || *p == '"' || *p == '=' || *p == 0x7f)
            plain = false;
    if (plain)
        buf_append_str(b, s);
    else
        append_json_string(b, s);
}

static void write_line(struct buf *b)
{
    buf_append_char(b, '\n');
    pthread_mutex_lock(&write_lock);
    size_t off = 0;
    while (off < b->len) {
        ssize_t n = write(STDERR_FILENO, b->data + off, b->len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        off += (size_t)n;
    }
    pthread_mutex_unlock(&write_lock);
}

static void log_vevent(enum log_level level, const char *event, va_list ap)
{
    struct buf b = BUF_INIT;
    if (out_format == LOG_FORMAT_JSON) {
        buf_append_str(&b, "{\"ts\":\"");
        append_time(&b);
        buf_appendf(&b, "\",\"level\":\"%s\",\"event\":", level_names[level]);
        append_json_string(&b, event);
    } else {
        append_time(&b);
        buf_appendf(&b, " %s %s", level_names[level], event);
    }
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (key == NULL)
            break;
        const char *value = va_arg(ap, const char *);
        if (value == NULL)
            continue;
        if (out_format == LOG_FORMAT_JSON) {
            buf_append_char(&b, ',');
            append_json_string(&b, key);
            buf_append_char(&b, ':');
            append_json_string(&b, value);
        } else {
            buf_appendf(&b, " %s=", key);
            append_text_value(&b, value);
        }
    }
    if (out_format == LOG_FORMAT_JSON)
        buf_append_char(&b, '}');
    write_line(&b);
    buf_free(&b);
}

void log_event(enum log_level level, const char *event, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, event);
    log_vevent(level, event, ap);
    va_end(ap);
}

void log_msg(enum log_level level, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    struct buf msg = BUF_INIT;
    va_list ap;
    va_start(ap, fmt);
    buf_vappendf(&msg, fmt, ap);
    va_end(ap);
    log_event(level, "message", "msg", msg.data ? msg.data : "", (const char *)NULL);
    buf_free(&msg);
}
