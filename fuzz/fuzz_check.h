/* check(): an invariant of a fuzz driver. One that does not hold is a finding: say which
 * (file and line), then crash so that libFuzzer keeps the input. */
#ifndef CODEHUB_FUZZ_CHECK_H
#define CODEHUB_FUZZ_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static inline void fuzz_check_at(int ok, const char *file, int line)
{
    if (!ok) {
        fprintf(stderr, "%s:%d: invariant violated\n", file, line);
        abort();
    }
}

#define check(ok) fuzz_check_at((ok), __FILE__, __LINE__)

#endif
