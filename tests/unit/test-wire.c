/* Unit tests for common/wire: round trips of every message, framing across feeds, caps checked
 * before allocating, and the protocol rules on both sides. Hand-built payloads come from a tiny
 * protobuf writer below, so the tests do not depend on the generated code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <uv.h>

#include "err.h"
#include "wire.h"

#define COUNT(a) (sizeof(a) / sizeof((a)[0]))
#define BYTES(s) ((wire_bytes_t){(const uint8_t *)(s), sizeof(s) - 1})

/* ---- comparing a decoded message with the one that was sent ---- */

static void assert_str(const char *want, const char *got)
{
    assert_non_null(got);
    assert_string_equal(want ? want : "", got);
}

static void assert_bytes(wire_bytes_t want, wire_bytes_t got)
{
    assert_int_equal(want.len, got.len);
    if (want.len)
        assert_memory_equal(want.data, got.data, want.len);
}

static void assert_strv(const char *const *want, size_t n_want, const char *const *got,
                        size_t n_got)
{
    assert_int_equal(n_want, n_got);
    for (size_t i = 0; i < n_want; i++)
        assert_str(want[i], got[i]);
}

static void assert_u32v(const uint32_t *want, size_t n_want, const uint32_t *got, size_t n_got)
{
    assert_int_equal(n_want, n_got);
    for (size_t i = 0; i < n_want; i++)
        assert_int_equal(want[i], got[i]);
}

static void assert_db_begin_equal(const wire_db_begin_t *a, const wire_db_begin_t *b)
{
    assert_str(a->charset, b->charset);
    assert_str(a->table_prefix, b->table_prefix);
    assert_int_equal(a->n_tables, b->n_tables);
    for (size_t i = 0; i < a->n_tables; i++) {
        const wire_table_summary_t *x = &a->tables[i], *y = &b->tables[i];
        assert_str(x->name, y->name);
        assert_int_equal(x->kind, y->kind);
        assert_int_equal(x->row_count, y->row_count);
        assert_bytes(x->digest, y->digest);
        assert_int_equal(x->n_chunk_digests, y->n_chunk_digests);
        for (size_t j = 0; j < x->n_chunk_digests; j++)
            assert_bytes(x->chunk_digests[j], y->chunk_digests[j]);
    }
    assert_strv(a->non_transactional, a->n_non_transactional, b->non_transactional,
                b->n_non_transactional);
}

static void assert_table_def_equal(const wire_table_def_t *a, const wire_table_def_t *b)
{
    assert_str(a->name, b->name);
    assert_int_equal(a->kind, b->kind);
    assert_str(a->engine, b->engine);
    assert_str(a->charset, b->charset);
    assert_str(a->collation, b->collation);
    assert_int_equal(a->auto_increment, b->auto_increment);
    assert_str(a->create_sql, b->create_sql);
    assert_str(a->comment, b->comment);
    assert_int_equal(a->n_columns, b->n_columns);
    for (size_t i = 0; i < a->n_columns; i++) {
        const wire_column_def_t *x = &a->columns[i], *y = &b->columns[i];
        assert_str(x->name, y->name);
        assert_str(x->column_type, y->column_type);
        assert_int_equal(x->sql_type, y->sql_type);
        assert_int_equal(x->nullable, y->nullable);
        assert_str(x->charset, y->charset);
        assert_str(x->collation, y->collation);
        assert_int_equal(x->generated, y->generated);
        assert_str(x->default_value, y->default_value);
        assert_int_equal(x->has_default, y->has_default);
        assert_str(x->extra, y->extra);
        assert_int_equal(x->binary, y->binary);
    }
    assert_int_equal(a->n_indexes, b->n_indexes);
    for (size_t i = 0; i < a->n_indexes; i++) {
        const wire_index_def_t *x = &a->indexes[i], *y = &b->indexes[i];
        assert_str(x->name, y->name);
        assert_int_equal(x->unique, y->unique);
        assert_strv(x->columns, x->n_columns, y->columns, y->n_columns);
        assert_u32v(x->prefix_lengths, x->n_prefix_lengths, y->prefix_lengths, y->n_prefix_lengths);
        assert_str(x->index_type, y->index_type);
    }
}

static void assert_row_batch_equal(const wire_row_batch_t *a, const wire_row_batch_t *b)
{
    assert_str(a->table, b->table);
    assert_int_equal(a->chunk, b->chunk);
    assert_int_equal(a->n_rows, b->n_rows);
    for (size_t i = 0; i < a->n_rows; i++) {
        const wire_row_t *x = &a->rows[i], *y = &b->rows[i];
        assert_int_equal(x->n_values, y->n_values);
        for (size_t j = 0; j < x->n_values; j++) {
            assert_bytes(x->values[j], y->values[j]);
            assert_int_equal(wire_row_is_null(x, j), wire_row_is_null(y, j));
        }
        assert_bytes(x->nulls, y->nulls);
    }
}

