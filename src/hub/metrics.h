/* A tiny Prometheus registry: counters, gauges, histograms and computed gauges, rendered in
 * the text exposition format 0.0.4 for /hub/metrics.
 *
 * Threading: registration (metrics_counter(), metrics_gauge(), metrics_histogram(),
 * metrics_gauge_fn()) changes the registry without a lock and is meant for start-up, before
 * any other thread runs or any scrape happens; metrics_reset_for_tests() likewise. Updates
 * (metric_add(), metric_set(), metric_histogram_observe()), metric_get() and
 * metrics_render() are thread-safe and lock-free: values are C11 atomics, so the event loop
 * and the thread pool can update them at any rate without contention on a lock.
 *
 * A metric name is [a-zA-Z_:][a-zA-Z0-9_:]*. Labels are fixed when a series is defined: one
 * struct metric per label combination, given as the text that goes between the braces,
 * e.g. "class=\"2xx\"" or "method=\"GET\",class=\"5xx\"" (values escaped by the caller as
 * the format wants: \\, \" and \n). Several label sets of one name share one HELP/TYPE
 * block; the first registration's help text is the one shown.
 *
 * Everything registered lives until metrics_reset_for_tests(), which main also calls at
 * shutdown; the pointers returned stay valid until then and are never freed by callers. */
#ifndef CODEHUB_HUB_METRICS_H
#define CODEHUB_HUB_METRICS_H

#include "core/buf.h"

#include <stddef.h>
#include <stdint.h>

struct metric;
struct metric_histogram;

/* Returns the counter series `name`{`labels`} (labels NULL or "" for none), created at 0
 * on first use; registering the same name and labels again returns the same series.
 * Returns NULL (and logs why) when the name or labels are malformed or `name` is already
 * registered as another type. Owned by the registry. */
struct metric *metrics_counter(const char *name, const char *help, const char *labels);

/* As metrics_counter(), for a gauge. */
struct metric *metrics_gauge(const char *name, const char *help, const char *labels);

/* Adds `delta` to a counter or gauge. Counters only go up: a negative delta on a counter is
 * ignored. A NULL metric is ignored, so a failed registration cannot crash a hot path. */
void metric_add(struct metric *m, int64_t delta);

/* Sets a gauge to `value`. Ignored for a counter (it would break monotonicity) and for
 * NULL. */
void metric_set(struct metric *m, int64_t value);

/* Returns the current value of a counter or gauge; 0 for NULL. */
int64_t metric_get(const struct metric *m);

/* Returns the histogram `name` with the `nbounds` upper bounds `bounds` (finite, strictly
 * increasing; copied; +Inf is implicit and must not be listed), created empty. Registering
 * the same name with the same bounds again returns the same histogram. Returns NULL (and
 * logs why) for a malformed name, bad bounds, or a name already registered otherwise.
 * Histograms carry no labels. Owned by the registry. */
struct metric_histogram *metrics_histogram(const char *name, const char *help, const double *bounds,
                                           size_t nbounds);

/* Counts `value` into the first bucket whose bound is >= value (the +Inf bucket when none
 * is), and adds it to the sum. NaN is ignored (it would poison the sum for good); so is a
 * NULL histogram. */
void metric_histogram_observe(struct metric_histogram *h, double value);

/* Registers a gauge whose value is fn(data), called on every render from the rendering
 * thread: `fn` must be thread-safe and quick, and `data` must outlive the registry.
 * A malformed or already registered name, or a NULL fn, is logged and ignored. */
void metrics_gauge_fn(const char *name, const char *help, double (*fn)(void *), void *data);
/* The same for a counter whose value a function computes (it must never decrease). */
void metrics_counter_fn(const char *name, const char *help, double (*fn)(void *), void *data);

/* Appends every registered metric to `out` in the Prometheus text format 0.0.4, in
 * registration order (series in registration order within a name). Serve it with
 * Content-Type "text/plain; version=0.0.4; charset=utf-8". */
void metrics_render(struct buf *out);

/* Frees every registered metric; pointers handed out before become invalid. For tests and
 * shutdown, when no other thread can touch the registry. */
void metrics_reset_for_tests(void);

#endif
