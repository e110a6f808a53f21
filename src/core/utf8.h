/* UTF-8 validation of whole texts (config files, kubeconfigs) before a parser sees them. */
#ifndef CODEHUB_CORE_UTF8_H
#define CODEHUB_CORE_UTF8_H

#include <stddef.h>

/* Returns the offset of the first byte of `s[0..len)` that is not part of well-formed UTF-8
 * (RFC 3629: no overlong forms, no surrogates, nothing above U+10FFFF) or is a NUL byte;
 * `len` when the whole text is valid. libfyaml 0.7.12 can loop forever on some malformed
 * input ("%\xff\n"), so YAML readers call this first. */
size_t utf8_invalid_at(const char *s, size_t len);

/* Returns the 1-based line of byte `offset` in `s` (counting '\n' before it). */
int utf8_line_of(const char *s, size_t offset);

#endif