static void assert_msg_equal(const wire_msg_t *a, const wire_msg_t *b)
{
    assert_int_equal(a->type, b->type);
    switch (a->type) {
    case WIRE_HELLO: {
        const wire_hello_t *x = &a->u.hello, *y = &b->u.hello;
        assert_str(x->magic ? x->magic : WIRE_MAGIC, y->magic);
        assert_int_equal(x->protocol_version, y->protocol_version);
        assert_str(x->program_version, y->program_version);
        assert_str(x->site_id, y->site_id);
        assert_strv(x->capabilities, x->n_capabilities, y->capabilities, y->n_capabilities);
        assert_int_equal(x->role, y->role);
        break;
    }
    case WIRE_ERROR:
        assert_int_equal(a->u.error.code, b->u.error.code);
        assert_str(a->u.error.text, b->u.error.text);
        break;
    case WIRE_SYNC_BEGIN: {
        const wire_sync_begin_t *x = &a->u.sync_begin, *y = &b->u.sync_begin;
        assert_bytes(x->sync_id, y->sync_id);
        assert_int_equal(x->dry_run, y->dry_run);
        assert_int_equal(x->base_generation, y->base_generation);
        assert_bytes(x->tree_digest, y->tree_digest);
        assert_int_equal(x->file_count, y->file_count);
        assert_int_equal(x->files_only, y->files_only);
        break;
    }
    case WIRE_DIR_DIGEST:
        assert_bytes(a->u.dir_digest.path, b->u.dir_digest.path);
        assert_bytes(a->u.dir_digest.digest, b->u.dir_digest.digest);
        break;
    case WIRE_FILE_ENTRY: {
        const wire_file_entry_t *x = &a->u.file_entry, *y = &b->u.file_entry;
        assert_bytes(x->path, y->path);
        assert_int_equal(x->kind, y->kind);
        assert_int_equal(x->mode, y->mode);
        assert_true(x->mtime_ns == y->mtime_ns);
        assert_int_equal(x->size, y->size);
        assert_bytes(x->hash, y->hash);
        assert_bytes(x->link_target, y->link_target);
        assert_int_equal(x->deleted, y->deleted);
        break;
    }
    case WIRE_FILE_NEED: {
        const wire_file_need_t *x = &a->u.file_need, *y = &b->u.file_need;
        assert_bytes(x->path, y->path);
        assert_int_equal(x->transfer, y->transfer);
        assert_bytes(x->signature, y->signature);
        assert_int_equal(x->resume_offset, y->resume_offset);
        break;
    }
    case WIRE_FILE_DATA: {
        const wire_file_data_t *x = &a->u.file_data, *y = &b->u.file_data;
        assert_bytes(x->path, y->path);
        assert_int_equal(x->offset, y->offset);
        assert_bytes(x->data, y->data);
        assert_int_equal(x->zstd, y->zstd);
        assert_int_equal(x->last, y->last);
        break;
    }
    case WIRE_FILE_DELTA:
        assert_bytes(a->u.file_delta.path, b->u.file_delta.path);
        assert_bytes(a->u.file_delta.delta, b->u.file_delta.delta);
        assert_int_equal(a->u.file_delta.last, b->u.file_delta.last);
        break;
    case WIRE_FILES_END:
        assert_bytes(a->u.files_end.tree_digest, b->u.files_end.tree_digest);
        assert_int_equal(a->u.files_end.file_count, b->u.files_end.file_count);
        assert_int_equal(a->u.files_end.total_bytes, b->u.files_end.total_bytes);
        break;
    case WIRE_SYNC_READY:
        assert_int_equal(a->u.sync_ready.live_generation, b->u.sync_ready.live_generation);
        assert_int_equal(a->u.sync_ready.full_listing, b->u.sync_ready.full_listing);
        assert_bytes(a->u.sync_ready.live_tree_digest, b->u.sync_ready.live_tree_digest);
        break;
    case WIRE_FILES_NEED_END:
        assert_int_equal(a->u.files_need_end.need_count, b->u.files_need_end.need_count);
        assert_int_equal(a->u.files_need_end.need_bytes, b->u.files_need_end.need_bytes);
        break;
    case WIRE_DB_BEGIN:
        assert_db_begin_equal(&a->u.db_begin, &b->u.db_begin);
        break;
    case WIRE_DB_NEED:
        assert_strv(a->u.db_need.tables, a->u.db_need.n_tables, b->u.db_need.tables,
                    b->u.db_need.n_tables);
        assert_u32v(a->u.db_need.chunks, a->u.db_need.n_chunks, b->u.db_need.chunks,
                    b->u.db_need.n_chunks);
        break;
    case WIRE_TABLE_DEF:
        assert_table_def_equal(&a->u.table_def, &b->u.table_def);
        break;
    case WIRE_ROW_BATCH:
        assert_row_batch_equal(&a->u.row_batch, &b->u.row_batch);
        break;
    case WIRE_TABLE_END:
        assert_str(a->u.table_end.table, b->u.table_end.table);
        assert_int_equal(a->u.table_end.row_count, b->u.table_end.row_count);
        assert_bytes(a->u.table_end.digest, b->u.table_end.digest);
        break;
    case WIRE_COMMIT:
        assert_bytes(a->u.commit.tree_digest, b->u.commit.tree_digest);
        assert_int_equal(a->u.commit.file_count, b->u.commit.file_count);
        assert_int_equal(a->u.commit.table_count, b->u.commit.table_count);
        break;
    case WIRE_RESULT:
        assert_int_equal(a->u.result.status, b->u.result.status);
        assert_int_equal(a->u.result.generation, b->u.result.generation);
        assert_int_equal(a->u.result.reason_code, b->u.result.reason_code);
        assert_str(a->u.result.reason, b->u.result.reason);
        break;
    case WIRE_NONE:
        fail_msg("WIRE_NONE compared");
    }
}

/* Encodes msg, decodes it through a decoder in one feed, checks the copy and frees it. */
static void roundtrip(const wire_msg_t *msg)
{
    buf_t out;
    buf_init(&out, 0);
    assert_int_equal(wire_encode(msg, 0, &out), 0);
    assert_true(out.len > WIRE_HEADER_SIZE);

    wire_decoder_t d;
    wire_decoder_init(&d, 0);
    assert_int_equal(wire_decoder_feed(&d, buf_data(&out), out.len), 0);
    wire_msg_t *got = NULL;
    assert_int_equal(wire_decoder_next(&d, &got), 1);
    assert_non_null(got);
    assert_msg_equal(msg, got);
    assert_int_equal(d.in.len, 0);
    assert_int_equal(wire_decoder_next(&d, &got), 0);
    wire_msg_free(got);
    wire_decoder_free(&d);
    buf_free(&out);
}

/* ---- sample messages: one or more of every type, with edge values ---- */

