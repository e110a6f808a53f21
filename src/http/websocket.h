/* WebSocket (RFC 6455) pieces the proxy needs. It never terminates WebSockets itself:
 * after the upstream's 101 the connection is a byte tunnel. What is here:
 *
 *  - a check of the opening handshake before it is forwarded (so that a malformed upgrade
 *    is refused with 400 by us instead of being half-understood upstream);
 *  - a frame scanner that observes a byte stream of frames without changing it. It copes
 *    with frames split anywhere across reads, masks, 16- and 64-bit lengths and control
 *    frames between fragments. It gives the observer the frame headers and, on request
 *    only, unmasked bytes of the data payload, so that payload it does not ask for costs
 *    nothing. On anything malformed it stops for good (the tunnel keeps forwarding);
 *  - the activity classifier for code-server tunnels (see docs/proxy.md, "What counts as
 *    activity"): it reads the VS Code remote protocol's message headers off the scanner
 *    and tells which client-to-server messages a person caused. */
#ifndef CODEHUB_HTTP_WEBSOCKET_H
#define CODEHUB_HTTP_WEBSOCKET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct http_request;

/* Returns true when key[0..len) is the base64 encoding (with padding) of exactly 16
 * bytes: 22 characters of the base64 alphabet, the last of them carrying no stray bits,
 * then "==". */
bool websocket_key_valid(const char *key, size_t len);

/* Checks a request that asked for an upgrade (req->upgrade) as a WebSocket opening
 * handshake (RFC 6455 4.2.1): GET, HTTP/1.1, an Upgrade header naming "websocket", exactly
 * one valid Sec-WebSocket-Key, exactly one Sec-WebSocket-Version equal to 13. Returns 0
 * when it is one, else 400 with *reason set to a short static text. */
int websocket_handshake_check(const struct http_request *req, const char **reason);

enum websocket_opcode {
    WEBSOCKET_CONTINUATION = 0x0,
    WEBSOCKET_TEXT = 0x1,
    WEBSOCKET_BINARY = 0x2,
    WEBSOCKET_CLOSE = 0x8,
    WEBSOCKET_PING = 0x9,
    WEBSOCKET_PONG = 0xa,
};

struct websocket_frame {
    unsigned opcode; /* enum websocket_opcode */
    bool fin;
    bool rsv1; /* per-message compression (permessage-deflate) */
    bool masked;
    uint64_t length; /* payload bytes */
};

/* The observer. Both callbacks are optional. */
struct websocket_scan_callbacks {
    /* A frame header has been read (the payload follows). */
    void (*on_frame)(void *data, const struct websocket_frame *f);
    /* Unmasked payload bytes of data frames (text, binary, continuation), as one stream
     * that runs across frames and leaves control frames out: this is how an endpoint that
     * reassembles messages sees them. Called with at most WEBSOCKET_PEEK bytes at a time,
     * and only while the observer wants bytes: it returns how many of the stream bytes
     * that follow this call it does not need; those are skipped without being unmasked. */
    uint64_t (*on_data)(void *data, const uint8_t *bytes, size_t n);
};

#define WEBSOCKET_PEEK 64

struct websocket_scan {
    struct websocket_scan_callbacks cb;
    void *data;
    bool want_masked; /* frames must be masked (client to server) or must not be */
    bool failed;
    bool in_message; /* a fragmented data message is open (a continuation may follow) */
    uint8_t head[14];
    unsigned head_len;
    unsigned head_need;
    struct websocket_frame frame;
    uint8_t mask[4];
    uint64_t payload_left; /* of the current frame */
    uint64_t payload_off;  /* into the current frame's payload (mask phase) */
    uint64_t skip;         /* data stream bytes the observer does not want */
    uint64_t frames;       /* frames fully read */
};

/* Prepares a scanner. `masked`: true for the client-to-server direction (every frame must
 * be masked), false for server to client (no frame may be). `cb` is copied. */
void websocket_scan_init(struct websocket_scan *s, bool masked,
                         const struct websocket_scan_callbacks *cb, void *data);

