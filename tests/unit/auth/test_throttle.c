#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "auth/throttle.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

#define MIN15 (15 * 60 * 1000LL)

static void test_new_rejects_bad_arguments(void **state)
{
    assert_null(auth_throttle_new(3, 60000, 0));
    assert_null(auth_throttle_new(3, -1, 100));
    struct auth_throttle *t = auth_throttle_new(0, 0, 1);
    assert_non_null(t);
    auth_throttle_free(t);
    auth_throttle_free(NULL);
}

static void test_null_is_harmless(void **state)
{
    struct auth_throttle *t = auth_throttle_new(3, 60000, 10);

    assert_int_equal(auth_throttle_check(NULL, "user:ann", 0), 0);
    auth_throttle_fail(NULL, "user:ann", 0);
    auth_throttle_succeed(NULL, "user:ann");
    assert_int_equal(auth_throttle_size(NULL), 0);
    assert_int_equal(auth_throttle_check(t, NULL, 0), 0);
    auth_throttle_fail(t, NULL, 0);
    auth_throttle_succeed(t, NULL);
    assert_int_equal(auth_throttle_size(t), 0);
    /* Unknown keys: nothing to wait for, nothing stored by a check. */
    assert_int_equal(auth_throttle_check(t, "user:nobody", 0), 0);
    auth_throttle_succeed(t, "user:nobody");
    assert_int_equal(auth_throttle_size(t), 0);
    auth_throttle_free(t);
}

static void test_delays_grow_and_cap(void **state)
{
    struct auth_throttle *t = auth_throttle_new(3, 60000, 100);
    /* Wait after the n-th failure, n = 1.., with 3 free attempts and a 60 s cap. */
    static const int64_t expected[] = {0,     0,     1000,  2000,  4000, 8000,
                                       16000, 32000, 60000, 60000, 60000};
    int64_t now = 1000000;

    for (size_t i = 0; i < sizeof expected / sizeof expected[0]; i++) {
        assert_int_equal(auth_throttle_check(t, "user:ann", now), 0);
        auth_throttle_fail(t, "user:ann", now);
        assert_int_equal(auth_throttle_check(t, "user:ann", now), expected[i]);
        if (expected[i] > 0) {
            /* The wait counts down, and ends exactly on time. */
            assert_int_equal(auth_throttle_check(t, "user:ann", now + expected[i] / 2),
                             expected[i] - expected[i] / 2);
            assert_int_equal(auth_throttle_check(t, "user:ann", now + expected[i] - 1), 1);
        }
        now += expected[i];
    }
    /* Keys are independent. */
    assert_int_equal(auth_throttle_check(t, "user:bob", now), 0);
    assert_int_equal(auth_throttle_check(t, "addr:10.0.0.1", now), 0);
    assert_int_equal(auth_throttle_size(t), 1);
    auth_throttle_free(t);
}

static void test_zero_free_attempts(void **state)
{
    struct auth_throttle *t = auth_throttle_new(0, 10000, 100);

    auth_throttle_fail(t, "k", 0);
    assert_int_equal(auth_throttle_check(t, "k", 0), 2000);
    auth_throttle_fail(t, "k", 2000);
    assert_int_equal(auth_throttle_check(t, "k", 2000), 4000);
    auth_throttle_free(t);
}

static void test_huge_failure_counts_do_not_overflow(void **state)
{
    struct auth_throttle *t = auth_throttle_new(1, 1000000000LL, 10);

    for (int i = 0; i < 200; i++)
        auth_throttle_fail(t, "k", 0);
    assert_int_equal(auth_throttle_check(t, "k", 0), 1000000000LL);
    auth_throttle_free(t);
}

static void test_zero_max_delay_never_waits(void **state)
{
    struct auth_throttle *t = auth_throttle_new(0, 0, 10);

    for (int i = 0; i < 50; i++)
        auth_throttle_fail(t, "k", 0);
    assert_int_equal(auth_throttle_check(t, "k", 0), 0);
    auth_throttle_free(t);
}

