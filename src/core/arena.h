/* A bump allocator for memory that lives exactly as long as one request: every
 * allocation is freed at once by arena_free(). */
#ifndef CODEHUB_CORE_ARENA_H
#define CODEHUB_CORE_ARENA_H

#include <stddef.h>

struct arena_block;

struct arena {
    struct arena_block *head;
    size_t block_size;
};

/* Sets up an empty arena; the first allocation takes a block of `block_size` bytes. */
void arena_init(struct arena *a, size_t block_size);
/* Returns 16-byte-aligned memory owned by the arena (never NULL). */
void *arena_alloc(struct arena *a, size_t size);
/* Returns a NUL-terminated copy of s[0..len) owned by the arena. */
char *arena_strndup(struct arena *a, const char *s, size_t len);
char *arena_strdup(struct arena *a, const char *s);
/* Frees every block; the arena may be used again afterwards. */
void arena_free(struct arena *a);

#endif
