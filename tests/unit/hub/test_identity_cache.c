#include "hub/identity_cache.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

static struct hub_identity ident(const char *name)
{
    struct hub_identity id;
    memset(&id, 0, sizeof id);
    id.via = HUB_AUTH_SESSION;
    snprintf(id.name, sizeof id.name, "%s", name);
    return id;
}

/* Keys sharing their first 16 hex digits land in the same slot: the worst case for
 * linear probing and for deletion. */
static void key(char out[72], int prefix, int n)
{
    snprintf(out, 72, "%016x%048x", prefix, n);
}

static void test_put_get_ttl(void **state)
{
    struct hub_identity_cache *c = hub_identity_cache_new(64, 1000, 1000);
    struct hub_identity id = ident("ann"), got;
    char k[72];
    key(k, 1, 1);
    assert_false(hub_identity_cache_get(c, k, 0, &got));
    hub_identity_cache_put(c, k, &id, 0);
    assert_true(hub_identity_cache_get(c, k, 999, &got));
    assert_string_equal(got.name, "ann");
    assert_false(hub_identity_cache_get(c, k, 1000, &got));
    /* Anonymous identities are never cached. */
    struct hub_identity none;
    memset(&none, 0, sizeof none);
    key(k, 2, 2);
    hub_identity_cache_put(c, k, &none, 0);
    assert_false(hub_identity_cache_get(c, k, 0, &got));
    hub_identity_cache_free(c);
}

static void test_stale_read_for_outages(void **state)
{
    struct hub_identity_cache *c = hub_identity_cache_new(64, 1000, 10000);
    struct hub_identity id = ident("ann"), got;
    char k[72];
    key(k, 3, 1);
    hub_identity_cache_put(c, k, &id, 0);
    assert_false(hub_identity_cache_get(c, k, 5000, &got));
    /* Past the TTL the entry is still there for the store-is-away path, up to its own limit. */
    assert_true(hub_identity_cache_get_stale(c, k, 5000, &got));
    assert_string_equal(got.name, "ann");
    assert_false(hub_identity_cache_get_stale(c, k, 10000, &got));
    assert_false(hub_identity_cache_get_stale(c, "", 0, &got));
    hub_identity_cache_free(c);
}

static void test_forget_by_id_credential_and_all(void **state)
{
    struct hub_identity_cache *c = hub_identity_cache_new(64, 100000, 100000);
    struct hub_identity got;
    char k[8][72];
    for (int i = 0; i < 8; i++) {
        struct hub_identity id = ident(i % 2 ? "bob" : "ann");
        id.user_id = i % 2 ? 2 : 1;
        key(k[i], 7, i); /* one probe run: deletions must keep the others reachable */
        hub_identity_cache_put(c, k[i], &id, 0);
    }
    hub_identity_cache_forget_user_id(c, 2);
    for (int i = 0; i < 8; i++)
        assert_int_equal(hub_identity_cache_get(c, k[i], 1, &got), i % 2 == 0);
    hub_identity_cache_forget_credential(c, k[4]);
    assert_false(hub_identity_cache_get(c, k[4], 1, &got));
    assert_true(hub_identity_cache_get(c, k[6], 1, &got));
    hub_identity_cache_forget_credential(c, NULL);
    hub_identity_cache_forget_credential(c, "");
    assert_int_equal(hub_identity_cache_size(c), 3);
    hub_identity_cache_clear(c);
    assert_int_equal(hub_identity_cache_size(c), 0);
    assert_false(hub_identity_cache_get(c, k[0], 1, &got));
    hub_identity_cache_free(c);
}

static void test_forget_user_keeps_others_reachable(void **state)
{
    struct hub_identity_cache *c = hub_identity_cache_new(256, 100000, 100000);
    char k[72];
    struct hub_identity got;
    /* One long collision run mixing two users, plus other slots. */
    for (int i = 0; i < 60; i++) {
        struct hub_identity id = ident(i % 3 == 0 ? "bob" : "ann");
        key(k, 7, i);
        hub_identity_cache_put(c, k, &id, 0);
        struct hub_identity other = ident("cat");
        key(k, 1000 + i, i);
        hub_identity_cache_put(c, k, &other, 0);
    }
    assert_int_equal(hub_identity_cache_size(c), 120);
    hub_identity_cache_forget_user(c, "bob");
    assert_int_equal(hub_identity_cache_size(c), 100);
    for (int i = 0; i < 60; i++) {
        key(k, 7, i);
        bool hit = hub_identity_cache_get(c, k, 1, &got);
        assert_int_equal(hit, i % 3 != 0);
        if (hit)
            assert_string_equal(got.name, "ann");
        key(k, 1000 + i, i);
        assert_true(hub_identity_cache_get(c, k, 1, &got));
    }
    hub_identity_cache_forget_user(c, "ann");
    hub_identity_cache_forget_user(c, "cat");
    assert_int_equal(hub_identity_cache_size(c), 0);
    hub_identity_cache_free(c);
}

