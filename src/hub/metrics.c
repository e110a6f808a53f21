#include "hub/metrics.h"

#include "core/alloc.h"
#include "core/log.h"

#include <inttypes.h>
#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum metric_kind { KIND_COUNTER, KIND_GAUGE, KIND_HISTOGRAM, KIND_GAUGE_FN, KIND_COUNTER_FN };

static const char *const kind_names[] = {"counter", "gauge", "histogram", "gauge", "counter"};

struct metric_family;

struct metric {
    struct metric *next; /* next label set of the same family */
    struct metric_family *family;
    char *labels; /* text between the braces, or NULL */
    _Atomic int64_t value;
};

/* Buckets are kept per bucket, not cumulative, so that an observation is one atomic add;
 * render adds them up. _count is that total, so it always equals the +Inf bucket as the
 * format requires, even while observations race with a scrape.
 *
 * The sum is a double whose bits live in an atomic integer, updated by compare-and-swap.
 * We chose that over the two suggested alternatives: an integer of microunits cannot hold
 * both small durations and large byte counts (1 GB observations overflow int64 after
 * ~9000 of them), and a mutex would make observe the one update in the registry that can
 * block. The CAS loop retries only while another thread updates the same sum at the same
 * instant. The sum may lag the buckets by the observations in flight during a scrape,
 * which Prometheus tolerates. */
struct metric_histogram {
    struct metric_family *family;
    size_t nbounds;
    double *bounds;
    _Atomic uint64_t *buckets; /* nbounds + 1, the last one is +Inf */
    _Atomic uint64_t sum_bits;
};

struct metric_family {
    struct metric_family *next;
    char *name;
    char *help;
    enum metric_kind kind;
    struct metric *series; /* counters and gauges, in registration order */
    struct metric *series_tail;
    struct metric_histogram *histogram;
    double (*fn)(void *);
    void *fn_data;
};

static struct metric_family *families;
static struct metric_family *families_tail;

static bool name_char(char c, bool first)
{
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':')
        return true;
    return !first && c >= '0' && c <= '9';
}

static bool name_valid(const char *name)
{
    if (name == NULL || name[0] == '\0')
        return false;
    for (size_t i = 0; name[i] != '\0'; i++) {
        if (!name_char(name[i], i == 0))
            return false;
    }
    return true;
}

/* Checks `name="value"[,name="value"]...` with the format's escapes, so that a mistake in
 * a label string is caught at start-up instead of making every scrape unparseable. */
static bool labels_valid(const char *p)
{
    for (;;) {
        if (!name_char(*p, true) || *p == ':')
            return false;
        while (name_char(*p, false) && *p != ':')
            p++;
        if (p[0] != '=' || p[1] != '"')
            return false;
        p += 2;
        while (*p != '"') {
            if (*p == '\0' || *p == '\n')
                return false;
            if (*p == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    return false;
                p++;
            }
            p++;
        }
        p++;
        if (*p == '\0')
            return true;
        if (*p != ',')
            return false;
        p++;
    }
}

static void register_failed(const char *name, const char *reason)
{
    log_event(LOG_ERROR, "metrics.register_failed", "name", name ? name : "(null)", "reason",
              reason, NULL);
}

static struct metric_family *family_find(const char *name)
{
    for (struct metric_family *f = families; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0)
            return f;
    }
    return NULL;
}

static struct metric_family *family_add(const char *name, const char *help, enum metric_kind kind)
{
    struct metric_family *f = xcalloc(1, sizeof *f);
    f->name = xstrdup(name);
    f->help = xstrdup(help != NULL ? help : "");
    f->kind = kind;
    if (families_tail != NULL)
        families_tail->next = f;
    else
        families = f;
    families_tail = f;
    return f;
}

/* Finds or creates the family `name` of `kind`; NULL when the name is malformed or taken
 * by another kind. */
static struct metric_family *family_get(const char *name, const char *help, enum metric_kind kind)
{
    struct metric_family *f;

    if (!name_valid(name)) {
        register_failed(name, "malformed name");
        return NULL;
    }
    f = family_find(name);
    if (f == NULL)
        return family_add(name, help, kind);
    if (f->kind != kind) {
        register_failed(name, "already registered as another type");
        return NULL;
    }
    return f;
}

static struct metric *series_get(const char *name, const char *help, const char *labels,
                                 enum metric_kind kind)
{
    struct metric_family *f;
    struct metric *m;