static void test_success_resets(void **state)
{
    struct auth_throttle *t = auth_throttle_new(2, 60000, 100);

    for (int i = 0; i < 5; i++)
        auth_throttle_fail(t, "user:ann", 0);
    auth_throttle_fail(t, "user:bob", 0);
    assert_int_equal(auth_throttle_check(t, "user:ann", 0), 8000);
    assert_int_equal(auth_throttle_size(t), 2);
    auth_throttle_succeed(t, "user:ann");
    assert_int_equal(auth_throttle_size(t), 1);
    assert_int_equal(auth_throttle_check(t, "user:ann", 0), 0);
    /* Counting starts over: the first failure is free again. */
    auth_throttle_fail(t, "user:ann", 0);
    assert_int_equal(auth_throttle_check(t, "user:ann", 0), 0);
    auth_throttle_fail(t, "user:ann", 0);
    assert_int_equal(auth_throttle_check(t, "user:ann", 0), 1000);
    auth_throttle_free(t);
}

static void test_decay_after_15_minutes(void **state)
{
    struct auth_throttle *t = auth_throttle_new(2, 10000, 100);

    auth_throttle_fail(t, "user:ann", 0);
    auth_throttle_fail(t, "user:ann", 0);
    assert_int_equal(auth_throttle_check(t, "user:ann", 0), 1000);
    /* Exactly 15 minutes old is not yet "older than" 15 minutes. */
    assert_int_equal(auth_throttle_check(t, "user:ann", MIN15), 0);
    assert_int_equal(auth_throttle_size(t), 1);
    auth_throttle_fail(t, "user:ann", MIN15);
    assert_int_equal(auth_throttle_check(t, "user:ann", MIN15), 2000);
    /* One millisecond past the window after that last failure: forgotten. */
    assert_int_equal(auth_throttle_check(t, "user:ann", 2 * MIN15 + 1), 0);
    assert_int_equal(auth_throttle_size(t), 0);
    /* And counting restarts at one failure, which is free. */
    auth_throttle_fail(t, "user:ann", 2 * MIN15 + 1);
    assert_int_equal(auth_throttle_check(t, "user:ann", 2 * MIN15 + 1), 0);
    auth_throttle_free(t);
}

static void test_decay_without_a_check(void **state)
{
    struct auth_throttle *t = auth_throttle_new(2, 10000, 100);

    auth_throttle_fail(t, "user:ann", 0);
    auth_throttle_fail(t, "user:ann", 0);
    /* A failure long after the previous one counts as the first. */
    auth_throttle_fail(t, "user:ann", MIN15 + 1);
    assert_int_equal(auth_throttle_check(t, "user:ann", MIN15 + 1), 0);
    auth_throttle_free(t);
}

static void test_decay_follows_a_long_max_delay(void **state)
{
    const int64_t hour = 3600 * 1000LL;
    struct auth_throttle *t = auth_throttle_new(0, hour, 100);

    for (int i = 0; i < 30; i++)
        auth_throttle_fail(t, "user:ann", 0);
    assert_int_equal(auth_throttle_check(t, "user:ann", 0), hour);
    /* Past 15 minutes the lockout still holds: the window is the longer max delay. */
    assert_int_equal(auth_throttle_check(t, "user:ann", MIN15 + 1), hour - MIN15 - 1);
    assert_int_equal(auth_throttle_size(t), 1);
    assert_int_equal(auth_throttle_check(t, "user:ann", hour), 0);
    assert_int_equal(auth_throttle_size(t), 1);
    assert_int_equal(auth_throttle_check(t, "user:ann", hour + 1), 0);
    assert_int_equal(auth_throttle_size(t), 0);
    auth_throttle_free(t);
}

static void test_expired_entries_are_swept_by_other_keys(void **state)
{
    struct auth_throttle *t = auth_throttle_new(0, 1000, 100);

    for (int i = 0; i < 50; i++) {
        char key[32];
        snprintf(key, sizeof key, "user:u%d", i);
        auth_throttle_fail(t, key, i);
    }
    assert_int_equal(auth_throttle_size(t), 50);
    /* Touching one unrelated key after the window drops all the stale ones. */
    assert_int_equal(auth_throttle_check(t, "addr:1.2.3.4", MIN15 + 50), 0);
    assert_int_equal(auth_throttle_size(t), 0);
    auth_throttle_free(t);
}

