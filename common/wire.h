/* Framing and message encoding for the understudy protocol (proto/understudy.proto).
 *
 * A frame is a 4-byte big-endian payload length followed by one serialized Frame message. This is
 * the only module that includes the protobuf-c generated headers; the rest of the code sees the
 * plain C mirror below, one struct per proto message, with the proto's field names.
 *
 * Ownership: a decoded wire_msg_t owns its memory (every string, byte field and array in it points
 * into it) and is released with wire_msg_free(). A message built by the caller for wire_encode()
 * only borrows the caller's data; nothing is copied and nothing is kept after the call.
 *
 * Conventions of the mirror: strings are NUL-terminated; a decoded string is never NULL (an absent
 * string is ""), a NULL string in a message to encode is sent as "". Byte fields are wire_bytes_t
 * and their data may be NULL when len is 0. Repeated fields are an array plus its count n_<field>;
 * the array may be NULL when the count is 0.
 */
#ifndef UNDERSTUDY_WIRE_H
#define UNDERSTUDY_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "buf.h"

#define WIRE_MAGIC       "understudy"
#define WIRE_HEADER_SIZE 4
/* Default cap on one frame's payload; file data and row batches are chunked well below it. */
#define WIRE_MAX_FRAME_DEFAULT (16u * 1024 * 1024)
/* Cap on the memory one decoded frame may take. protobuf-c's unpacked form of a frame of many
 * small fields (rows of short values) is up to ~100x its wire size, so the frame cap alone does
 * not bound memory; a frame whose decoded form would pass this is refused as
 * ERR_FRAME_TOO_LARGE. Senders keep row batches to a few thousand rows. */
#define WIRE_DECODE_BUDGET (64u * 1024 * 1024)

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
    WIRE_SYNC_READY,
    WIRE_FILES_NEED_END,
} wire_type_t;

/* The highest message type; keep it the last of the enum above. */
#define WIRE_TYPE_LAST WIRE_FILES_NEED_END

/* The enums below carry the proto's numeric values. A decoded message only ever holds one of the
 * listed values: anything else is rejected with ERR_PROTOCOL, so a switch over them is complete. */

typedef enum wire_role {
    WIRE_ROLE_UNSPECIFIED = 0,
    WIRE_ROLE_AGENT = 1,
    WIRE_ROLE_CONTROLLER = 2,
} wire_role_t;

typedef enum wire_file_kind {
    WIRE_FILE_REGULAR = 0,
    WIRE_FILE_DIRECTORY = 1,
    WIRE_FILE_SYMLINK = 2,
} wire_file_kind_t;

typedef enum wire_transfer {
    WIRE_TRANSFER_WHOLE = 0,
    WIRE_TRANSFER_DELTA = 1, /* signature attached: send a delta against it */
    WIRE_TRANSFER_NONE = 2,  /* content already present by hash on the controller */
} wire_transfer_t;

typedef enum wire_table_kind {
    WIRE_TABLE_BASE = 0,
    WIRE_TABLE_VIEW = 1,
    WIRE_TABLE_TRIGGER = 2,
    WIRE_TABLE_ROUTINE = 3,
    WIRE_TABLE_EVENT = 4,
    /* A stored function. On the wire it is TABLE_ROUTINE with `function` set (a procedure and a
     * function may share a name); above the wire it is a kind of its own, and
     * WIRE_TABLE_ROUTINE is a procedure. */
    WIRE_TABLE_FUNCTION = 5,
} wire_table_kind_t;

typedef enum wire_status {
    WIRE_STATUS_APPLIED = 0,
    WIRE_STATUS_UNCHANGED = 1,
    WIRE_STATUS_REFUSED = 2,
    WIRE_STATUS_FAILED = 3,
} wire_status_t;

/* A byte string that need not be NUL-terminated (paths, hashes, row values). */
typedef struct wire_bytes {
    const uint8_t *data;
    size_t len;
} wire_bytes_t;

typedef struct wire_hello {
    const char *magic; /* WIRE_MAGIC; wire_encode() fills it in when NULL */
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
    bool files_only; /* no database phase: an unchanged tree's Result may replace SyncReady */
} wire_sync_begin_t;

