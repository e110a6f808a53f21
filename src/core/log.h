/* Structured log lines: one event name plus key=value fields, written as text
 * (`2026-11-30T12:00:00.123Z info login.ok user=ann addr=127.0.0.1`) or as one JSON
 * object per line. Thread-safe; callers never pass secrets (passwords, tokens, cookies). */
#ifndef CODEHUB_CORE_LOG_H
#define CODEHUB_CORE_LOG_H

#include <stdbool.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };
enum log_format { LOG_FORMAT_TEXT = 0, LOG_FORMAT_JSON };

/* Returns 0, or -EINVAL for an unknown name. */
int log_level_parse(const char *name, enum log_level *out);
int log_format_parse(const char *name, enum log_format *out);

void log_configure(enum log_level level, enum log_format format);
bool log_enabled(enum log_level level);

/* Writes one line to stderr: `event` then pairs of (key, value) strings ended by NULL.
 * A NULL value is skipped, so optional fields can be passed unconditionally. */
void log_event(enum log_level level, const char *event, ...) __attribute__((sentinel));

/* A free-form message under the event "message". */
void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_WARN, __VA_ARGS__)
#define log_error(...) log_msg(LOG_ERROR, __VA_ARGS__)

#endif