static void test_eviction_oldest_first(void **state)
{
    struct auth_throttle *t = auth_throttle_new(0, 60000, 3);

    auth_throttle_fail(t, "a", 0);
    auth_throttle_fail(t, "b", 1);
    auth_throttle_fail(t, "c", 2);
    /* A new failure for "a" makes it the most recent; "b" is now the oldest. */
    auth_throttle_fail(t, "a", 3);
    auth_throttle_fail(t, "d", 4);
    assert_int_equal(auth_throttle_size(t), 3);
    assert_int_equal(auth_throttle_check(t, "a", 4), 4000 + 3 - 4);
    assert_int_equal(auth_throttle_check(t, "b", 4), 0);
    assert_int_equal(auth_throttle_check(t, "c", 4), 2000 + 2 - 4);
    assert_int_equal(auth_throttle_check(t, "d", 4), 2000);
    auth_throttle_free(t);
}

static void test_eviction_expired_first(void **state)
{
    struct auth_throttle *t = auth_throttle_new(0, 60000, 3);

    auth_throttle_fail(t, "a", 0);
    auth_throttle_fail(t, "b", 10);
    auth_throttle_fail(t, "c", MIN15 + 5);
    /* At MIN15 + 11 both "a" and "b" have expired: both go, nothing live is evicted. */
    auth_throttle_fail(t, "d", MIN15 + 11);
    assert_int_equal(auth_throttle_size(t), 2);
    assert_int_equal(auth_throttle_check(t, "c", MIN15 + 11), 2000 - 6);
    auth_throttle_fail(t, "c", MIN15 + 12);
    /* Two failures for c: 4 s. Had c been evicted it would be 2 s. */
    assert_int_equal(auth_throttle_check(t, "c", MIN15 + 12), 4000);
    assert_int_equal(auth_throttle_check(t, "d", MIN15 + 12), 2000 - 1);
    auth_throttle_free(t);
}

static void test_spray_stays_bounded(void **state)
{
    enum { MAX = 1000, KEYS = 100000 };
    struct auth_throttle *t = auth_throttle_new(0, 60000, MAX);
    char key[32];

    for (int i = 0; i < KEYS; i++) {
        snprintf(key, sizeof key, "user:spray%d", i);
        auth_throttle_fail(t, key, i / 100);
        if (i % 997 == 0)
            assert_true(auth_throttle_size(t) <= MAX);
    }
    assert_int_equal(auth_throttle_size(t), MAX);
    /* The newest keys are held, the oldest were pushed out. */
    snprintf(key, sizeof key, "user:spray%d", KEYS - 1);
    assert_true(auth_throttle_check(t, key, KEYS / 100) > 0);
    snprintf(key, sizeof key, "user:spray%d", KEYS - MAX);
    assert_true(auth_throttle_check(t, key, KEYS / 100) > 0);
    snprintf(key, sizeof key, "user:spray%d", KEYS - MAX - 1);
    assert_int_equal(auth_throttle_check(t, key, KEYS / 100), 0);
    snprintf(key, sizeof key, "user:spray%d", 0);
    assert_int_equal(auth_throttle_check(t, key, KEYS / 100), 0);
    auth_throttle_free(t);
}

static void test_long_keys(void **state)
{
    static char a[100000];
    static char b[100000];
    struct auth_throttle *t = auth_throttle_new(0, 60000, 10);

    /* Long keys that differ only at the very end stay distinct. */
    memset(a, 'x', sizeof a - 1);
    memset(b, 'x', sizeof b - 1);
    b[sizeof b - 2] = 'y';
    auth_throttle_fail(t, a, 0);
    assert_int_equal(auth_throttle_check(t, a, 0), 2000);
    assert_int_equal(auth_throttle_check(t, b, 0), 0);
    auth_throttle_free(t);
}

enum { SHARED_THREADS = 4, SHARED_FAILS = 20000 };