static const uint8_t nul_bytes[] = {0, 'a', 0, 0xff, 0};
static const char *const caps[] = {"zstd", "", "delta"};
static const wire_bytes_t chunk_digests[] = {{nul_bytes, sizeof(nul_bytes)}, {NULL, 0}};
static const wire_table_summary_t summaries[] = {
    {"wp_posts", WIRE_TABLE_BASE, 12345, {nul_bytes, 5}, chunk_digests, 2},
    {"", WIRE_TABLE_EVENT, UINT64_MAX, {NULL, 0}, NULL, 0},
    {"wp_view", WIRE_TABLE_VIEW, 0, {nul_bytes, 1}, NULL, 0},
};
static const char *const non_tx[] = {"wp_myisam", "x"};
static const char *const need_tables[] = {"wp_options"};
static const uint32_t need_chunks[] = {0, 7, UINT32_MAX};
static const wire_column_def_t columns[] = {
    {"ID", "bigint(20) unsigned", 8, false, "", "", false, NULL, false, "auto_increment", false},
    {"post_content", "longtext", 252, true, "utf8mb4", "utf8mb4_unicode_520_ci", false, "", true,
     "", false},
    {"", "", UINT32_MAX, true, NULL, NULL, true, "now()", true, NULL, true},
};
static const char *const primary_cols[] = {"ID"};
static const char *const name_cols[] = {"post_name", "post_type"};
static const uint32_t name_prefix[] = {191, 0};
static const wire_index_def_t indexes[] = {
    {"PRIMARY", true, primary_cols, 1, NULL, 0, "BTREE"},
    {"type_status", false, name_cols, 2, name_prefix, 2, "BTREE"},
    {"", false, NULL, 0, NULL, 0, ""},
};
/* Row 0: "1", NULL, "a\0b"; row 1: no values; row 2: nine values, 0 and 8 NULL. */
static const wire_bytes_t row0_values[] = {
    {(const uint8_t *)"1", 1}, {NULL, 0}, {(const uint8_t *)"a\0b", 3}};
static const uint8_t row0_nulls[] = {0x02};
static const wire_bytes_t row2_values[] = {{NULL, 0},  BYTES("b"), BYTES("c"),
                                           BYTES("d"), BYTES("e"), BYTES("f"),
                                           BYTES("g"), BYTES(""),  {NULL, 0}};
static const uint8_t row2_nulls[] = {0x01, 0x01};
static const wire_row_t rows[] = {
    {row0_values, 3, {row0_nulls, 1}},
    {NULL, 0, {NULL, 0}},
    {row2_values, 9, {row2_nulls, 2}},
    {row0_values, 3, {NULL, 0}},
};

#define MAX_SAMPLES 40

/* Fills m (MAX_SAMPLES entries) with messages of every type; returns how many. */
static size_t samples(wire_msg_t *m)
{
    size_t n = 0;
    memset(m, 0, MAX_SAMPLES * sizeof(*m));
    m[n].type = WIRE_HELLO;
    m[n++].u.hello = (wire_hello_t){WIRE_MAGIC, 1, "0.1.0", "site-1", caps, 3, WIRE_ROLE_AGENT};
    m[n].type = WIRE_HELLO; /* magic filled in by wire_encode, strings NULL */
    m[n++].u.hello = (wire_hello_t){NULL, UINT32_MAX, NULL, "", NULL, 0, WIRE_ROLE_CONTROLLER};
    m[n].type = WIRE_ERROR;
    m[n++].u.error = (wire_error_t){UINT32_MAX, "ünïcode text"};
    m[n].type = WIRE_ERROR;
    m[n++].u.error = (wire_error_t){0, NULL};
    m[n].type = WIRE_SYNC_BEGIN;
    m[n++].u.sync_begin =
        (wire_sync_begin_t){{nul_bytes, 5}, true, UINT64_MAX, {nul_bytes, 1}, UINT64_MAX, true};
    m[n].type = WIRE_SYNC_BEGIN;
    m[n++].u.sync_begin = (wire_sync_begin_t){{NULL, 0}, false, 0, {NULL, 0}, 0, false};
    m[n].type = WIRE_DIR_DIGEST;
    m[n++].u.dir_digest = (wire_dir_digest_t){{NULL, 0}, {nul_bytes, 5}};
    m[n].type = WIRE_DIR_DIGEST;
    m[n++].u.dir_digest = (wire_dir_digest_t){BYTES("wp-content/uploads"), {NULL, 0}};
    m[n].type = WIRE_FILE_ENTRY;
    m[n++].u.file_entry =
        (wire_file_entry_t){BYTES("wp-config.php"), WIRE_FILE_REGULAR, 0640, INT64_MIN, UINT64_MAX,
                            {nul_bytes, 5},         {NULL, 0},         false};
    m[n].type = WIRE_FILE_ENTRY;
    m[n++].u.file_entry = (wire_file_entry_t){BYTES("a/\xff\xfe/..b/.c/l"),
                                              WIRE_FILE_SYMLINK,
                                              07777,
                                              INT64_MAX,
                                              0,
                                              {NULL, 0},
                                              BYTES("../../etc/passwd"),
                                              true};
    m[n].type = WIRE_FILE_ENTRY;
    m[n++].u.file_entry =
        (wire_file_entry_t){BYTES("d"), WIRE_FILE_DIRECTORY, 0, -1, 1, {NULL, 0}, {NULL, 0}, 0};
    m[n].type = WIRE_FILE_NEED;
    m[n++].u.file_need =
        (wire_file_need_t){BYTES("x/y"), WIRE_TRANSFER_DELTA, {nul_bytes, 5}, UINT64_MAX};
    m[n].type = WIRE_FILE_NEED;
    m[n++].u.file_need = (wire_file_need_t){BYTES("z"), WIRE_TRANSFER_NONE, {NULL, 0}, 0};
    m[n].type = WIRE_FILE_DATA;
    m[n++].u.file_data = (wire_file_data_t){BYTES("f"), UINT64_MAX, {nul_bytes, 5}, true, true};
    m[n].type = WIRE_FILE_DATA;
    m[n++].u.file_data = (wire_file_data_t){BYTES("f"), 0, {NULL, 0}, false, false};
    m[n].type = WIRE_FILE_DELTA;
    m[n++].u.file_delta = (wire_file_delta_t){BYTES("f"), {nul_bytes, 5}, true};
    m[n].type = WIRE_FILES_END;
    m[n++].u.files_end = (wire_files_end_t){{nul_bytes, 5}, UINT64_MAX, UINT64_MAX};
    m[n].type = WIRE_SYNC_READY;
    m[n++].u.sync_ready = (wire_sync_ready_t){UINT64_MAX, true, {nul_bytes, 5}};
    m[n].type = WIRE_FILES_NEED_END;
    m[n++].u.files_need_end = (wire_files_need_end_t){0, UINT64_MAX};
    m[n].type = WIRE_DB_BEGIN;
    m[n++].u.db_begin = (wire_db_begin_t){"utf8mb4", "wp_", summaries, 3, non_tx, 2};
    m[n].type = WIRE_DB_BEGIN;
    m[n++].u.db_begin = (wire_db_begin_t){NULL, NULL, NULL, 0, NULL, 0};
    m[n].type = WIRE_DB_NEED;
    m[n++].u.db_need = (wire_db_need_t){need_tables, 1, need_chunks, 3};
    m[n].type = WIRE_DB_NEED;
    m[n++].u.db_need = (wire_db_need_t){non_tx, 2, NULL, 0};
    m[n].type = WIRE_TABLE_DEF;
    m[n++].u.table_def = (wire_table_def_t){
        "wp_posts", WIRE_TABLE_BASE, "InnoDB", "utf8mb4", "utf8mb4_unicode_520_ci",
        UINT64_MAX, columns,         3,        indexes,   3,
        "",         "posts"};
    m[n].type = WIRE_TABLE_DEF;
    m[n++].u.table_def = (wire_table_def_t){"v",
                                            WIRE_TABLE_ROUTINE,
                                            NULL,
                                            NULL,
                                            NULL,
                                            0,
                                            NULL,
                                            0,
                                            NULL,
                                            0,
                                            "CREATE PROCEDURE p() SELECT 1",
                                            NULL};
    m[n].type = WIRE_ROW_BATCH;
    m[n++].u.row_batch = (wire_row_batch_t){"wp_posts", UINT32_MAX, rows, COUNT(rows)};
    m[n].type = WIRE_ROW_BATCH;
    m[n++].u.row_batch = (wire_row_batch_t){"", 0, NULL, 0};
    m[n].type = WIRE_TABLE_END;
    m[n++].u.table_end = (wire_table_end_t){"wp_posts", UINT64_MAX, {nul_bytes, 5}};
    m[n].type = WIRE_COMMIT;
    m[n++].u.commit = (wire_commit_t){{nul_bytes, 5}, UINT64_MAX, UINT32_MAX};
    m[n].type = WIRE_COMMIT;
    m[n++].u.commit = (wire_commit_t){{NULL, 0}, 0, 0};
    for (int s = WIRE_STATUS_APPLIED; s <= WIRE_STATUS_FAILED; s++) {
        m[n].type = WIRE_RESULT;
        m[n++].u.result = (wire_result_t){(wire_status_t)s, UINT64_MAX, 40, "refused: x"};
    }
    assert_true(n <= MAX_SAMPLES);
    return n;
}

