/* Splits a byte stream into lines, for the watch stream: the API server writes one JSON
 * object per line, and the network cuts that stream wherever it likes. Feed it chunks as
 * they come; each complete line is handed to a callback once, without its "\n" (nor a
 * "\r" before it). Empty lines are skipped. A line longer than the cap is an error: a
 * broken or hostile server must not make us buffer without bound. */
#ifndef CODEHUB_K8S_FRAMER_H
#define CODEHUB_K8S_FRAMER_H

#include "core/buf.h"

#include <stddef.h>

struct k8s_framer {
    struct buf partial; /* the start of a line whose end has not come yet */
    size_t max;         /* longest line accepted, in bytes */
    int failed;         /* the error that stopped it, 0 while usable */
};

/* `line` is borrowed for the call and is not NUL-terminated. Return 0 to go on, or a
 * negative errno to stop: k8s_framer_feed then returns that value at once. */
typedef int (*k8s_framer_line_cb)(void *data, const char *line, size_t len);

/* Sets up an empty framer accepting lines of up to `max` bytes (counting a "\r" before
 * the "\n", not the "\n"). */
void k8s_framer_init(struct k8s_framer *f, size_t max);

/* Feeds `len` bytes. Returns 0; -EMSGSIZE when a line grows beyond the cap; or the
 * callback's negative value. After an error the framer refuses further input with the same
 * error until k8s_framer_reset. */
int k8s_framer_feed(struct k8s_framer *f, const char *data, size_t len, k8s_framer_line_cb cb,
                    void *cb_data);

/* Bytes of an unfinished line held back (0 at a clean line boundary). */
size_t k8s_framer_pending(const struct k8s_framer *f);

/* Forgets any partial line and error, for a new stream. */
void k8s_framer_reset(struct k8s_framer *f);

/* Frees the buffer; the framer may be initialised again. */
void k8s_framer_free(struct k8s_framer *f);

#endif
