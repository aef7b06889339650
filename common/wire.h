/* Framing and message encoding for the understudy protocol (proto/understudy.proto).
 *
 * A frame is a 4-byte big-endian payload length followed by one serialized Frame message. This is
 * the only module that includes the protobuf-c generated headers; the rest of the code sees the
 * plain C mirror below. A decoded wire_msg_t owns its memory (strings and byte fields point into
 * it) and is released with wire_msg_free().
 */
#ifndef UNDERSTUDY_WIRE_H
#define UNDERSTUDY_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define WIRE_MAGIC "understudy"
#define WIRE_HEADER_SIZE 4
/* Default cap on one frame's payload; file data and row batches are chunked well below it. */
#define WIRE_MAX_FRAME_DEFAULT (16u * 1024 * 1024)

typedef enum wire_type {
    WIRE_NONE = 0,
    WIRE_HELLO,
    WIRE_ERROR,
    WIRE_SYNC_BEGIN,
    WIRE_DIR_DIGEST,
    WIRE_FILE_ENTRY,
    WIRE_FILE_NEED,
    WIRE_FILE_DATA,
    WIRE_FILE_DELTA,
    WIRE_FILES_END,
    WIRE_DB_BEGIN,
    WIRE_DB_NEED,
    WIRE_TABLE_DEF,
    WIRE_ROW_BATCH,
    WIRE_TABLE_END,
    WIRE_COMMIT,
    WIRE_RESULT,
} wire_type_t;

typedef enum wire_role { WIRE_ROLE_UNSPECIFIED = 0, WIRE_ROLE_AGENT, WIRE_ROLE_CONTROLLER } wire_role_t;

/* A byte string that need not be NUL-terminated (paths, hashes, row values). */
typedef struct wire_bytes {
    const uint8_t *data;
    size_t len;
} wire_bytes_t;

typedef struct wire_hello {
    const char *magic;
    uint32_t protocol_version;
    const char *program_version;
    const char *site_id;
    const char *const *capabilities;
    size_t n_capabilities;
    wire_role_t role;
} wire_hello_t;

typedef struct wire_error {
    uint32_t code; /* an exit code from common/err.h */
    const char *text;
} wire_error_t;

typedef struct wire_sync_begin {
    wire_bytes_t sync_id;
    bool dry_run;
    uint64_t base_generation;
    wire_bytes_t tree_digest;
    uint64_t file_count;
} wire_sync_begin_t;

typedef enum wire_status {
    WIRE_STATUS_APPLIED = 0,
    WIRE_STATUS_UNCHANGED = 1,
    WIRE_STATUS_REFUSED = 2,
    WIRE_STATUS_FAILED = 3,
} wire_status_t;

typedef struct wire_commit {
    wire_bytes_t tree_digest;
    uint64_t file_count;
    uint32_t table_count;
} wire_commit_t;

typedef struct wire_result {
    wire_status_t status;
    uint64_t generation;
    uint32_t reason_code;
    const char *reason;
} wire_result_t;

/* The file and database phase messages are mirrored here as their issues fill them in. */

typedef struct wire_msg {
    wire_type_t type;
    union {
        wire_hello_t hello;
        wire_error_t error;
        wire_sync_begin_t sync_begin;
        wire_commit_t commit;
        wire_result_t result;
    } u;
    void *priv_; /* decoded protobuf-c message that owns the strings above; NULL when built */
} wire_msg_t;

/* Serializes msg as one frame (header + payload) appended to out. Returns 0, ERR_PROTOCOL for a
 * message type that cannot be sent, ERR_FRAME_TOO_LARGE past max_frame, UV_ENOBUFS/UV_ENOMEM when
 * out cannot grow. */
int wire_encode(const wire_msg_t *msg, size_t max_frame, buf_t *out);

/* Incremental frame decoder. Bytes are fed as they arrive; complete frames come out one by one.
 * The declared length of every frame is checked against max_frame before anything is allocated
 * for it. */
typedef struct wire_decoder {
    buf_t in;
    size_t max_frame;
} wire_decoder_t;

void wire_decoder_init(wire_decoder_t *d, size_t max_frame);
void wire_decoder_free(wire_decoder_t *d);

/* Appends received bytes. Returns 0 or UV_ENOMEM. At most max_frame + header bytes are buffered
 * before wire_decoder_next must be called. */
int wire_decoder_feed(wire_decoder_t *d, const void *data, size_t len);

/* Takes the next complete frame. Returns 1 and sets *ret_msg (caller frees with wire_msg_free),
 * 0 when more bytes are needed, ERR_FRAME_TOO_LARGE, or ERR_PROTOCOL for a payload that does not
 * unpack, an empty Frame, or a message whose fields break the protocol's rules. After an error the
 * decoder must not be used further. */
int wire_decoder_next(wire_decoder_t *d, wire_msg_t **ret_msg);

/* Decodes exactly one payload (no header). Same returns as wire_decoder_next (1 on success). */
int wire_decode_payload(const uint8_t *data, size_t len, wire_msg_t **ret_msg);

/* Frees a decoded message; accepts NULL. */
void wire_msg_free(wire_msg_t *msg);

/* Returns the message type's name ("Hello", "Result"...), for logs. */
const char *wire_type_name(wire_type_t type);

#endif