/* ---- files phase ----
 *
 * Paths are checked on encode and decode: a path is relative to the site root, '/'-separated,
 * without NUL bytes and without '.', '..' or empty parts (so no leading or trailing '/'). The site
 * root itself is the empty path, allowed only in DirDigest. Link targets are not checked here. */

typedef struct wire_dir_digest {
    wire_bytes_t path; /* "" is the site root */
    wire_bytes_t digest;
} wire_dir_digest_t;

typedef struct wire_file_entry {
    wire_bytes_t path;
    wire_file_kind_t kind;
    uint32_t mode; /* permission bits only: at most 07777 */
    int64_t mtime_ns;
    uint64_t size;
    wire_bytes_t hash;        /* SHA-256 of the content (regular files) */
    wire_bytes_t link_target; /* symlinks */
    bool deleted;
} wire_file_entry_t;

typedef struct wire_file_need {
    wire_bytes_t path;
    wire_transfer_t transfer;
    wire_bytes_t signature; /* WIRE_TRANSFER_DELTA */
    uint64_t resume_offset;
} wire_file_need_t;

typedef struct wire_file_data {
    wire_bytes_t path;
    uint64_t offset;
    wire_bytes_t data;
    bool zstd; /* data is one zstd frame */
    bool last;
} wire_file_data_t;

typedef struct wire_file_delta {
    wire_bytes_t path;
    wire_bytes_t delta; /* a piece of the delta stream */
    bool last;
} wire_file_delta_t;

typedef struct wire_sync_ready {
    uint64_t live_generation;
    bool full_listing;
    wire_bytes_t live_tree_digest;
} wire_sync_ready_t;

typedef struct wire_files_need_end {
    uint64_t need_count;
    uint64_t need_bytes;
} wire_files_need_end_t;

typedef struct wire_files_end {
    wire_bytes_t tree_digest;
    uint64_t file_count;
    uint64_t total_bytes;
} wire_files_end_t;

/* ---- database phase ---- */

typedef struct wire_table_summary {
    const char *name;
    wire_table_kind_t kind;
    uint64_t row_count;
    wire_bytes_t digest;
    const wire_bytes_t *chunk_digests;
    size_t n_chunk_digests;
    bool chunks_withheld; /* the table has chunk digests, sent on request (DbNeed.digests) */
} wire_table_summary_t;

typedef struct wire_db_begin {
    const char *charset;
    const char *table_prefix;
    const wire_table_summary_t *tables;
    size_t n_tables;
    const char *const *non_transactional;
    size_t n_non_transactional;
    const char *schema; /* the primary's database name */
    bool deferred;      /* base tables with an empty digest are not digested yet */
} wire_db_begin_t;

/* Chunks may only be listed together with exactly one table. */
typedef struct wire_db_need {
    const char *const *tables;
    size_t n_tables;
    const uint32_t *chunks;
    size_t n_chunks;
    bool more;                  /* another DbNeed follows */
    const char *const *digests; /* deferred tables whose digests are wanted first */
    size_t n_digests;
} wire_db_need_t;

typedef struct wire_column_def {
    const char *name;
    const char *column_type; /* e.g. "varchar(191)", "bigint(20) unsigned" */
    uint32_t sql_type;       /* MYSQL_TYPE_* of the column */
    bool nullable;
    const char *charset;
    const char *collation;
    bool generated; /* virtual or stored generated column: never inserted */
    const char *default_value;
    bool has_default;
    const char *extra;                 /* e.g. "auto_increment" */
    bool binary;                       /* values are bytes, not text */
    const char *generation_expression; /* generated columns */
    bool stored;                       /* generated column is STORED (else VIRTUAL) */
} wire_column_def_t;

/* prefix_lengths is either empty or holds one entry per column (0 = whole column). */
typedef struct wire_index_def {
    const char *name; /* "PRIMARY" for the primary key */
    bool unique;
    const char *const *columns;
    size_t n_columns;
    const uint32_t *prefix_lengths;
    size_t n_prefix_lengths;
    const char *index_type; /* BTREE, FULLTEXT, SPATIAL, HASH */
} wire_index_def_t;

