#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "hub/metrics.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int reset(void **state)
{
    metrics_reset_for_tests();
    return 0;
}

static char *render(void)
{
    struct buf b = BUF_INIT;
    metrics_render(&b);
    return buf_steal(&b);
}

static void expect_render(const char *expected)
{
    char *text = render();
    assert_string_equal(text, expected);
    free(text);
}

static double read_double(void *data)
{
    return *(double *)data;
}

static void test_empty_registry(void **state)
{
    expect_render("");
}

static void test_small_registry_exact(void **state)
{
    static const double bounds[] = {0.125, 0.5, 1};
    double uptime = 12.5;

    struct metric *ok =
        metrics_counter("codehub_http_requests_total", "HTTP requests served.", "class=\"2xx\"");
    struct metric *bad =
        metrics_counter("codehub_http_requests_total", "Help given twice.", "class=\"5xx\"");
    struct metric *running = metrics_gauge("codehub_servers_running", "Servers running.", NULL);
    struct metric_histogram *spawn =
        metrics_histogram("codehub_spawn_seconds", "Time to start a server.", bounds, 3);
    metrics_gauge_fn("codehub_uptime_seconds", "Seconds since start.", read_double, &uptime);
    assert_non_null(ok);
    assert_non_null(bad);
    assert_non_null(running);
    assert_non_null(spawn);

    metric_add(ok, 3);
    metric_add(bad, 1);
    metric_set(running, 5);
    metric_add(running, -7);
    metric_histogram_observe(spawn, 0.125); /* on a bound: counts in that bucket */
    metric_histogram_observe(spawn, 0.25);
    metric_histogram_observe(spawn, 0.5);
    metric_histogram_observe(spawn, 0.75);
    metric_histogram_observe(spawn, 4);

    expect_render("# HELP codehub_http_requests_total HTTP requests served.\n"
                  "# TYPE codehub_http_requests_total counter\n"
                  "codehub_http_requests_total{class=\"2xx\"} 3\n"
                  "codehub_http_requests_total{class=\"5xx\"} 1\n"
                  "# HELP codehub_servers_running Servers running.\n"
                  "# TYPE codehub_servers_running gauge\n"
                  "codehub_servers_running -2\n"
                  "# HELP codehub_spawn_seconds Time to start a server.\n"
                  "# TYPE codehub_spawn_seconds histogram\n"
                  "codehub_spawn_seconds_bucket{le=\"0.125\"} 1\n"
                  "codehub_spawn_seconds_bucket{le=\"0.5\"} 3\n"
                  "codehub_spawn_seconds_bucket{le=\"1\"} 4\n"
                  "codehub_spawn_seconds_bucket{le=\"+Inf\"} 5\n"
                  "codehub_spawn_seconds_sum 5.625\n"
                  "codehub_spawn_seconds_count 5\n"
                  "# HELP codehub_uptime_seconds Seconds since start.\n"
                  "# TYPE codehub_uptime_seconds gauge\n"
                  "codehub_uptime_seconds 12.5\n");

    /* Computed gauges are read at every render. */
    uptime = 13;
    metric_add(ok, 1);
    char *text = render();
    assert_non_null(strstr(text, "\ncodehub_uptime_seconds 13\n"));
    assert_non_null(strstr(text, "\ncodehub_http_requests_total{class=\"2xx\"} 4\n"));
    free(text);
}

static void test_histogram_cumulative_buckets(void **state)
{
    static const double bounds[] = {1, 2, 3, 4};
    struct metric_histogram *h = metrics_histogram("h", "", bounds, 4);

    /* 0 in (−inf,1], 3 in (1,2], none in (2,3], 2 in (3,4], 1 above. */
    metric_histogram_observe(h, -5);
    metric_histogram_observe(h, 1.5);
    metric_histogram_observe(h, 2);
    metric_histogram_observe(h, 1.000001);
    metric_histogram_observe(h, 3.5);
    metric_histogram_observe(h, 4);
    metric_histogram_observe(h, 100);
    metric_histogram_observe(h, NAN); /* ignored */
    /* No help text: no HELP line. */
    expect_render("# TYPE h histogram\n"
                  "h_bucket{le=\"1\"} 1\n"
                  "h_bucket{le=\"2\"} 4\n"
                  "h_bucket{le=\"3\"} 4\n"
                  "h_bucket{le=\"4\"} 6\n"
                  "h_bucket{le=\"+Inf\"} 7\n"
                  "h_sum 107.000001\n"
                  "h_count 7\n");
}

