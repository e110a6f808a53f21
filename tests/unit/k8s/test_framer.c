/* Tests for src/k8s/framer.c: the watch-stream line framer fed a stream cut at every
 * split point (and every pair of split points), byte by byte, with CRLF and empty lines, at
 * the size cap and one byte over it, with a line of several MiB in small pieces, garbage
 * and NUL bytes, a callback that stops it, and reset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "k8s/framer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Collects lines as "<line>|" into one buffer, so a whole run compares as one string. */
struct sink {
    struct buf out;
    int lines;
    int stop_at; /* return -ECANCELED at this line (1-based); 0: never */
    size_t longest;
};

static int collect(void *data, const char *line, size_t len)
{
    struct sink *s = data;
    s->lines++;
    buf_append(&s->out, line, len);
    buf_append_char(&s->out, '|');
    if (len > s->longest)
        s->longest = len;
    return s->stop_at && s->lines == s->stop_at ? -ECANCELED : 0;
}

static const char stream[] = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}\n"
                             "{\"type\":\"MODIFIED\",\"object\":{}}\r\n"
                             "\n"
                             "\r\n"
                             "{\"type\":\"BOOKMARK\"}\n"
                             "x\n";

static const char expected[] = "{\"type\":\"ADDED\",\"object\":{\"metadata\":{\"name\":\"a\"}}}|"
                               "{\"type\":\"MODIFIED\",\"object\":{}}|"
                               "{\"type\":\"BOOKMARK\"}|"
                               "x|";

static void test_whole(void **state)
{
    struct k8s_framer f;
    struct sink s = {BUF_INIT, 0, 0, 0};
    k8s_framer_init(&f, 1024);
    assert_int_equal(k8s_framer_feed(&f, stream, strlen(stream), collect, &s), 0);
    assert_string_equal(s.out.data, expected);
    assert_int_equal(s.lines, 4);
    assert_int_equal(k8s_framer_pending(&f), 0);
    k8s_framer_free(&f);
    buf_free(&s.out);
}

static void test_every_split_point(void **state)
{
    size_t n = strlen(stream);
    for (size_t i = 0; i <= n; i++) {
        struct k8s_framer f;
        struct sink s = {BUF_INIT, 0, 0, 0};
        k8s_framer_init(&f, 1024);
        assert_int_equal(k8s_framer_feed(&f, stream, i, collect, &s), 0);
        assert_int_equal(k8s_framer_feed(&f, stream + i, n - i, collect, &s), 0);
        assert_string_equal(s.out.data, expected);
        assert_int_equal(k8s_framer_pending(&f), 0);
        k8s_framer_free(&f);
        buf_free(&s.out);
    }
}

static void test_every_pair_of_split_points(void **state)
{
    size_t n = strlen(stream);
    for (size_t i = 0; i <= n; i++) {
        for (size_t j = i; j <= n; j++) {
            struct k8s_framer f;
            struct sink s = {BUF_INIT, 0, 0, 0};
            k8s_framer_init(&f, 1024);
            assert_int_equal(k8s_framer_feed(&f, stream, i, collect, &s), 0);
            assert_int_equal(k8s_framer_feed(&f, stream + i, j - i, collect, &s), 0);
            assert_int_equal(k8s_framer_feed(&f, stream + j, n - j, collect, &s), 0);
            assert_string_equal(s.out.data, expected);
            k8s_framer_free(&f);
            buf_free(&s.out);
        }
    }
}

static void test_byte_by_byte(void **state)
{
    struct k8s_framer f;
    struct sink s = {BUF_INIT, 0, 0, 0};
    k8s_framer_init(&f, 1024);
    for (size_t i = 0; stream[i]; i++)
        assert_int_equal(k8s_framer_feed(&f, stream + i, 1, collect, &s), 0);
    assert_string_equal(s.out.data, expected);
    k8s_framer_free(&f);
    buf_free(&s.out);
}

