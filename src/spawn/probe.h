/* A one-request HTTP health probe (GET PATH, Connection: close) to a workspace server, over
 * a Unix socket (the local spawner's code-server) or TCP (a pod's IP and port), on the
 * loop. Spawners poll with it until the server answers. Loop thread only. */
#ifndef CODEHUB_SPAWN_PROBE_H
#define CODEHUB_SPAWN_PROBE_H

#include <uv.h>

struct spawn_probe;

/* Called once, from the loop (never from inside the start call), with the response status
 * (> 0) or a negative errno: -ENOENT / -ECONNREFUSED when nothing listens, -ETIMEDOUT,
 * -EPROTO for a malformed answer. */
typedef void (*spawn_probe_cb)(void *data, int result);

/* Starts GET `http_path` on the Unix socket `socket_path`. Returns the probe (never NULL);
 * it frees itself after the callback, or after spawn_probe_cancel(). */
struct spawn_probe *spawn_probe_unix(uv_loop_t *loop, const char *socket_path,
                                     const char *http_path, unsigned timeout_ms, spawn_probe_cb cb,
                                     void *data);

/* Starts GET `http_path` on ip:port (an IPv4 or IPv6 literal). Returns the probe, or NULL
 * (and no callback) when `ip` is not an address literal; it frees itself as above. */
struct spawn_probe *spawn_probe_tcp(uv_loop_t *loop, const char *ip, int port,
                                    const char *http_path, unsigned timeout_ms, spawn_probe_cb cb,
                                    void *data);

/* Drops a probe whose callback has not come: it never comes. The probe frees itself. */
void spawn_probe_cancel(struct spawn_probe *p);

#endif
