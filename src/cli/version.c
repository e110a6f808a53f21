/* `codehub version`: the program's version and those of the libraries it runs with (the
 * ones loaded at run time where the library can tell, which is what matters for a bug
 * report). */
#include "cli/cli.h"

#include <http_parser.h>
#include <jansson.h>
#include <curl/curl.h>
#include <libfyaml.h>
#include <libpq-fe.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <uv.h>

#ifndef CODEHUB_VERSION
/* CMake defines it from the project version; a stray build without it still says so. */
#define CODEHUB_VERSION "unknown"
#endif

static int version_run(const struct cli_args *args)
{
    unsigned long hp = http_parser_version();
    printf("codehub %s\n", CODEHUB_VERSION);
    printf("libuv %s\n", uv_version_string());
    printf("sqlite %s\n", sqlite3_libversion());
    printf("libsodium %s\n", sodium_version_string());
    printf("jansson %s\n", jansson_version_str());
    printf("libfyaml %s\n", fy_library_version());
    printf("http-parser %lu.%lu.%lu\n", (hp >> 16) & 0xff, (hp >> 8) & 0xff, hp & 0xff);
    /* PQlibVersion: major * 10000 + minor since PostgreSQL 10. */
    int pq = PQlibVersion();
    printf("libpq %d.%d\n", pq / 10000, pq % 10000);
    printf("libcurl %s\n", curl_version_info(CURLVERSION_NOW)->version);
    if (fflush(stdout) != 0 || ferror(stdout))
        return cli_fail("cannot write to standard output");
    return CLI_EXIT_OK;
}

const struct cli_command cli_version_command = {
    .name = "version",
    .path = "version",
    .summary = "Print codehub's version and the versions of the libraries it uses.",
    .run = version_run,
};