typedef struct wire_check_def {
    const char *name;
    const char *clause;
    const char *column; /* "" for a table-level constraint */
} wire_check_def_t;

typedef struct wire_table_def {
    const char *name;
    wire_table_kind_t kind;
    const char *engine;
    const char *charset;
    const char *collation;
    uint64_t auto_increment;
    const wire_column_def_t *columns;
    size_t n_columns;
    const wire_index_def_t *indexes;
    size_t n_indexes;
    const char *create_sql; /* views, triggers, routines */
    const char *comment;
    const char *sql_mode;           /* views, triggers, routines, events */
    const char *time_zone;          /* events */
    const wire_check_def_t *checks; /* base tables: CHECK constraints */
    size_t n_checks;
} wire_table_def_t;

/* One row: a value per non-generated column, in TableDef order, in MySQL text form. Bit i of nulls
 * (byte i / 8, bit i % 8, least significant first) set means column i is NULL. nulls is at most
 * (n_values + 7) / 8 bytes long, may be shorter (missing bytes are zero) and has no bit set at or
 * past n_values. */
typedef struct wire_row {
    const wire_bytes_t *values;
    size_t n_values;
    wire_bytes_t nulls;
} wire_row_t;

/* Returns whether column i of row is NULL. */
static inline bool wire_row_is_null(const wire_row_t *row, size_t i)
{
    return i / 8 < row->nulls.len && (row->nulls.data[i / 8] >> (i % 8)) & 1;
}

/* The row digest both sides agree on, "<rows>:<sum>": per row the first 64 bits (big-endian) of
 * an MD5 over every value as "<byte length>:<bytes>" ("-" for NULL), summed exactly. It is the
 * value of the SQL the agent runs inside its snapshot (agent/dbsend.c digest_sql,
 * controller/dbddl.c dbddl_digest_sql: SUM(CONV(LEFT(MD5(CONCAT(IFNULL(CONCAT(LENGTH(c), ':',
 * CAST(c AS BINARY)), '-'), ...)), 16), 16, 10))) over the same rows in MySQL's text form, so
 * it can also be computed from a row stream. */
typedef struct wire_rowsum {
    uint64_t rows;
    uint64_t hi, lo; /* the 128-bit sum */
    void *md;        /* EVP_MD_CTX, reused from row to row */
} wire_rowsum_t;

/* Starts an empty sum. Returns 0 or UV_ENOMEM. */
int wire_rowsum_init(wire_rowsum_t *s);
/* Adds one row; *ret_hash (may be NULL) gets the row's 64-bit value. Returns 0 or UV_ENOMEM. */
int wire_rowsum_add(wire_rowsum_t *s, const wire_row_t *row, uint64_t *ret_hash);
/* Writes "<rows>:<sum>" (decimal) into out (64 bytes suffice). */
void wire_rowsum_text(const wire_rowsum_t *s, char *out, size_t size);
/* Frees what init allocated; accepts a zeroed struct. */
void wire_rowsum_free(wire_rowsum_t *s);

typedef struct wire_row_batch {
    const char *table;
    uint32_t chunk;
    const wire_row_t *rows;
    size_t n_rows;
} wire_row_batch_t;

typedef struct wire_table_end {
    const char *table;
    uint64_t row_count;
    wire_bytes_t digest;
    wire_bytes_t table_digest;         /* a deferred table's summary digest */
    const wire_bytes_t *chunk_digests; /* a deferred table's chunk digests */
    size_t n_chunk_digests;
} wire_table_end_t;

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

/* One message; type selects the member of u. */
typedef struct wire_msg {
    wire_type_t type;
    union {
        wire_hello_t hello;
        wire_error_t error;
        wire_sync_begin_t sync_begin;
        wire_dir_digest_t dir_digest;
        wire_file_entry_t file_entry;
        wire_file_need_t file_need;
        wire_file_data_t file_data;
        wire_file_delta_t file_delta;
        wire_files_end_t files_end;
        wire_sync_ready_t sync_ready;
        wire_files_need_end_t files_need_end;
        wire_db_begin_t db_begin;
        wire_db_need_t db_need;
        wire_table_def_t table_def;
        wire_row_batch_t row_batch;
        wire_table_end_t table_end;
        wire_commit_t commit;
        wire_result_t result;
    } u;
    void *priv_; /* decoded protobuf-c message that owns the strings above; NULL when built */
} wire_msg_t;