static void t_roundtrip_samples(void **state)
{
    wire_msg_t m[MAX_SAMPLES];
    size_t n = samples(m);
    bool seen[WIRE_TYPE_LAST + 1] = {false};
    for (size_t i = 0; i < n; i++) {
        roundtrip(&m[i]);
        seen[m[i].type] = true;
    }
    for (int t = WIRE_HELLO; t <= WIRE_TYPE_LAST; t++)
        assert_true(seen[t]);
}

/* A zeroed body of every type that needs no path goes through as is. */
static void t_roundtrip_zeroed(void **state)
{
    for (int t = WIRE_HELLO; t <= WIRE_RESULT; t++) {
        wire_msg_t m;
        memset(&m, 0, sizeof(m));
        m.type = (wire_type_t)t;
        buf_t out;
        buf_init(&out, 0);
        int r = wire_encode(&m, 0, &out);
        if (t == WIRE_FILE_ENTRY || t == WIRE_FILE_NEED || t == WIRE_FILE_DATA ||
            t == WIRE_FILE_DELTA) {
            assert_int_equal(r, ERR_PROTOCOL); /* the empty path is only the root's */
            assert_int_equal(out.len, 0);
        } else {
            assert_int_equal(r, 0);
            roundtrip(&m);
        }
        buf_free(&out);
    }
}

static void t_roundtrip_many(void **state)
{
    enum { N = 5000 };
    /* Many capabilities, tables, chunk digests, columns, rows and values. */
    const char **strs = calloc(N, sizeof(*strs));
    wire_bytes_t *vals = calloc(N, sizeof(*vals));
    uint32_t *u32 = calloc(N, sizeof(*u32));
    wire_table_summary_t *ts = calloc(N, sizeof(*ts));
    wire_column_def_t *cols = calloc(N, sizeof(*cols));
    wire_row_t *rs = calloc(N, sizeof(*rs));
    uint8_t *nulls = calloc((N + 7) / 8, 1);
    char(*names)[16] = calloc(N, sizeof(*names));
    assert_true(strs && vals && u32 && ts && cols && rs && nulls && names);
    for (size_t i = 0; i < N; i++) {
        snprintf(names[i], sizeof(names[i]), "n%zu", i);
        strs[i] = names[i];
        vals[i] = (wire_bytes_t){(const uint8_t *)names[i], i % 3 ? strlen(names[i]) : 0};
        if (i % 3 == 0)
            nulls[i / 8] |= (uint8_t)(1u << (i % 8));
        u32[i] = (uint32_t)i * 2654435761u;
        ts[i] =
            (wire_table_summary_t){names[i], (wire_table_kind_t)(i % 5), i, vals[i], vals, i % 7};
        cols[i] = (wire_column_def_t){.name = names[i], .sql_type = (uint32_t)i};
        rs[i] = (wire_row_t){vals, i % 11, {NULL, 0}};
    }
    rs[N - 1] = (wire_row_t){vals, N, {nulls, (N + 7) / 8}};

    wire_msg_t m = {.type = WIRE_HELLO};
    m.u.hello = (wire_hello_t){.capabilities = strs, .n_capabilities = N};
    roundtrip(&m);
    m = (wire_msg_t){.type = WIRE_DB_BEGIN};
    m.u.db_begin = (wire_db_begin_t){
        .tables = ts, .n_tables = N, .non_transactional = strs, .n_non_transactional = N};
    roundtrip(&m);
    m = (wire_msg_t){.type = WIRE_DB_NEED};
    m.u.db_need = (wire_db_need_t){strs, 1, u32, N};
    roundtrip(&m);
    m = (wire_msg_t){.type = WIRE_TABLE_DEF};
    m.u.table_def = (wire_table_def_t){.columns = cols, .n_columns = N};
    roundtrip(&m);
    m = (wire_msg_t){.type = WIRE_ROW_BATCH};
    m.u.row_batch = (wire_row_batch_t){"t", 1, rs, N};
    roundtrip(&m);

    /* A megabyte of file data with every byte value. */
    uint8_t *big = malloc(1 << 20);
    assert_non_null(big);
    for (size_t i = 0; i < 1 << 20; i++)
        big[i] = (uint8_t)(i * 7);
    m = (wire_msg_t){.type = WIRE_FILE_DATA};
    m.u.file_data = (wire_file_data_t){BYTES("big"), 0, {big, 1 << 20}, false, true};
    roundtrip(&m);

    free(big);
    free(names);
    free(nulls);
    free(rs);
    free(cols);
    free(ts);
    free(u32);
    free(vals);
    free(strs);
}

