/* The watch-stream line framer (see framer.h). A chunk is scanned only once: complete lines
 * that lie wholly inside it are passed straight from it without a copy, and only the tail
 * of an unfinished line is kept, so a large object split into many small reads costs
 * linear time. */
#include "k8s/framer.h"

#include <errno.h>
#include <string.h>

void k8s_framer_init(struct k8s_framer *f, size_t max)
{
    f->partial = (struct buf)BUF_INIT;
    f->max = max;
    f->failed = 0;
}

static int deliver(struct k8s_framer *f, const char *line, size_t len, k8s_framer_line_cb cb,
                   void *cb_data)
{
    if (len > 0 && line[len - 1] == '\r')
        len--;
    if (len == 0)
        return 0;
    int r = cb(cb_data, line, len);
    if (r < 0)
        f->failed = r;
    return r < 0 ? r : 0;
}

int k8s_framer_feed(struct k8s_framer *f, const char *data, size_t len, k8s_framer_line_cb cb,
                    void *cb_data)
{
    if (f->failed)
        return f->failed;
    while (len > 0) {
        const char *nl = memchr(data, '\n', len);
        size_t piece = nl ? (size_t)(nl - data) : len;
        /* The cap counts every byte before the "\n", a "\r" included: simple to state. */
        if (f->partial.len + piece > f->max) {
            f->failed = -EMSGSIZE;
            buf_free(&f->partial);
            return f->failed;
        }
        if (nl == NULL) {
            buf_append(&f->partial, data, len);
            return 0;
        }
        int r;
        if (f->partial.len == 0) {
            r = deliver(f, data, piece, cb, cb_data);
        } else {
            buf_append(&f->partial, data, piece);
            r = deliver(f, f->partial.data, f->partial.len, cb, cb_data);
            /* Do not sit on the memory of one huge object for the life of the stream. */
            if (f->partial.cap > 1024 * 1024)
                buf_free(&f->partial);
            else
                buf_reset(&f->partial);
        }
        if (r < 0)
            return r;
        data += piece + 1;
        len -= piece + 1;
    }
    return 0;
}

size_t k8s_framer_pending(const struct k8s_framer *f)
{
    return f->partial.len;
}

void k8s_framer_reset(struct k8s_framer *f)
{
    buf_reset(&f->partial);
    f->failed = 0;
}

void k8s_framer_free(struct k8s_framer *f)
{
    buf_free(&f->partial);
    f->failed = 0;
}
