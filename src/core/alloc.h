/* Allocation that never returns NULL: running out of memory logs one line and aborts.
 * Every other failure in codehub is returned and handled; this one cannot be. */
#ifndef CODEHUB_CORE_ALLOC_H
#define CODEHUB_CORE_ALLOC_H

#include <stddef.h>

/* Each returns fresh memory the caller frees with free(). */
void *xmalloc(size_t size);
void *xcalloc(size_t count, size_t size);
void *xrealloc(void *ptr, size_t size);
char *xstrdup(const char *s);
char *xstrndup(const char *s, size_t n);
/* printf into a new string; caller frees. */
char *xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