/* ---- framing ---- */

/* Encodes every sample into one buffer; returns the count. */
static size_t encode_samples(wire_msg_t *m, buf_t *out)
{
    size_t n = samples(m);
    buf_init(out, 0);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(wire_encode(&m[i], 0, out), 0);
    return n;
}

/* Feeds out in pieces of `step` bytes, draining after each; checks every message arrives. */
static void feed_in_steps(size_t step)
{
    wire_msg_t m[MAX_SAMPLES];
    buf_t out;
    size_t n = encode_samples(m, &out);
    wire_decoder_t d;
    wire_decoder_init(&d, 4096);
    size_t got = 0;
    const uint8_t *p = buf_data(&out);
    for (size_t off = 0; off < out.len; off += step) {
        size_t len = out.len - off < step ? out.len - off : step;
        assert_int_equal(wire_decoder_feed(&d, p + off, len), 0);
        wire_msg_t *msg;
        int r;
        while ((r = wire_decoder_next(&d, &msg)) == 1) {
            assert_true(got < n);
            assert_msg_equal(&m[got++], msg);
            wire_msg_free(msg);
        }
        assert_int_equal(r, 0);
    }
    assert_int_equal(got, n);
    assert_int_equal(d.in.len, 0);
    wire_decoder_free(&d);
    buf_free(&out);
}

static void t_split_byte_by_byte(void **state)
{
    feed_in_steps(1);
    feed_in_steps(3);
    feed_in_steps(WIRE_HEADER_SIZE);
}

static void t_many_frames_one_feed(void **state)
{
    wire_msg_t m[MAX_SAMPLES];
    buf_t out;
    size_t n = encode_samples(m, &out);
    wire_decoder_t d;
    wire_decoder_init(&d, 0);
    assert_int_equal(wire_decoder_feed(&d, buf_data(&out), out.len), 0);
    for (size_t i = 0; i < n; i++) {
        wire_msg_t *msg;
        assert_int_equal(wire_decoder_next(&d, &msg), 1);
        assert_msg_equal(&m[i], msg);
        wire_msg_free(msg);
    }
    wire_msg_t *msg = NULL;
    assert_int_equal(wire_decoder_next(&d, &msg), 0);
    assert_null(msg);
    wire_decoder_free(&d);
    buf_free(&out);
}

/* A long stream through a small decoder, fed in pieces of one and a half frames: the buffer is
 * reused, not grown. */
static void t_stream_reuses_buffer(void **state)
{
    wire_msg_t m = {.type = WIRE_FILE_DATA};
    m.u.file_data = (wire_file_data_t){BYTES("a/b"), 0, BYTES("0123456789abcdef"), false, false};
    buf_t out;
    buf_init(&out, 0);
    assert_int_equal(wire_encode(&m, 0, &out), 0);
    const uint8_t *frame = buf_data(&out);
    size_t piece = out.len + out.len / 2, pos = 0, got = 0;
    uint8_t chunk[256];
    assert_true(piece <= sizeof(chunk));
    wire_decoder_t d;
    wire_decoder_init(&d, 64);
    for (int i = 0; i < 10000; i++) {
        for (size_t j = 0; j < piece; j++)
            chunk[j] = frame[pos++ % out.len];
        assert_int_equal(wire_decoder_feed(&d, chunk, piece), 0);
        wire_msg_t *msg;
        while (wire_decoder_next(&d, &msg) == 1) {
            assert_msg_equal(&m, msg);
            wire_msg_free(msg);
            got++;
        }
    }
    assert_int_equal(got, pos / out.len);
    assert_true(d.in.cap <= 256);
    wire_decoder_free(&d);
    buf_free(&out);
}

static void t_oversize_header(void **state)
{
    /* A header claiming 4 GiB: refused at once, nothing allocated beyond the header. */
    static const uint8_t huge[] = {0xff, 0xff, 0xff, 0xff};
    wire_decoder_t d;
    wire_decoder_init(&d, 1 << 20);
    assert_int_equal(wire_decoder_feed(&d, huge, sizeof(huge)), 0);
    wire_msg_t *msg = NULL;
    assert_int_equal(wire_decoder_next(&d, &msg), ERR_FRAME_TOO_LARGE);
    assert_null(msg);
    assert_true(d.in.cap <= 256);
    /* The decoder stays failed. */
    assert_int_equal(wire_decoder_next(&d, &msg), ERR_FRAME_TOO_LARGE);
    assert_int_equal(wire_decoder_feed(&d, huge, 1), ERR_FRAME_TOO_LARGE);
    wire_decoder_free(&d);

    /* Also with the default cap, and one byte past a small cap. */
    wire_decoder_init(&d, 0);
    assert_int_equal(wire_decoder_feed(&d, huge, sizeof(huge)), 0);
    assert_int_equal(wire_decoder_next(&d, &msg), ERR_FRAME_TOO_LARGE);
    wire_decoder_free(&d);

    static const uint8_t just_over[] = {0, 0, 0, 101};
    static const uint8_t at_cap[] = {0, 0, 0, 100};
    wire_decoder_init(&d, 100);
    assert_int_equal(wire_decoder_feed(&d, at_cap, sizeof(at_cap)), 0);
    assert_int_equal(wire_decoder_next(&d, &msg), 0); /* waits for 100 bytes */
    wire_decoder_free(&d);
    wire_decoder_init(&d, 100);
    assert_int_equal(wire_decoder_feed(&d, just_over, sizeof(just_over)), 0);
    assert_int_equal(wire_decoder_next(&d, &msg), ERR_FRAME_TOO_LARGE);
    wire_decoder_free(&d);
}

static void t_feed_cap(void **state)
{
    uint8_t zeros[2 * 16 + WIRE_HEADER_SIZE + 1] = {0};
    wire_decoder_t d;
    wire_decoder_init(&d, 16);
    assert_int_equal(wire_decoder_feed(&d, zeros, sizeof(zeros) - 1), 0);
    assert_int_equal(wire_decoder_feed(&d, zeros, 1), UV_ENOBUFS);
    assert_int_equal(d.in.len, sizeof(zeros) - 1);
    wire_decoder_free(&d);

    wire_decoder_init(&d, 16);
    assert_int_equal(wire_decoder_feed(&d, zeros, sizeof(zeros)), UV_ENOBUFS);
    assert_int_equal(wire_decoder_feed(&d, zeros, 0), 0);
    wire_decoder_free(&d);
}