/* Serializes msg as one frame (header + payload) appended to out; msg's data is only read. The
 * message is checked against the same rules as a decoded one first. max_frame caps the payload
 * (0: WIRE_MAX_FRAME_DEFAULT) and is checked before anything is written. Returns 0,
 * ERR_PROTOCOL for a message type that cannot be sent or a message that breaks the protocol's
 * rules (wrong magic, out-of-range enum, bad path...), UV_EINVAL for a NULL array or string
 * element or NULL bytes with a non-zero length, ERR_FRAME_TOO_LARGE past max_frame, UV_ENOBUFS
 * past out's cap, UV_ENOMEM. On error out is unchanged. */
int wire_encode(const wire_msg_t *msg, size_t max_frame, buf_t *out);

/* Incremental frame decoder. Bytes are fed as they arrive; complete frames come out one by one.
 * The declared length of every frame is checked against max_frame before anything is allocated
 * for it. The fields are private. */
typedef struct wire_decoder {
    buf_t in;
    size_t max_frame;
    int error; /* sticky: the first error wire_decoder_next returned */
} wire_decoder_t;

/* Initialises d for frames of at most max_frame payload bytes (0: WIRE_MAX_FRAME_DEFAULT; values
 * past UINT32_MAX are clamped, the header cannot say more). Allocates nothing. */
void wire_decoder_init(wire_decoder_t *d, size_t max_frame);

/* Frees the buffered bytes; d may be initialised again. Accepts a zeroed decoder. */
void wire_decoder_free(wire_decoder_t *d);

/* Appends received bytes (copied). Returns 0, UV_ENOBUFS when more than 2 * max_frame +
 * WIRE_HEADER_SIZE bytes would be buffered (a caller that drains wire_decoder_next after every
 * feed never gets there with feeds of up to max_frame bytes), UV_ENOMEM, or the decoder's earlier
 * error. */
int wire_decoder_feed(wire_decoder_t *d, const void *data, size_t len);

/* Takes the next complete frame. Returns 1 and sets *ret_msg (caller frees with wire_msg_free),
 * 0 when more bytes are needed, ERR_FRAME_TOO_LARGE as soon as a header declares more than
 * max_frame bytes, ERR_PROTOCOL for an empty payload, a payload that does not unpack, an empty
 * Frame, or a message that breaks the protocol's rules (Hello.magic other than WIRE_MAGIC, an enum
 * value not listed above, a bad path, a file mode past 07777, a Row nulls bitmap that is too long
 * or marks columns past the last, IndexDef prefix lengths not matching its columns, DbNeed chunks
 * with other than one table), UV_ENOMEM (protobuf-c cannot tell running out of memory from bad
 * input: that reads as ERR_PROTOCOL). A decoded message holds up to several times its payload in
 * memory (wire_msg_size). Never calls back. After an error the decoder keeps returning it. */
int wire_decoder_next(wire_decoder_t *d, wire_msg_t **ret_msg);

/* Decodes exactly one payload (no header). Same returns as wire_decoder_next (1 on success). */
int wire_decode_payload(const uint8_t *data, size_t len, wire_msg_t **ret_msg);

/* Returns the bytes of memory a decoded message holds (its unpacked fields, arrays and strings),
 * for bounding queued input; 0 for NULL or a message the caller built. */
size_t wire_msg_size(const wire_msg_t *msg);

/* Frees a decoded message; accepts NULL. Must not be given a message the caller built. */
void wire_msg_free(wire_msg_t *msg);

/* Returns the message type's name ("Hello", "Result"...), for logs; "unknown" for values outside
 * wire_type_t. */
const char *wire_type_name(wire_type_t type);

#endif