static void test_partial_line_pending(void **state)
{
    struct k8s_framer f;
    struct sink s = {BUF_INIT, 0, 0, 0};
    k8s_framer_init(&f, 1024);
    assert_int_equal(k8s_framer_feed(&f, "abc\nde", 6, collect, &s), 0);
    assert_int_equal(s.lines, 1);
    assert_int_equal(k8s_framer_pending(&f), 2);
    assert_int_equal(k8s_framer_feed(&f, "", 0, collect, &s), 0);
    assert_int_equal(k8s_framer_pending(&f), 2);
    assert_int_equal(k8s_framer_feed(&f, "f\n", 2, collect, &s), 0);
    assert_string_equal(s.out.data, "abc|def|");
    assert_int_equal(k8s_framer_pending(&f), 0);
    /* reset drops a partial line: a new stream starts clean */
    assert_int_equal(k8s_framer_feed(&f, "half", 4, collect, &s), 0);
    k8s_framer_reset(&f);
    assert_int_equal(k8s_framer_pending(&f), 0);
    assert_int_equal(k8s_framer_feed(&f, "new\n", 4, collect, &s), 0);
    assert_string_equal(s.out.data, "abc|def|new|");
    k8s_framer_free(&f);
    buf_free(&s.out);
}

/* A line of exactly the cap passes, whether it arrives whole or in pieces; one byte more
 * fails, at every split point, and the framer then refuses input until reset. */
static void test_cap(void **state)
{
    enum { CAP = 64 };
    char ok[CAP + 2], over[CAP + 3];
    memset(ok, 'a', CAP);
    ok[CAP] = '\n';
    ok[CAP + 1] = '\0';
    memset(over, 'b', CAP + 1);
    over[CAP + 1] = '\n';
    over[CAP + 2] = '\0';
    for (size_t i = 0; i <= CAP + 1; i++) {
        struct k8s_framer f;
        struct sink s = {BUF_INIT, 0, 0, 0};
        k8s_framer_init(&f, CAP);
        assert_int_equal(k8s_framer_feed(&f, ok, i, collect, &s), 0);
        assert_int_equal(k8s_framer_feed(&f, ok + i, CAP + 1 - i, collect, &s), 0);
        assert_int_equal(s.lines, 1);
        assert_int_equal(s.longest, CAP);
        k8s_framer_free(&f);
        buf_free(&s.out);
    }
    for (size_t i = 0; i <= CAP + 2; i++) {
        struct k8s_framer f;
        struct sink s = {BUF_INIT, 0, 0, 0};
        k8s_framer_init(&f, CAP);
        int r1 = k8s_framer_feed(&f, over, i, collect, &s);
        int r2 = k8s_framer_feed(&f, over + i, CAP + 2 - i, collect, &s);
        assert_true(r1 == -EMSGSIZE || r2 == -EMSGSIZE);
        if (r1 == -EMSGSIZE)
            assert_int_equal(r2, -EMSGSIZE); /* stays failed */
        assert_int_equal(s.lines, 0);
        assert_int_equal(k8s_framer_feed(&f, "x\n", 2, collect, &s), -EMSGSIZE);
        k8s_framer_reset(&f);
        assert_int_equal(k8s_framer_feed(&f, "x\n", 2, collect, &s), 0);
        assert_int_equal(s.lines, 1);
        k8s_framer_free(&f);
        buf_free(&s.out);
    }
}

/* An over-long line without any newline yet still fails: the cap bounds memory, it does
 * not wait for the end of the line. */
static void test_cap_without_newline(void **state)
{
    struct k8s_framer f;
    struct sink s = {BUF_INIT, 0, 0, 0};
    char chunk[100];
    memset(chunk, 'z', sizeof(chunk));
    k8s_framer_init(&f, 1000);
    int r = 0;
    int fed = 0;
    while (r == 0 && fed < 100) {
        r = k8s_framer_feed(&f, chunk, sizeof(chunk), collect, &s);
        fed++;
    }
    assert_int_equal(r, -EMSGSIZE);
    assert_int_equal(fed, 11); /* 1100 bytes > 1000 */
    assert_int_equal(k8s_framer_pending(&f), 0);
    k8s_framer_free(&f);
    buf_free(&s.out);
}