static void test_bounded(void **state)
{
    struct hub_identity_cache *c = hub_identity_cache_new(100, 100000, 100000);
    char k[72];
    struct hub_identity id = ident("ann");
    for (int i = 0; i < 10000; i++) {
        key(k, i, i);
        hub_identity_cache_put(c, k, &id, 0);
        assert_true(hub_identity_cache_size(c) <= 100);
        assert_true(hub_identity_cache_slots(c) <= 256);
        /* The newest is always there. */
        struct hub_identity got;
        assert_true(hub_identity_cache_get(c, k, 0, &got));
    }
    hub_identity_cache_free(c);
}

/* The soak's pattern: a login every 3 s whose session is logged out again, beside a few
 * long-lived credentials, for hours. The table stays at its smallest: its memory follows
 * what it holds, not max_entries (a fixed table for 8192 entries is 3.6 MB, which filled
 * one resident page per new session). */
static void test_login_logout_churn_stays_small(void **state)
{
    struct hub_identity_cache *c = hub_identity_cache_new(8192, 30000, 900000);
    struct hub_identity id = ident("ann"), got;
    char k[72];
    for (int i = 0; i < 4; i++) {
        key(k, 0x7000 + i, i);
        hub_identity_cache_put(c, k, &id, 0);
    }
    for (int64_t i = 0, now = 0; i < 20000; i++, now += 3000) {
        key(k, (int)(i * 2654435761u), (int)i);
        hub_identity_cache_put(c, k, &id, now);
        assert_true(hub_identity_cache_get(c, k, now + 1, &got));
        hub_identity_cache_forget_credential(c, k);
        assert_false(hub_identity_cache_get(c, k, now + 1, &got));
        assert_true(hub_identity_cache_slots(c) <= 16);
    }
    assert_int_equal(hub_identity_cache_size(c), 4);
    hub_identity_cache_free(c);
}

/* Sessions that are never logged out: the entries older than keep_ms go when the table
 * would grow, so it stays sized for the credentials of the last keep_ms, and every one of
 * those is still found (fresh within the TTL, stale up to keep_ms). */
static void test_old_entries_go_when_the_table_would_grow(void **state)
{
    const int64_t ttl = 30000, keep = 900000, every = 3000;
    struct hub_identity_cache *c = hub_identity_cache_new(8192, ttl, keep);
    struct hub_identity id = ident("ann"), got;
    char k[72];
    size_t most = 0;
    int64_t now = 0;
    for (int i = 0; i < 6000; i++, now += every) {
        key(k, (int)((unsigned)i * 2654435761u), i);
        hub_identity_cache_put(c, k, &id, now);
        size_t slots = hub_identity_cache_slots(c);
        most = slots > most ? slots : most;
        /* keep / every = 300 credentials are of use at any time: a quarter-full table
         * for them, at most, is 2048 slots. */
        assert_true(slots <= 2048);
    }
    assert_true(most >= 1024);
    now -= every;
    for (int i = 0; i < 6000; i++) {
        key(k, (int)((unsigned)i * 2654435761u), i);
        int64_t age = now - (int64_t)i * every;
        assert_int_equal(hub_identity_cache_get(c, k, now, &got), age < ttl);
        if (age < keep)
            assert_true(hub_identity_cache_get_stale(c, k, now, &got));
    }
    hub_identity_cache_free(c);
}

/* After a burst, the periodic sweep gives the memory back once the burst has aged past
 * keep_ms; removals shrink the table too. */
static void test_sweep_and_removals_shrink(void **state)
{
    struct hub_identity_cache *c = hub_identity_cache_new(8192, 1000, 10000);
    struct hub_identity ann = ident("ann"), bob = ident("bob"), got;
    char k[72];
    for (int i = 0; i < 1000; i++) {
        key(k, i * 7919, i);
        hub_identity_cache_put(c, k, i % 2 ? &ann : &bob, 0);
    }
    assert_int_equal(hub_identity_cache_size(c), 1000);
    assert_true(hub_identity_cache_slots(c) >= 2048);
    hub_identity_cache_sweep(c, 9999);
    assert_int_equal(hub_identity_cache_size(c), 1000);
    hub_identity_cache_forget_user(c, "bob");
    assert_int_equal(hub_identity_cache_size(c), 500);
    for (int i = 0; i < 1000; i++) {
        key(k, i * 7919, i);
        assert_int_equal(hub_identity_cache_get_stale(c, k, 9999, &got), i % 2 == 1);
    }
    key(k, 1, 1);
    hub_identity_cache_put(c, k, &bob, 5000);
    hub_identity_cache_sweep(c, 10000);
    assert_int_equal(hub_identity_cache_size(c), 1);
    assert_int_equal(hub_identity_cache_slots(c), 16);
    assert_true(hub_identity_cache_get(c, k, 5001, &got));
    assert_string_equal(got.name, "bob");
    hub_identity_cache_clear(c);
    assert_int_equal(hub_identity_cache_slots(c), 16);
    hub_identity_cache_free(c);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_put_get_ttl),
        cmocka_unit_test(test_stale_read_for_outages),
        cmocka_unit_test(test_forget_by_id_credential_and_all),
        cmocka_unit_test(test_forget_user_keeps_others_reachable),
        cmocka_unit_test(test_bounded),
        cmocka_unit_test(test_login_logout_churn_stays_small),
        cmocka_unit_test(test_old_entries_go_when_the_table_would_grow),
        cmocka_unit_test(test_sweep_and_removals_shrink),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