static void t_truncated_waits(void **state)
{
    wire_msg_t m = {.type = WIRE_COMMIT};
    m.u.commit = (wire_commit_t){{nul_bytes, 5}, 42, 7};
    buf_t out;
    buf_init(&out, 0);
    assert_int_equal(wire_encode(&m, 0, &out), 0);
    const uint8_t *p = buf_data(&out);
    wire_decoder_t d;
    wire_decoder_init(&d, 0);
    wire_msg_t *msg = NULL;
    assert_int_equal(wire_decoder_next(&d, &msg), 0); /* nothing at all */
    for (size_t cut = 0; cut < out.len; cut++) {
        wire_decoder_free(&d);
        wire_decoder_init(&d, 0);
        assert_int_equal(wire_decoder_feed(&d, p, cut), 0);
        assert_int_equal(wire_decoder_next(&d, &msg), 0);
        assert_int_equal(wire_decoder_next(&d, &msg), 0);
        assert_int_equal(wire_decoder_feed(&d, p + cut, out.len - cut), 0);
        assert_int_equal(wire_decoder_next(&d, &msg), 1);
        assert_msg_equal(&m, msg);
        wire_msg_free(msg);
    }
    wire_decoder_free(&d);
    buf_free(&out);
}

/* ---- hand-built payloads ---- */

typedef struct pb {
    uint8_t b[256];
    size_t n;
} pb_t;

