/* libFuzzer driver: HTTP responses through http_parse (HEAD, 1xx, 204/304, 101, bodies
 * framed by length, chunks or the close). */
#include "fuzz_http_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_http_run(HTTP_PARSE_RESPONSE, data, size);
    return 0;
}