/* Observes the next `len` bytes of the stream. Returns 0 while the stream is well-formed,
 * or -EPROTO once it is not (reserved opcodes, a control frame that is fragmented or longer
 * than 125 bytes, a wrong mask bit, a 64-bit length with the top bit set, a continuation
 * without a message to continue, a new data frame inside a fragmented message). After an
 * error the scanner ignores everything and keeps returning -EPROTO. */
int websocket_scan_feed(struct websocket_scan *s, const void *bytes, size_t len);

/* --- activity in code-server tunnels ------------------------------------------------- */

/* VS Code's remote protocol (PersistentProtocol) runs over the WebSocket data stream as
 * messages with a 13-byte header: type (1 byte), id (4), ack (4), data length (4), all
 * big-endian. */
enum websocket_vscode_type {
    WEBSOCKET_VSCODE_REGULAR = 1,
    WEBSOCKET_VSCODE_CONTROL = 2,
    WEBSOCKET_VSCODE_ACK = 3,
    WEBSOCKET_VSCODE_DISCONNECT = 5,
    WEBSOCKET_VSCODE_REPLAY = 6,
    WEBSOCKET_VSCODE_PAUSE = 7,
    WEBSOCKET_VSCODE_RESUME = 8,
    WEBSOCKET_VSCODE_KEEPALIVE = 9,
};

/* How a tunnel's client-to-server stream is being read. */
enum websocket_activity_mode {
    WEBSOCKET_ACTIVITY_UNDECIDED, /* no complete message yet */
    WEBSOCKET_ACTIVITY_VSCODE,    /* VS Code's protocol: only user-input messages count */
    WEBSOCKET_ACTIVITY_FOREIGN,   /* another protocol (or compressed frames): every data
                                     message counts */
    WEBSOCKET_ACTIVITY_LOST,      /* VS Code's framing was lost (or the frames were
                                     malformed): nothing counts any more */
};

/* Bytes of a regular message's data read to classify it. */
#define WEBSOCKET_ACTIVITY_PEEK 128

struct websocket_activity {
    struct websocket_scan scan;
    enum websocket_activity_mode mode;
    uint8_t header[13];
    unsigned header_len;
    bool in_body; /* reading the start of a regular message's data */
    uint8_t body[WEBSOCKET_ACTIVITY_PEEK];
    unsigned body_len;   /* bytes in body[] */
    unsigned body_want;  /* bytes of this message to read into body[] */
    uint32_t body_total; /* the message's data length */
    uint64_t messages;   /* protocol messages seen (VS Code mode) */
    uint64_t user;       /* messages (or foreign data messages) that counted */
    uint64_t pending;    /* of which in the current feed */
};

/* Prepares the classifier for the client-to-server stream of one tunnel. */
void websocket_activity_init(struct websocket_activity *a);

/* Observes the next bytes from the client; the bytes are not changed. Returns how many
 * messages in them count as user activity (0 when none). The rule (docs/proxy.md, "What
 * counts as activity", has the measurements behind it):
 *  - A stream whose first message is a VS Code control message is read as VS Code's
 *    protocol. Keep-alives, acks and control messages never count. Regular messages count
 *    only when they are a request caused by user input: on the extension host connection
 *    (RPC requests) $acceptModelChanged, $acceptEditorPropertiesChanged,
 *    $acceptDocumentsAndEditorsDelta, $acceptModelSaved, $acceptTerminalInteraction,
 *    $provideFileSearchResults, $provideTextSearchResults; on the management connection
 *    (IPC calls) remoteterminal.$input. Replies, acknowledgements and the background calls
 *    of an untouched tab (telemetry pings, extension manifest polls, window-active
 *    changes, terminal output relays, file events) do not.
 *  - Any other stream (not VS Code, or compressed frames, which cannot be read) counts
 *    every text or binary message.
 *  - Malformed frames or a lost VS Code framing stop the counting for that tunnel. */
uint64_t websocket_activity_feed(struct websocket_activity *a, const void *bytes, size_t len);

/* Classifies one VS Code regular message from the first bytes of its data (data[0..n),
 * n <= the message's length): returns true when it is one of the user-input requests
 * listed above. Exposed for tests. */
bool websocket_vscode_message_is_user(const uint8_t *data, size_t n);

#endif