static void pb_varint(pb_t *p, uint64_t v)
{
    do {
        assert_true(p->n < sizeof(p->b));
        p->b[p->n++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
}

static void pb_len(pb_t *p, uint32_t field, const void *data, size_t len)
{
    pb_varint(p, (uint64_t)field << 3 | 2);
    pb_varint(p, len);
    assert_true(p->n + len <= sizeof(p->b));
    memcpy(p->b + p->n, data, len);
    p->n += len;
}

static void pb_uint(pb_t *p, uint32_t field, uint64_t v)
{
    pb_varint(p, (uint64_t)field << 3);
    pb_varint(p, v);
}

/* A Frame carrying body (already serialized) as field `type`. */
static pb_t frame_of(wire_type_t type, const pb_t *body)
{
    pb_t f = {.n = 0};
    pb_len(&f, (uint32_t)type, body->b, body->n);
    return f;
}

/* Decodes payload both ways (bare and framed) and checks both give want. */
static void expect_payload(const uint8_t *data, size_t len, int want)
{
    wire_msg_t *msg = NULL;
    int r = wire_decode_payload(data, len, &msg);
    assert_int_equal(r, want);
    if (r == 1)
        wire_msg_free(msg);
    else
        assert_null(msg);

    uint8_t hdr[4] = {(uint8_t)(len >> 24), (uint8_t)(len >> 16), (uint8_t)(len >> 8),
                      (uint8_t)len};
    wire_decoder_t d;
    wire_decoder_init(&d, 0);
    assert_int_equal(wire_decoder_feed(&d, hdr, sizeof(hdr)), 0);
    assert_int_equal(wire_decoder_feed(&d, data, len), 0);
    msg = NULL;
    r = wire_decoder_next(&d, &msg);
    assert_int_equal(r, want);
    if (r == 1)
        wire_msg_free(msg);
    wire_decoder_free(&d);
}

static void expect_frame(wire_type_t type, const pb_t *body, int want)
{
    pb_t f = frame_of(type, body);
    expect_payload(f.b, f.n, want);
}

static void t_garbage(void **state)
{
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff};
    expect_payload(junk, sizeof(junk), ERR_PROTOCOL);
    /* Truncated inside a length-delimited field. */
    static const uint8_t cut[] = {0x0a, 0x10, 0x0a, 0x0a, 'u'};
    expect_payload(cut, sizeof(cut), ERR_PROTOCOL);
    /* A varint that never ends. */
    static const uint8_t endless[] = {0x08, 0x80, 0x80, 0x80, 0x80, 0x80,
                                      0x80, 0x80, 0x80, 0x80, 0x80, 0x80};
    expect_payload(endless, sizeof(endless), ERR_PROTOCOL);
    /* Wrong wire type for the hello field. */
    static const uint8_t wrong_type[] = {0x08, 0x01};
    expect_payload(wrong_type, sizeof(wrong_type), ERR_PROTOCOL);
}

static void t_empty_frame(void **state)
{
    /* A zero-length payload (what an empty Frame packs to) and a Frame with only an unknown
     * field: no body either way. */
    expect_payload((const uint8_t *)"", 0, ERR_PROTOCOL);
    static const uint8_t unknown_only[] = {0xa0, 0x06, 0x01};
    expect_payload(unknown_only, sizeof(unknown_only), ERR_PROTOCOL);

    wire_msg_t m = {.type = WIRE_NONE};
    buf_t out;
    buf_init(&out, 0);
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    m.type = (wire_type_t)99;
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

static void t_magic(void **state)
{
    pb_t h = {.n = 0};
    pb_len(&h, 1, "understudx", 10);
    expect_frame(WIRE_HELLO, &h, ERR_PROTOCOL);
    h.n = 0; /* no magic at all */
    pb_uint(&h, 2, 1);
    expect_frame(WIRE_HELLO, &h, ERR_PROTOCOL);
    h.n = 0;
    pb_len(&h, 1, "understudy", 10);
    expect_frame(WIRE_HELLO, &h, 1);

    wire_msg_t m = {.type = WIRE_HELLO};
    m.u.hello.magic = "understud";
    buf_t out;
    buf_init(&out, 0);
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

static void t_rules_on_decode(void **state)
{
    pb_t b = {.n = 0};

    /* Unknown enum values. */
    pb_len(&b, 1, "understudy", 10);
    pb_uint(&b, 6, 3);
    expect_frame(WIRE_HELLO, &b, ERR_PROTOCOL);
    b.n = 0;
    pb_len(&b, 1, "f", 1);
    pb_uint(&b, 2, 3);
    expect_frame(WIRE_FILE_ENTRY, &b, ERR_PROTOCOL);
    b.n = 0;
    pb_len(&b, 1, "f", 1);
    pb_uint(&b, 2, UINT64_MAX); /* int32 -1 on the wire */
    expect_frame(WIRE_FILE_NEED, &b, ERR_PROTOCOL);
    b.n = 0;
    pb_uint(&b, 1, 4);
    expect_frame(WIRE_RESULT, &b, ERR_PROTOCOL);
    b.n = 0;
    pb_uint(&b, 2, 5);
    expect_frame(WIRE_TABLE_DEF, &b, ERR_PROTOCOL);

    /* Mode past the permission bits. */
    b.n = 0;
    pb_len(&b, 1, "f", 1);
    pb_uint(&b, 3, 010000);
    expect_frame(WIRE_FILE_ENTRY, &b, ERR_PROTOCOL);

    /* Paths. */
    static const char *const bad_paths[] = {"",  "/etc", "a//b", "a/", "..",  "a/../b",
                                            ".", "./a",  "a/.",  "/",  "a/.."};
    for (size_t i = 0; i < COUNT(bad_paths); i++) {
        wire_type_t types[] = {WIRE_FILE_ENTRY, WIRE_FILE_NEED, WIRE_FILE_DATA, WIRE_FILE_DELTA};
        for (size_t t = 0; t < COUNT(types); t++) {
            b.n = 0;
            pb_len(&b, 1, bad_paths[i], strlen(bad_paths[i]));
            pb_uint(&b, 8, 1); /* a later field so that even "" is present */
            expect_frame(types[t], &b, ERR_PROTOCOL);
        }
        b.n = 0;
        pb_len(&b, 1, bad_paths[i], strlen(bad_paths[i]));
        expect_frame(WIRE_DIR_DIGEST, &b, bad_paths[i][0] ? ERR_PROTOCOL : 1);
    }
    b.n = 0;
    pb_len(&b, 1, "a\0b", 3);
    expect_frame(WIRE_FILE_DATA, &b, ERR_PROTOCOL);
    b.n = 0;
    pb_len(&b, 1, "...", 3);
    expect_frame(WIRE_FILE_DATA, &b, 1);

    /* Row nulls bitmap: too long, or marking a column past the last. */
    pb_t row = {.n = 0}, batch = {.n = 0};
    pb_len(&row, 1, "a", 1);
    pb_len(&row, 2, "\x01\x00", 2);
    pb_len(&batch, 3, row.b, row.n);
    expect_frame(WIRE_ROW_BATCH, &batch, ERR_PROTOCOL);
    row.n = batch.n = 0;
    pb_len(&row, 1, "a", 1);
    pb_len(&row, 2, "\x02", 1);
    pb_len(&batch, 3, row.b, row.n);
    expect_frame(WIRE_ROW_BATCH, &batch, ERR_PROTOCOL);
    row.n = batch.n = 0;
    pb_len(&row, 2, "\x00", 1); /* no values, one bitmap byte */
    pb_len(&batch, 3, row.b, row.n);
    expect_frame(WIRE_ROW_BATCH, &batch, ERR_PROTOCOL);
    row.n = batch.n = 0;
    pb_len(&row, 1, "a", 1);
    pb_len(&row, 1, "", 0);
    pb_len(&row, 2, "\x03", 1); /* both NULL: fine */
    pb_len(&batch, 3, row.b, row.n);
    expect_frame(WIRE_ROW_BATCH, &batch, 1);

    /* IndexDef prefix lengths not one per column. */
    pb_t idx = {.n = 0}, def = {.n = 0};
    pb_len(&idx, 3, "a", 1);
    pb_len(&idx, 3, "b", 1);
    pb_len(&idx, 4, "\x05", 1); /* packed: one prefix length */
    pb_len(&def, 8, idx.b, idx.n);
    expect_frame(WIRE_TABLE_DEF, &def, ERR_PROTOCOL);

    /* DbNeed chunks with two tables, and with none. */
    b.n = 0;
    pb_len(&b, 1, "a", 1);
    pb_len(&b, 1, "b", 1);
    pb_len(&b, 2, "\x01", 1);
    expect_frame(WIRE_DB_NEED, &b, ERR_PROTOCOL);
    b.n = 0;
    pb_len(&b, 2, "\x01", 1);
    expect_frame(WIRE_DB_NEED, &b, ERR_PROTOCOL);

    /* Unknown fields are skipped (a newer peer may add fields). */
    b.n = 0;
    pb_uint(&b, 2, 5);
    pb_uint(&b, 99, 1);
    pb_len(&b, 100, "xyz", 3);
    expect_frame(WIRE_COMMIT, &b, 1);

    /* The same body twice: the last one wins, no leak. */
    b.n = 0;
    pb_uint(&b, 2, 5);
    pb_t twice = frame_of(WIRE_COMMIT, &b);
    pb_t hello = {.n = 0};
    pb_len(&hello, 1, "understudy", 10);
    pb_t second = frame_of(WIRE_HELLO, &hello);
    memcpy(twice.b + twice.n, second.b, second.n);
    twice.n += second.n;
    expect_payload(twice.b, twice.n, 1);
}

static void t_rules_on_encode(void **state)
{
    buf_t out;
    buf_init(&out, 0);
    wire_msg_t m = {.type = WIRE_FILE_ENTRY};
    m.u.file_entry.path = BYTES("a/../b");
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    m.u.file_entry.path = BYTES("a");
    m.u.file_entry.mode = 0100644;
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    m.u.file_entry.mode = 0644;
    m.u.file_entry.kind = (wire_file_kind_t)3;
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    m.u.file_entry.kind = WIRE_FILE_REGULAR;
    m.u.file_entry.hash = (wire_bytes_t){NULL, 3};
    assert_int_equal(wire_encode(&m, 0, &out), UV_EINVAL);

    static const wire_bytes_t one[] = {{(const uint8_t *)"x", 1}};
    static const uint8_t two_bits[] = {0x02};
    static const uint8_t too_long[] = {0x01, 0x00};
    wire_row_t row = {one, 1, {two_bits, 1}};
    m = (wire_msg_t){.type = WIRE_ROW_BATCH};
    m.u.row_batch = (wire_row_batch_t){"t", 0, &row, 1};
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    row.nulls = (wire_bytes_t){too_long, 2};
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    m.u.row_batch.rows = NULL;
    assert_int_equal(wire_encode(&m, 0, &out), UV_EINVAL);

    static const char *const with_null[] = {"a", NULL};
    m = (wire_msg_t){.type = WIRE_HELLO};
    m.u.hello = (wire_hello_t){.capabilities = with_null, .n_capabilities = 2};
    assert_int_equal(wire_encode(&m, 0, &out), UV_EINVAL);
    m.u.hello = (wire_hello_t){.role = (wire_role_t)3};
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);

    m = (wire_msg_t){.type = WIRE_DB_NEED};
    m.u.db_need = (wire_db_need_t){non_tx, 2, need_chunks, 1};
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);

    wire_index_def_t idx = {"i", false, name_cols, 2, name_prefix, 1, "BTREE"};
    m = (wire_msg_t){.type = WIRE_TABLE_DEF};
    m.u.table_def = (wire_table_def_t){.name = "t", .indexes = &idx, .n_indexes = 1};
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);

    m = (wire_msg_t){.type = WIRE_RESULT};
    m.u.result.status = (wire_status_t)4;
    assert_int_equal(wire_encode(&m, 0, &out), ERR_PROTOCOL);
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

static void t_encode_too_large(void **state)
{
    static uint8_t data[1000];
    wire_msg_t m = {.type = WIRE_FILE_DATA};
    m.u.file_data = (wire_file_data_t){BYTES("f"), 0, {data, sizeof(data)}, false, false};
    buf_t out;
    buf_init(&out, 0);
    assert_int_equal(wire_encode(&m, 0, &out), 0);
    size_t payload = out.len - WIRE_HEADER_SIZE;
    buf_reset(&out);

    assert_int_equal(wire_encode(&m, payload - 1, &out), ERR_FRAME_TOO_LARGE);
    assert_int_equal(out.len, 0);
    assert_int_equal(wire_encode(&m, 100, &out), ERR_FRAME_TOO_LARGE);
    assert_int_equal(wire_encode(&m, payload, &out), 0);
    assert_int_equal(out.len, payload + WIRE_HEADER_SIZE);
    /* The header says the payload's length, big-endian. */
    const uint8_t *p = buf_data(&out);
    assert_int_equal((size_t)p[0] << 24 | (size_t)p[1] << 16 | (size_t)p[2] << 8 | p[3], payload);

    /* A decoder with that cap takes it; one byte less refuses it. */
    wire_decoder_t d;
    wire_msg_t *msg;
    wire_decoder_init(&d, payload);
    assert_int_equal(wire_decoder_feed(&d, p, out.len), 0);
    assert_int_equal(wire_decoder_next(&d, &msg), 1);
    wire_msg_free(msg);
    wire_decoder_free(&d);
    wire_decoder_init(&d, payload - 1);
    assert_int_equal(wire_decoder_feed(&d, p, out.len), 0);
    assert_int_equal(wire_decoder_next(&d, &msg), ERR_FRAME_TOO_LARGE);
    wire_decoder_free(&d);
    buf_free(&out);

    /* An output buffer with a cap: UV_ENOBUFS, nothing written. */
    buf_init(&out, 100);
    assert_int_equal(wire_encode(&m, 0, &out), UV_ENOBUFS);
    assert_int_equal(out.len, 0);
    buf_free(&out);
}

static void t_type_names(void **state)
{
    for (int i = WIRE_HELLO; i <= WIRE_TYPE_LAST; i++) {
        const char *name = wire_type_name((wire_type_t)i);
        assert_non_null(name);
        assert_string_not_equal(name, "unknown");
        for (int j = WIRE_HELLO; j < i; j++)
            assert_string_not_equal(name, wire_type_name((wire_type_t)j));
    }
    assert_string_equal(wire_type_name(WIRE_HELLO), "Hello");
    assert_string_equal(wire_type_name(WIRE_ROW_BATCH), "RowBatch");
    assert_string_equal(wire_type_name(WIRE_RESULT), "Result");
    assert_string_equal(wire_type_name((wire_type_t)(WIRE_TYPE_LAST + 1)), "unknown");
    assert_string_equal(wire_type_name((wire_type_t)-1), "unknown");
}

static void t_msg_size(void **state)
{
    wire_msg_t m[MAX_SAMPLES];
    buf_t out;
    size_t n = encode_samples(m, &out);
    wire_decoder_t d;
    wire_decoder_init(&d, 0);
    assert_int_equal(wire_decoder_feed(&d, buf_data(&out), out.len), 0);
    for (size_t i = 0; i < n; i++) {
        wire_msg_t *msg;
        size_t payload = d.in.len;
        assert_int_equal(wire_decoder_next(&d, &msg), 1);
        payload -= d.in.len + WIRE_HEADER_SIZE;
        /* At least the mirror, the frame and the body structs, and every byte of data. */
        assert_true(wire_msg_size(msg) >= sizeof(*msg) + payload);
        assert_int_equal(wire_msg_size(&m[i]), 0); /* built, holds nothing */
        wire_msg_free(msg);
    }
    assert_int_equal(wire_msg_size(NULL), 0);
    wire_decoder_free(&d);
    buf_free(&out);
}

static void t_free_null_and_zeroed(void **state)
{
    wire_msg_free(NULL);
    wire_decoder_t d;
    memset(&d, 0, sizeof(d));
    wire_decoder_free(&d);
    wire_decoder_init(&d, 0);
    wire_decoder_free(&d);
    wire_decoder_free(&d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(t_roundtrip_samples),    cmocka_unit_test(t_roundtrip_zeroed),
        cmocka_unit_test(t_roundtrip_many),       cmocka_unit_test(t_split_byte_by_byte),
        cmocka_unit_test(t_many_frames_one_feed), cmocka_unit_test(t_stream_reuses_buffer),
        cmocka_unit_test(t_oversize_header),      cmocka_unit_test(t_feed_cap),
        cmocka_unit_test(t_truncated_waits),      cmocka_unit_test(t_garbage),
        cmocka_unit_test(t_empty_frame),          cmocka_unit_test(t_magic),
        cmocka_unit_test(t_rules_on_decode),      cmocka_unit_test(t_rules_on_encode),
        cmocka_unit_test(t_encode_too_large),     cmocka_unit_test(t_type_names),
        cmocka_unit_test(t_free_null_and_zeroed), cmocka_unit_test(t_msg_size),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