static void test_histogram_formats_and_edges(void **state)
{
    static const double bounds[] = {0.005, 0.1, 2.5, 10, 1e6};
    struct metric_histogram *h = metrics_histogram("lat", "Latency.", bounds, 5);
    struct metric_histogram *none = metrics_histogram("none", "No bounds.", NULL, 0);

    metric_histogram_observe(none, 1);
    metric_histogram_observe(none, INFINITY);
    expect_render("# HELP lat Latency.\n"
                  "# TYPE lat histogram\n"
                  "lat_bucket{le=\"0.005\"} 0\n"
                  "lat_bucket{le=\"0.1\"} 0\n"
                  "lat_bucket{le=\"2.5\"} 0\n"
                  "lat_bucket{le=\"10\"} 0\n"
                  "lat_bucket{le=\"1000000\"} 0\n"
                  "lat_bucket{le=\"+Inf\"} 0\n"
                  "lat_sum 0\n"
                  "lat_count 0\n"
                  "# HELP none No bounds.\n"
                  "# TYPE none histogram\n"
                  "none_bucket{le=\"+Inf\"} 2\n"
                  "none_sum +Inf\n"
                  "none_count 2\n");
    metric_histogram_observe(NULL, 1);
    assert_non_null(h);
}

static void test_number_format(void **state)
{
    static const struct {
        double v;
        const char *text;
    } cases[] = {
        {0, "0"},
        {0.1, "0.1"},
        {-0.25, "-0.25"},
        {1.0 / 3, "0.3333333333333333"},
        {123456.789, "123456.789"},
        {0.0001, "0.0001"},
        {0.00001, "1e-05"},
        {999999999999999.0, "999999999999999"},
        {1e15, "1e+15"},
        {1.5e20, "1.5e+20"},
        {-7e300, "-7e+300"},
        {5e-324, "5e-324"},
        {NAN, "NaN"},
        {INFINITY, "+Inf"},
        {-INFINITY, "-Inf"},
    };
    double values[sizeof cases / sizeof cases[0]];
    char name[16];
    char line[64];

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        values[i] = cases[i].v;
        snprintf(name, sizeof name, "n%zu", i);
        metrics_gauge_fn(name, "", read_double, &values[i]);
    }
    char *text = render();
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(line, sizeof line, "\nn%zu %s\n", i, cases[i].text);
        if (strstr(text, line) == NULL)
            fail_msg("missing line \"n%zu %s\" in:\n%s", i, cases[i].text, text);
    }
    free(text);
}

static void test_help_escaping(void **state)
{
    metrics_gauge("g", "Line one\nand a \\ backslash \"quoted\".",
                  "path=\"/a\\\\b\",q=\"\\\"x\\\"\"");
    expect_render("# HELP g Line one\\nand a \\\\ backslash \"quoted\".\n"
                  "# TYPE g gauge\n"
                  "g{path=\"/a\\\\b\",q=\"\\\"x\\\"\"} 0\n");
}

static void test_reregistration(void **state)
{
    static const double b1[] = {1, 2};
    static const double b2[] = {1, 3};

    struct metric *a = metrics_counter("c_total", "C.", "k=\"v\"");
    assert_ptr_equal(metrics_counter("c_total", "C.", "k=\"v\""), a);
    struct metric *plain = metrics_counter("c_total", "C.", NULL);
    assert_ptr_not_equal(plain, a);
    assert_ptr_equal(metrics_counter("c_total", "C.", ""), plain);
    /* Another type under a taken name. */
    assert_null(metrics_gauge("c_total", "C.", NULL));
    assert_null(metrics_histogram("c_total", "C.", b1, 2));
    metrics_gauge_fn("c_total", "C.", read_double, NULL);

    struct metric_histogram *h = metrics_histogram("h_seconds", "H.", b1, 2);
    assert_non_null(h);
    assert_ptr_equal(metrics_histogram("h_seconds", "H.", b1, 2), h);
    assert_null(metrics_histogram("h_seconds", "H.", b2, 2));
    assert_null(metrics_histogram("h_seconds", "H.", b1, 1));
    assert_null(metrics_counter("h_seconds", "H.", NULL));

    double v = 1;
    metrics_gauge_fn("fn", "F.", read_double, &v);
    metrics_gauge_fn("fn", "F again.", read_double, &v);
    assert_null(metrics_counter("fn", "F.", NULL));

    metric_add(a, 2);
    expect_render("# HELP c_total C.\n"
                  "# TYPE c_total counter\n"
                  "c_total{k=\"v\"} 2\n"
                  "c_total 0\n"
                  "# HELP h_seconds H.\n"
                  "# TYPE h_seconds histogram\n"
                  "h_seconds_bucket{le=\"1\"} 0\n"
                  "h_seconds_bucket{le=\"2\"} 0\n"
                  "h_seconds_bucket{le=\"+Inf\"} 0\n"
                  "h_seconds_sum 0\n"
                  "h_seconds_count 0\n"
                  "# HELP fn F.\n"
                  "# TYPE fn gauge\n"
                  "fn 1\n");
}