struct shared_args {
    struct auth_throttle *t;
    pthread_barrier_t *start;
    int id;
};

static void *fail_shared_key(void *arg)
{
    struct shared_args *a = arg;
    /* Start together, so the threads really contend instead of running one after another. */
    pthread_barrier_wait(a->start);
    for (int i = 0; i < SHARED_FAILS; i++)
        auth_throttle_fail(a->t, "user:shared", 0);
    return NULL;
}

static void test_threads_count_exactly(void **state)
{
    /* 4 threads × 20000 failures = 80000 = free attempts: exactly a 1 s wait. One lost
     * update would leave 0, one counted twice would give 2 s. */
    struct auth_throttle *t = auth_throttle_new(SHARED_THREADS * SHARED_FAILS, 60000, 10);
    pthread_t th[SHARED_THREADS];
    struct shared_args args[SHARED_THREADS];
    pthread_barrier_t start;

    assert_int_equal(pthread_barrier_init(&start, NULL, SHARED_THREADS), 0);
    for (int i = 0; i < SHARED_THREADS; i++) {
        args[i] = (struct shared_args){t, &start, i};
        assert_int_equal(pthread_create(&th[i], NULL, fail_shared_key, &args[i]), 0);
    }
    for (int i = 0; i < SHARED_THREADS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    pthread_barrier_destroy(&start);
    assert_int_equal(auth_throttle_check(t, "user:shared", 0), 1000);
    auth_throttle_free(t);
}

static void *hammer(void *arg)
{
    struct shared_args *a = arg;
    char key[32];
    pthread_barrier_wait(a->start);
    uint32_t x = 2463534242u + (uint32_t)a->id;

    for (int i = 0; i < 50000; i++) {
        /* xorshift: a cheap private sequence per thread. */
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        snprintf(key, sizeof key, "%s:%u", (x & 1) ? "user" : "addr", (x >> 1) % 700);
        int64_t now = i / 10;
        switch ((x >> 20) % 4) {
        case 0:
        case 1:
            auth_throttle_fail(a->t, key, now);
            break;
        case 2:
            (void)auth_throttle_check(a->t, key, now);
            break;
        default:
            auth_throttle_succeed(a->t, key);
            break;
        }
        if (i % 1000 == 0 && auth_throttle_size(a->t) > 100)
            return (void *)1;
    }
    return NULL;
}

static void test_threads_hammering(void **state)
{
    struct auth_throttle *t = auth_throttle_new(3, 60000, 100);
    pthread_t th[4];
    struct shared_args args[4];
    pthread_barrier_t start;

    assert_int_equal(pthread_barrier_init(&start, NULL, 4), 0);
    for (int i = 0; i < 4; i++) {
        args[i] = (struct shared_args){t, &start, i};
        assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
        void *res = (void *)1;
        assert_int_equal(pthread_join(th[i], &res), 0);
        assert_null(res);
    }
    pthread_barrier_destroy(&start);
    assert_true(auth_throttle_size(t) <= 100);
    auth_throttle_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_new_rejects_bad_arguments),
        cmocka_unit_test(test_null_is_harmless),
        cmocka_unit_test(test_delays_grow_and_cap),
        cmocka_unit_test(test_zero_free_attempts),
        cmocka_unit_test(test_huge_failure_counts_do_not_overflow),
        cmocka_unit_test(test_zero_max_delay_never_waits),
        cmocka_unit_test(test_success_resets),
        cmocka_unit_test(test_decay_after_15_minutes),
        cmocka_unit_test(test_decay_without_a_check),
        cmocka_unit_test(test_decay_follows_a_long_max_delay),
        cmocka_unit_test(test_expired_entries_are_swept_by_other_keys),
        cmocka_unit_test(test_eviction_oldest_first),
        cmocka_unit_test(test_eviction_expired_first),
        cmocka_unit_test(test_spray_stays_bounded),
        cmocka_unit_test(test_long_keys),
        cmocka_unit_test(test_threads_count_exactly),
        cmocka_unit_test(test_threads_hammering),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
