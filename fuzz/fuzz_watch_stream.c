/* libFuzzer driver: the watch-stream line framer (k8s/framer.c).
 *
 * The API server writes one JSON event per line and the network cuts the stream wherever
 * it likes. The framer must hand every line over exactly once, whole, however the bytes
 * were cut. Each input is framed
 *   1. in one piece,
 *   2. in pieces whose sizes come from the input's first bytes,
 *   3. by a reference written here: split at every LF, drop one CR before it, skip empty
 *      lines, and stop with -EMSGSIZE at the first line (finished or not) longer than the
 *      cap,
 * and all three must give the same lines, the same result and the same unfinished tail.
 * Each line is also read as the watch reads it (jansson, duplicate keys refused, then
 * "type" and "object"), so that the driver covers what a line turns into. The callback can
 * stop the stream after a few lines (as the watch does when it restarts), which must stop
 * the framer for good until k8s_framer_reset.
 *
 * Input layout: byte 0 picks the line cap and when the callback stops; bytes 1..3 pick the
 * piece sizes of run 2; the rest is the stream. */
#include "fuzz_check.h"
#include "core/buf.h"
#include "k8s/framer.h"

#include <errno.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PREFIX 4

struct trace {
    struct buf lines; /* each line as "<len>:<bytes>\n" */
    size_t max;
    unsigned count;
    unsigned stop_after; /* the callback fails on this line (0: never) */
};

/* What the watch makes of a line (watch.c on_line): an event with a type and an object,
 * or a line it cannot use. */
static void classify(struct buf *out, const char *line, size_t len)
{
    json_error_t jerr;
    json_t *ev = json_loadb(line, len, JSON_REJECT_DUPLICATES, &jerr);
    const char *type = json_string_value(json_object_get(ev, "type"));
    json_t *obj = json_object_get(ev, "object");
    if (type != NULL && json_is_object(obj)) {
        const char *name =
            json_string_value(json_object_get(json_object_get(obj, "metadata"), "name"));
        buf_appendf(out, " event %s %s", type, name != NULL ? name : "-");
    } else {
        buf_append_str(out, ev != NULL ? " unusable" : " not-json");
    }
    json_decref(ev);
}

static int on_line(void *data, const char *line, size_t len)
{
    struct trace *t = data;
    /* Whole lines only: no LF inside, never empty, never over the cap. (Only one CR before
     * the LF is taken off: "a\r\r\n" is the line "a\r", as the reference says.) */
    check(len > 0 && len <= t->max);
    check(memchr(line, '\n', len) == NULL);
    t->count++;
    buf_appendf(&t->lines, "%zu:", len);
    buf_append(&t->lines, line, len);
    classify(&t->lines, line, len);
    buf_append_char(&t->lines, '\n');
    return t->stop_after != 0 && t->count == t->stop_after ? -ECANCELED : 0;
}

static size_t piece_size(uint8_t sel, size_t left)
{
    size_t n = sel >= 0xf0 ? left : (size_t)(sel % 41) + 1;
    return n < left ? n : left;
}

/* Frames stream[0..len) in pieces (none: one piece). Returns the last result; sets
 * *pending to the unfinished tail when the stream ended without an error. */
static int frame(struct trace *t, const char *stream, size_t len, const uint8_t *sel, size_t nsel,
                 size_t *pending)
{
    struct k8s_framer f;
    k8s_framer_init(&f, t->max);
    int rc = 0;
    size_t off = 0, k = 0;
    while (off < len) {
        size_t n = nsel ? piece_size(sel[k++ % nsel], len - off) : len - off;
        int r = k8s_framer_feed(&f, stream + off, n, on_line, t);
        check(r == 0 || r == -EMSGSIZE || r == -ECANCELED);
        /* Once failed, the same error for everything that follows. */
        check(rc == 0 || r == rc);
        rc = r;
        off += n;
    }
    *pending = k8s_framer_pending(&f);
    if (rc != 0) {
        unsigned before = t->count;
        check(k8s_framer_feed(&f, "x\n", 2, on_line, t) == rc && t->count == before);
        /* A reset makes it usable again, with nothing left of the old stream. */
        k8s_framer_reset(&f);
        check(k8s_framer_pending(&f) == 0);
        struct trace probe = {BUF_INIT, t->max > 0 ? t->max : 1, 0, 0};
        if (t->max > 0) {
            check(k8s_framer_feed(&f, "\r\nz\r\n", 5, on_line, &probe) == 0);
            check(probe.count == 1 && probe.lines.len >= 3 &&
                  memcmp(probe.lines.data, "1:z", 3) == 0);
        }
        buf_free(&probe.lines);
    }
    k8s_framer_free(&f);
    return rc;
}

/* The reference: the same trace from the whole stream at once, by plain splitting. */
static int reference(struct trace *t, const char *s, size_t len, size_t *pending)
{
    size_t start = 0;
    *pending = 0;
    while (start <= len) {
        const char *nl = memchr(s + start, '\n', len - start);
        size_t seg = nl != NULL ? (size_t)(nl - (s + start)) : len - start;
        if (seg > t->max)
            return -EMSGSIZE;
        if (nl == NULL) {
            *pending = seg;
            return 0;
        }
        size_t l = seg > 0 && s[start + seg - 1] == '\r' ? seg - 1 : seg;
        if (l > 0 && on_line(t, s + start, l) != 0)
            return -ECANCELED;
        start += seg + 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t caps[4] = {16 * 1024 * 1024, 64, 5, 0};
    if (size < PREFIX)
        return 0;
    uint8_t knob = data[0];
    size_t max = caps[knob & 3];
    unsigned stop_after = (knob >> 2) & 7;
    const char *stream = (const char *)data + PREFIX;
    size_t len = size - PREFIX;

    struct trace one = {BUF_INIT, max, 0, stop_after};
    struct trace two = {BUF_INIT, max, 0, stop_after};
    struct trace ref = {BUF_INIT, max, 0, stop_after};
    size_t p1, p2, pr;
    int r1 = frame(&one, stream, len, NULL, 0, &p1);
    int r2 = frame(&two, stream, len, data + 1, PREFIX - 1, &p2);
    int rr = reference(&ref, stream, len, &pr);

    check(r1 == r2 && r1 == rr);
    check(one.count == two.count && one.count == ref.count);
    check(one.lines.len == two.lines.len && one.lines.len == ref.lines.len);
    check(one.lines.len == 0 || (memcmp(one.lines.data, two.lines.data, one.lines.len) == 0 &&
                                 memcmp(one.lines.data, ref.lines.data, one.lines.len) == 0));
    if (r1 == 0)
        check(p1 == p2 && p1 == pr);
    buf_free(&one.lines);
    buf_free(&two.lines);
    buf_free(&ref.lines);
    return 0;
}
