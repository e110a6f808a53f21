/* The hub's secret taken from a file (`auth.secret_file`) instead of the store's meta table.
 *
 * On Kubernetes the Helm chart keeps the secret in a Secret that is created once and kept
 * across upgrades, mounted into every replica as a file. Its content is free text (Helm's
 * randAlphaNum 64, `openssl rand -hex 32`, ...), so the 32-byte key is derived from it
 * rather than decoded: BLAKE2b-256 (crypto_generichash, no key) of "codehub-hub-secret:"
 * followed by the content. The prefix keeps this use of the text apart from any other
 * use someone might make of the same Secret. Every replica mounting the same Secret derives
 * the same key.
 *
 * Unlike the rest of src/auth/, auth_secret_from_file() does I/O: it is called once at
 * start-up, on the loop thread before the loop runs. It logs nothing; the caller decides
 * what to say about the file's mode. Thread-safe (no shared state). */
#ifndef CODEHUB_AUTH_SECRET_H
#define CODEHUB_AUTH_SECRET_H

#include "auth/csrf.h"

#include <stddef.h>

/* Bounds on the file's content, in bytes, once one trailing "\n" or "\r\n" is stripped.
 * The lower bound catches obvious mistakes (an empty file, "changeme"); it cannot tell
 * random text from weak text, which is why the docs name generators to use. The upper
 * bound keeps a wrong path (a log, an image) from being taken as a secret. */
#define AUTH_SECRET_FILE_MIN 32
#define AUTH_SECRET_FILE_MAX 4096

/* Writes to `out` the key for the secret text `content` of `len` bytes: BLAKE2b-256 of
 * "codehub-hub-secret:" || content. No trailing newline is stripped here and no bound is
 * checked: auth_secret_from_file() does both. Deterministic. */
void auth_secret_derive(const char *content, size_t len, unsigned char out[AUTH_SECRET_BYTES]);

/* Reads the secret file `path` (following symbolic links, as a Kubernetes Secret volume
 * needs), strips one trailing "\n" or "\r\n" and derives the key with auth_secret_derive()
 * into `out`.
 *
 * When `mode_out` is not NULL it receives the permission bits (st_mode & 07777) of the file
 * that was opened (the symlink's target), as soon as the file is open, even if reading it
 * then fails; the caller warns when others may read it (mode & 0004).
 *
 * Returns 0, or a negative errno with `out` zeroed and a message naming the file written to
 * `err` (NUL-terminated, truncated to `errlen`; nothing when `err` is NULL or `errlen` 0):
 *   -errno from open/read: "cannot read auth.secret_file PATH: <strerror>"
 *   -EINVAL, too short:    "auth.secret_file PATH holds N characters; at least 32 are needed"
 *   -EINVAL, too long:     "auth.secret_file PATH holds N characters; at most 4096 are
 *                          allowed" ("more than 4096" when the file is longer than read)
 *   -EINVAL, NUL byte:     "auth.secret_file PATH holds a NUL byte"
 *   -EINVAL, NULL or "" path: "auth.secret_file is empty"
 * No message holds any of the file's content. The read buffer is wiped before returning. */
int auth_secret_from_file(const char *path, unsigned char out[AUTH_SECRET_BYTES],
                          unsigned *mode_out, char *err, size_t errlen);

#endif