static void test_bad_names_and_labels(void **state)
{
    static const double inc[] = {1, 2};
    static const double flat[] = {1, 1};
    static const double down[] = {2, 1};
    double with_nan[] = {1, NAN};
    double with_inf[] = {1, INFINITY};

    assert_null(metrics_counter(NULL, "x", NULL));
    assert_null(metrics_counter("", "x", NULL));
    assert_null(metrics_counter("1abc", "x", NULL));
    assert_null(metrics_counter("a-b", "x", NULL));
    assert_null(metrics_counter("a b", "x", NULL));
    assert_non_null(metrics_counter("ns:sub_name_2", "x", NULL));
    assert_non_null(metrics_counter("_x", "x", NULL));

    assert_null(metrics_counter("l", "x", "class=2xx"));
    assert_null(metrics_counter("l", "x", "class=\"2xx"));
    assert_null(metrics_counter("l", "x", "=\"x\""));
    assert_null(metrics_counter("l", "x", "1a=\"x\""));
    assert_null(metrics_counter("l", "x", "a:b=\"x\""));
    assert_null(metrics_counter("l", "x", "a=\"x\"b=\"y\""));
    assert_null(metrics_counter("l", "x", "a=\"x\","));
    assert_null(metrics_counter("l", "x", "a=\"\\q\""));
    assert_null(metrics_counter("l", "x", "a=\"line\nbreak\""));
    assert_null(metrics_counter("l", "x", "a=\"x\\\""));
    assert_non_null(metrics_counter("l", "x", "a=\"\",b_2=\"y z\""));

    assert_non_null(metrics_histogram("hist_ok", "x", inc, 2));
    assert_null(metrics_histogram("hist_flat", "x", flat, 2));
    assert_null(metrics_histogram("hist_down", "x", down, 2));
    assert_null(metrics_histogram("hist_nan", "x", with_nan, 2));
    assert_null(metrics_histogram("hist_inf", "x", with_inf, 2));
    assert_null(metrics_histogram("hist_null", "x", NULL, 2));
    assert_null(metrics_histogram("bad name", "x", inc, 2));

    metrics_gauge_fn("bad name", "x", read_double, NULL);
    metrics_gauge_fn("no_fn", "x", NULL, NULL);

    /* Nothing that failed shows up; failed names did not leave empty families behind. */
    char *text = render();
    assert_null(strstr(text, "hist_flat"));
    assert_null(strstr(text, "hist_nan"));
    assert_null(strstr(text, "no_fn"));
    assert_null(strstr(text, "1abc"));
    assert_non_null(strstr(text, "l{a=\"\",b_2=\"y z\"} 0\n"));
    free(text);
}

static void test_counter_and_gauge_rules(void **state)
{
    struct metric *c = metrics_counter("c_total", "C.", NULL);
    struct metric *g = metrics_gauge("g", "G.", NULL);

    metric_add(c, 5);
    metric_add(c, -3); /* counters never go down */
    metric_set(c, 1);  /* nor are they set */
    assert_int_equal(metric_get(c), 5);
    metric_add(c, 0);
    assert_int_equal(metric_get(c), 5);

    metric_set(g, 10);
    metric_add(g, -15);
    assert_int_equal(metric_get(g), -5);
    metric_set(g, INT64_MAX);
    assert_int_equal(metric_get(g), INT64_MAX);
    metric_set(g, INT64_MIN);
    char *text = render();
    assert_non_null(strstr(text, "\ng -9223372036854775808\n"));
    free(text);

    metric_add(NULL, 1);
    metric_set(NULL, 1);
    assert_int_equal(metric_get(NULL), 0);
}

