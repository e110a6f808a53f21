/* core/utf8: the UTF-8 check YAML readers run before libfyaml, and the two readers that
 * use it (config files, kubeconfigs). Inputs include the fuzzers' findings
 * (fuzz/regressions/): "%\xff\n" made libfyaml 0.7.12 loop forever. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "core/buf.h"
#include "core/config.h"
#include "core/utf8.h"
#include "k8s/kubeconfig.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define INVALID_AT(lit, at) assert_int_equal(utf8_invalid_at(lit, sizeof(lit) - 1), (at))

static void test_valid_texts(void **state)
{
    INVALID_AT("", 0);
    INVALID_AT("plain: ascii\n", 13);
    INVALID_AT("caf\xc3\xa9", 5);      /* U+00E9 */
    INVALID_AT("\xe2\x82\xac", 3);     /* U+20AC */
    INVALID_AT("\xed\x9f\xbf", 3);     /* U+D7FF, just below surrogates */
    INVALID_AT("\xf0\x9f\x98\x80", 4); /* U+1F600 */
    INVALID_AT("\xf4\x8f\xbf\xbf", 4); /* U+10FFFF, the last code point */
    INVALID_AT("a\xc2\x80z", 4);       /* U+0080, the first two-byte one */
}

static void test_invalid_texts(void **state)
{
    INVALID_AT("%\xff\n", 1);          /* the libfyaml hang */
    INVALID_AT("ab\x80", 2);           /* a lone continuation byte */
    INVALID_AT("\xc0\xaf", 0);         /* overlong '/' */
    INVALID_AT("\xc1\xbf", 0);         /* overlong */
    INVALID_AT("\xe0\x80\xaf", 0);     /* overlong three-byte */
    INVALID_AT("\xf0\x80\x80\xaf", 0); /* overlong four-byte */
    INVALID_AT("x\xed\xa0\x80", 1);    /* U+D800, a surrogate */
    INVALID_AT("\xf4\x90\x80\x80", 0); /* above U+10FFFF */
    INVALID_AT("\xf5\x80\x80\x80", 0); /* never a lead byte */
    INVALID_AT("ok\xe2\x82", 2);       /* cut short at the end */
    INVALID_AT("\xe2\x28\xa1", 0);     /* a bad second byte */
    INVALID_AT("\xf0\x9f\x98(", 0);    /* a bad fourth byte */
    INVALID_AT("a\0b", 1);             /* NUL */
}

static void test_line_of(void **state)
{
    const char *s = "a\nbb\n\nc";
    assert_int_equal(utf8_line_of(s, 0), 1);
    assert_int_equal(utf8_line_of(s, 2), 2);
    assert_int_equal(utf8_line_of(s, 5), 3);
    assert_int_equal(utf8_line_of(s, 6), 4);
}

static void test_escaped_messages_stay_on_one_line(void **state)
{
    /* buf_append_escaped, which both readers' error messages go through. */
    struct buf b = BUF_INIT;
    static const char raw[] = "a\nb\tc\rd\x7f\x01\0e\xc3\xa9";
    buf_append_escaped(&b, raw, sizeof raw - 1);
    buf_append(&b, "", 1);
    assert_string_equal(b.data, "a\\nb\\tc\\x0dd\\x7f\\x01\\x00e\xc3\xa9");
    buf_free(&b);
}

static char *write_temp(const char *data, size_t len)
{
    char *path = strdup("/tmp/codehub-utf8-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, data, len), (ssize_t)len);
    close(fd);
    return path;
}

static void test_config_refuses_malformed_utf8_with_its_line(void **state)
{
    static const char text[] = "server:\n  bind: 127.0.0.1:8000\n%\xff\n";
    char *path = write_temp(text, sizeof text - 1);
    struct config cfg;
    config_init(&cfg);
    struct buf errors = BUF_INIT;
    assert_int_equal(config_load_file(&cfg, path, &errors), -EINVAL);
    buf_append(&errors, "", 1);
    assert_non_null(strstr(errors.data, ":3: not valid UTF-8 (byte 33)"));
    assert_non_null(strstr(errors.data, path));
    buf_free(&errors);
    config_free(&cfg);
    unlink(path);
    free(path);
}

static void test_kubeconfig_refuses_malformed_utf8(void **state)
{
    static const char text[] = "%\xff\n";
    char *path = write_temp(text, sizeof text - 1);
    struct k8s_config *cfg = NULL;
    char *err = NULL;
    assert_int_equal(k8s_config_load_kubeconfig(path, NULL, &cfg, &err), -EINVAL);
    assert_null(cfg);
    assert_non_null(strstr(err, ":1: not valid UTF-8 (byte 2)"));
    free(err);
    unlink(path);
    free(path);
}

static void test_kubeconfig_error_stays_on_one_line(void **state)
{
    /* A value quoted in an error message cannot split it (or forge a second log line). */
    static const char text[] =
        "current-context: dev\n"
        "contexts: [{name: dev, context: {cluster: c, namespace: \"a\\nkubeconfig x:1: "
        "forged\"}}]\n";
    char *path = write_temp(text, sizeof text - 1);
    struct k8s_config *cfg = NULL;
    char *err = NULL;
    assert_true(k8s_config_load_kubeconfig(path, NULL, &cfg, &err) < 0);
    assert_non_null(err);
    assert_null(strchr(err, '\n'));
    assert_non_null(strstr(err, "a\\nkubeconfig x:1"));
    free(err);
    unlink(path);
    free(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_texts),
        cmocka_unit_test(test_invalid_texts),
        cmocka_unit_test(test_line_of),
        cmocka_unit_test(test_escaped_messages_stay_on_one_line),
        cmocka_unit_test(test_config_refuses_malformed_utf8_with_its_line),
        cmocka_unit_test(test_kubeconfig_refuses_malformed_utf8),
        cmocka_unit_test(test_kubeconfig_error_stays_on_one_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