/* A 4 MiB line in 1000-byte pieces, between two small ones. */
static void test_large_line_in_pieces(void **state)
{
    size_t big = 4 * 1024 * 1024;
    char *line = xmalloc(big + 1);
    for (size_t i = 0; i < big; i++)
        line[i] = (char)('a' + i % 26);
    line[big] = '\n';
    struct k8s_framer f;
    struct sink s = {BUF_INIT, 0, 0, 0};
    k8s_framer_init(&f, 16 * 1024 * 1024);
    assert_int_equal(k8s_framer_feed(&f, "one\n", 4, collect, &s), 0);
    for (size_t off = 0; off < big + 1; off += 1000) {
        size_t n = big + 1 - off < 1000 ? big + 1 - off : 1000;
        assert_int_equal(k8s_framer_feed(&f, line + off, n, collect, &s), 0);
    }
    assert_int_equal(k8s_framer_feed(&f, "two\n", 4, collect, &s), 0);
    assert_int_equal(s.lines, 3);
    assert_int_equal(s.longest, big);
    assert_memory_equal(s.out.data + 4, line, big);
    assert_string_equal(s.out.data + 4 + big, "|two|");
    k8s_framer_free(&f);
    buf_free(&s.out);
    free(line);
}

static void test_garbage_passes_as_bytes(void **state)
{
    /* The framer does not judge content: NUL bytes, lone CRs and binary are the JSON
     * parser's business. Only "\n" splits. */
    const char g[] = "\x00\x01\xff\r\rx\n\r\n\x80";
    struct k8s_framer f;
    struct sink s = {BUF_INIT, 0, 0, 0};
    k8s_framer_init(&f, 64);
    assert_int_equal(k8s_framer_feed(&f, g, sizeof(g) - 1, collect, &s), 0);
    assert_int_equal(s.lines, 1);
    assert_int_equal(s.out.len, 7);
    assert_memory_equal(s.out.data, "\x00\x01\xff\r\rx|", 7);
    assert_int_equal(k8s_framer_pending(&f), 1);
    k8s_framer_free(&f);
    buf_free(&s.out);
}

static void test_callback_stops(void **state)
{
    struct k8s_framer f;
    struct sink s = {BUF_INIT, 0, 2, 0};
    k8s_framer_init(&f, 64);
    assert_int_equal(k8s_framer_feed(&f, "a\nb\nc\n", 6, collect, &s), -ECANCELED);
    assert_string_equal(s.out.data, "a|b|");
    /* the error sticks until reset */
    assert_int_equal(k8s_framer_feed(&f, "d\n", 2, collect, &s), -ECANCELED);
    assert_int_equal(s.lines, 2);
    k8s_framer_reset(&f);
    s.stop_at = 0;
    assert_int_equal(k8s_framer_feed(&f, "d\n", 2, collect, &s), 0);
    assert_string_equal(s.out.data, "a|b|d|");
    k8s_framer_free(&f);
    buf_free(&s.out);
}

/* The stop also works on a line assembled from pieces. */
static void test_callback_stops_buffered_line(void **state)
{
    struct k8s_framer f;
    struct sink s = {BUF_INIT, 0, 1, 0};
    k8s_framer_init(&f, 64);
    assert_int_equal(k8s_framer_feed(&f, "ab", 2, collect, &s), 0);
    assert_int_equal(k8s_framer_feed(&f, "c\nd\n", 4, collect, &s), -ECANCELED);
    assert_string_equal(s.out.data, "abc|");
    k8s_framer_free(&f);
    buf_free(&s.out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole),
        cmocka_unit_test(test_every_split_point),
        cmocka_unit_test(test_every_pair_of_split_points),
        cmocka_unit_test(test_byte_by_byte),
        cmocka_unit_test(test_partial_line_pending),
        cmocka_unit_test(test_cap),
        cmocka_unit_test(test_cap_without_newline),
        cmocka_unit_test(test_large_line_in_pieces),
        cmocka_unit_test(test_garbage_passes_as_bytes),
        cmocka_unit_test(test_callback_stops),
        cmocka_unit_test(test_callback_stops_buffered_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