struct worker {
    struct metric *counter;
    struct metric *gauge;
    struct metric_histogram *hist;
    int id;
};

enum { THREADS = 8, ITERATIONS = 100000 };

static void *update_worker(void *arg)
{
    struct worker *w = arg;
    for (int i = 0; i < ITERATIONS; i++) {
        metric_add(w->counter, 1);
        metric_add(w->gauge, 1);
        metric_add(w->gauge, -1);
        /* Multiples of 0.25 add up exactly in a double at these magnitudes. */
        metric_histogram_observe(w->hist, (double)(i % 8) * 0.25);
    }
    return NULL;
}

static void *render_worker(void *arg)
{
    int *stop = arg;
    while (!__atomic_load_n(stop, __ATOMIC_ACQUIRE)) {
        char *text = render();
        /* Mid-flight, _count always equals the +Inf bucket. */
        const char *inf = strstr(text, "conc_seconds_bucket{le=\"+Inf\"} ");
        const char *count = strstr(text, "conc_seconds_count ");
        if (inf == NULL || count == NULL ||
            strtoull(inf + strlen("conc_seconds_bucket{le=\"+Inf\"} "), NULL, 10) !=
                strtoull(count + strlen("conc_seconds_count "), NULL, 10))
            abort();
        free(text);
    }
    return NULL;
}

static void test_concurrent_updates_sum_exactly(void **state)
{
    static const double bounds[] = {0.5, 1};
    struct worker w[THREADS];
    pthread_t th[THREADS];
    pthread_t renderer;
    int stop = 0;
    struct metric *counter = metrics_counter("conc_total", "C.", NULL);
    struct metric *gauge = metrics_gauge("conc_gauge", "G.", NULL);
    struct metric_histogram *hist = metrics_histogram("conc_seconds", "H.", bounds, 2);

    assert_int_equal(pthread_create(&renderer, NULL, render_worker, &stop), 0);
    for (int i = 0; i < THREADS; i++) {
        w[i] = (struct worker){counter, gauge, hist, i};
        assert_int_equal(pthread_create(&th[i], NULL, update_worker, &w[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    assert_int_equal(pthread_join(renderer, NULL), 0);

    assert_int_equal(metric_get(counter), (int64_t)THREADS * ITERATIONS);
    assert_int_equal(metric_get(gauge), 0);
    /* Per thread: values 0, .25, .5 fall in le=0.5 (3 of 8), .75 and 1 in le=1 (2 of 8),
     * 1.25..1.75 above (3 of 8); the sum of one round of 8 is 7. */
    expect_render("# HELP conc_total C.\n"
                  "# TYPE conc_total counter\n"
                  "conc_total 800000\n"
                  "# HELP conc_gauge G.\n"
                  "# TYPE conc_gauge gauge\n"
                  "conc_gauge 0\n"
                  "# HELP conc_seconds H.\n"
                  "# TYPE conc_seconds histogram\n"
                  "conc_seconds_bucket{le=\"0.5\"} 300000\n"
                  "conc_seconds_bucket{le=\"1\"} 500000\n"
                  "conc_seconds_bucket{le=\"+Inf\"} 800000\n"
                  "conc_seconds_sum 700000\n"
                  "conc_seconds_count 800000\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_empty_registry, reset),
        cmocka_unit_test_teardown(test_small_registry_exact, reset),
        cmocka_unit_test_teardown(test_histogram_cumulative_buckets, reset),
        cmocka_unit_test_teardown(test_histogram_formats_and_edges, reset),
        cmocka_unit_test_teardown(test_number_format, reset),
        cmocka_unit_test_teardown(test_help_escaping, reset),
        cmocka_unit_test_teardown(test_reregistration, reset),
        cmocka_unit_test_teardown(test_bad_names_and_labels, reset),
        cmocka_unit_test_teardown(test_counter_and_gauge_rules, reset),
        cmocka_unit_test_teardown(test_concurrent_updates_sum_exactly, reset),
    };
    return cmocka_run_group_tests(tests, NULL, reset);
}