    if (labels != NULL && labels[0] == '\0')
        labels = NULL;
    if (labels != NULL && !labels_valid(labels)) {
        register_failed(name, "malformed labels");
        return NULL;
    }
    f = family_get(name, help, kind);
    if (f == NULL)
        return NULL;
    for (m = f->series; m != NULL; m = m->next) {
        if ((m->labels == NULL && labels == NULL) ||
            (m->labels != NULL && labels != NULL && strcmp(m->labels, labels) == 0))
            return m;
    }
    m = xcalloc(1, sizeof *m);
    m->family = f;
    m->labels = labels != NULL ? xstrdup(labels) : NULL;
    atomic_init(&m->value, 0);
    if (f->series_tail != NULL)
        f->series_tail->next = m;
    else
        f->series = m;
    f->series_tail = m;
    return m;
}

struct metric *metrics_counter(const char *name, const char *help, const char *labels)
{
    return series_get(name, help, labels, KIND_COUNTER);
}

struct metric *metrics_gauge(const char *name, const char *help, const char *labels)
{
    return series_get(name, help, labels, KIND_GAUGE);
}

void metric_add(struct metric *m, int64_t delta)
{
    if (m == NULL || (delta < 0 && m->family->kind == KIND_COUNTER))
        return;
    /* Relaxed: each value is independent and nothing is published through it. */
    atomic_fetch_add_explicit(&m->value, delta, memory_order_relaxed);
}

void metric_set(struct metric *m, int64_t value)
{
    if (m == NULL || m->family->kind != KIND_GAUGE)
        return;
    atomic_store_explicit(&m->value, value, memory_order_relaxed);
}

int64_t metric_get(const struct metric *m)
{
    if (m == NULL)
        return 0;
    return atomic_load_explicit(&((struct metric *)m)->value, memory_order_relaxed);
}

static bool bounds_valid(const double *bounds, size_t nbounds)
{
    if (nbounds > 0 && bounds == NULL)
        return false;
    for (size_t i = 0; i < nbounds; i++) {
        if (!isfinite(bounds[i]))
            return false;
        if (i > 0 && !(bounds[i] > bounds[i - 1]))
            return false;
    }
    return true;
}

struct metric_histogram *metrics_histogram(const char *name, const char *help, const double *bounds,
                                           size_t nbounds)
{
    struct metric_family *f;
    struct metric_histogram *h;

    if (!bounds_valid(bounds, nbounds)) {
        register_failed(name, "bounds must be finite and strictly increasing");
        return NULL;
    }
    f = family_get(name, help, KIND_HISTOGRAM);
    if (f == NULL)
        return NULL;
    if (f->histogram != NULL) {
        h = f->histogram;
        if (h->nbounds == nbounds &&
            (nbounds == 0 || memcmp(h->bounds, bounds, nbounds * sizeof *bounds) == 0))
            return h;
        register_failed(name, "already registered with other bounds");
        return NULL;
    }
    h = xcalloc(1, sizeof *h);
    h->family = f;
    h->nbounds = nbounds;
    h->bounds = xmalloc((nbounds > 0 ? nbounds : 1) * sizeof *h->bounds);
    if (nbounds > 0)
        memcpy(h->bounds, bounds, nbounds * sizeof *bounds);
    h->buckets = xmalloc((nbounds + 1) * sizeof *h->buckets);
    for (size_t i = 0; i <= nbounds; i++)
        atomic_init(&h->buckets[i], 0);
    atomic_init(&h->sum_bits, 0); /* the bits of +0.0 */
    f->histogram = h;
    return h;
}

static uint64_t double_bits(double d)
{
    uint64_t u;
    memcpy(&u, &d, sizeof u);
    return u;
}

static double bits_double(uint64_t u)
{
    double d;
    memcpy(&d, &u, sizeof d);
    return d;
}

void metric_histogram_observe(struct metric_histogram *h, double value)
{
    size_t lo = 0;
    size_t hi;
    uint64_t old;

    if (h == NULL || isnan(value))
        return;
    /* Binary search for the first bound >= value; nbounds when there is none (+Inf). */
    hi = h->nbounds;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (h->bounds[mid] >= value)
            hi = mid;
        else
            lo = mid + 1;
    }
    atomic_fetch_add_explicit(&h->buckets[lo], 1, memory_order_relaxed);
    old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old,
                                                  double_bits(bits_double(old) + value),
                                                  memory_order_relaxed, memory_order_relaxed)) {
        /* `old` now holds the value another thread stored: add to that instead. */
    }
}

static void register_fn(const char *name, const char *help, double (*fn)(void *), void *data,
                        enum metric_kind kind)
{
    struct metric_family *f;

    if (fn == NULL) {
        register_failed(name, "no function");
        return;
    }
    if (!name_valid(name)) {
        register_failed(name, "malformed name");
        return;
    }
    if (family_find(name) != NULL) {
        register_failed(name, "already registered");
        return;
    }
    f = family_add(name, help, kind);
    f->fn = fn;
    f->fn_data = data;
}

