/* libFuzzer driver: HTTP requests through http_parse (heads, bodies, pipelining). */
#include "fuzz_http_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_http_run(HTTP_PARSE_REQUEST, data, size);
    return 0;
}