void metrics_gauge_fn(const char *name, const char *help, double (*fn)(void *), void *data)
{
    register_fn(name, help, fn, data, KIND_GAUGE_FN);
}

void metrics_counter_fn(const char *name, const char *help, double (*fn)(void *), void *data)
{
    register_fn(name, help, fn, data, KIND_COUNTER_FN);
}

/* Prometheus parses numbers with Go's ParseFloat, which takes any %g or %e output; we print
 * the fewest significant digits that read back to the same double ("0.25", never
 * "0.25000000000000000"), in plain notation from 1e-4 up to 1e15 so that bucket bounds and
 * integral sums look as people write them ("1000000", not "1e+06"). Below 1e15 every
 * integral double is exact, so widening the precision to show all integer digits cannot
 * change the value. Assumes the C locale for numbers, which codehub never changes. */
static void append_double(struct buf *b, double v)
{
    char tmp[48];
    int digits = 17;
    long exp10;

    if (isnan(v)) {
        buf_append_str(b, "NaN");
        return;
    }
    if (isinf(v)) {
        buf_append_str(b, v > 0 ? "+Inf" : "-Inf");
        return;
    }
    for (int p = 1; p <= 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, v);
        if (strtod(tmp, NULL) == v) {
            digits = p;
            break;
        }
    }
    snprintf(tmp, sizeof tmp, "%.*e", digits - 1, v);
    exp10 = strtol(strchr(tmp, 'e') + 1, NULL, 10);
    if (exp10 >= -4 && exp10 < 15) {
        int precision = digits > exp10 + 1 ? digits : (int)exp10 + 1;
        snprintf(tmp, sizeof tmp, "%.*g", precision, v);
    }
    buf_append_str(b, tmp);
}

static void append_help(struct buf *b, const char *name, const char *help)
{
    if (help[0] == '\0')
        return;
    buf_appendf(b, "# HELP %s ", name);
    for (const char *p = help; *p != '\0'; p++) {
        if (*p == '\\')
            buf_append_str(b, "\\\\");
        else if (*p == '\n')
            buf_append_str(b, "\\n");
        else
            buf_append_char(b, *p);
    }
    buf_append_char(b, '\n');
}

static void render_histogram(struct buf *out, const char *name, struct metric_histogram *h)
{
    uint64_t cumulative = 0;

    for (size_t i = 0; i <= h->nbounds; i++) {
        cumulative += atomic_load_explicit(&h->buckets[i], memory_order_relaxed);
        buf_appendf(out, "%s_bucket{le=\"", name);
        if (i < h->nbounds)
            append_double(out, h->bounds[i]);
        else
            buf_append_str(out, "+Inf");
        buf_appendf(out, "\"} %" PRIu64 "\n", cumulative);
    }
    buf_appendf(out, "%s_sum ", name);
    append_double(out, bits_double(atomic_load_explicit(&h->sum_bits, memory_order_relaxed)));
    buf_appendf(out, "\n%s_count %" PRIu64 "\n", name, cumulative);
}

void metrics_render(struct buf *out)
{
    for (struct metric_family *f = families; f != NULL; f = f->next) {
        append_help(out, f->name, f->help);
        buf_appendf(out, "# TYPE %s %s\n", f->name, kind_names[f->kind]);
        switch (f->kind) {
        case KIND_COUNTER:
        case KIND_GAUGE:
            for (struct metric *m = f->series; m != NULL; m = m->next) {
                buf_append_str(out, f->name);
                if (m->labels != NULL)
                    buf_appendf(out, "{%s}", m->labels);
                buf_appendf(out, " %" PRId64 "\n", metric_get(m));
            }
            break;
        case KIND_HISTOGRAM:
            render_histogram(out, f->name, f->histogram);
            break;
        case KIND_GAUGE_FN:
        case KIND_COUNTER_FN:
            buf_appendf(out, "%s ", f->name);
            append_double(out, f->fn(f->fn_data));
            buf_append_char(out, '\n');
            break;
        }
    }
}

void metrics_reset_for_tests(void)
{
    struct metric_family *f = families;

    while (f != NULL) {
        struct metric_family *next_family = f->next;
        struct metric *m = f->series;
        while (m != NULL) {
            struct metric *next = m->next;
            free(m->labels);
            free(m);
            m = next;
        }
        if (f->histogram != NULL) {
            free(f->histogram->bounds);
            free((void *)f->histogram->buckets);
            free(f->histogram);
        }
        free(f->name);
        free(f->help);
        free(f);
        f = next_family;
    }
    families = NULL;
    families_tail = NULL;
}
