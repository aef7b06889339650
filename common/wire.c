/* Framing and protobuf-c conversion (see wire.h).
 *
 * Encoding builds the generated protobuf-c structs on the stack, pointing at the caller's strings
 * and bytes; only the arrays protobuf-c wants in another shape (pointers to sub-messages,
 * ProtobufCBinaryData) are allocated, in one block. The payload is packed straight into the output
 * buffer behind its header.
 *
 * Decoding unpacks with malloc (protobuf-c's default allocator, wrapped only to count the bytes for
 * wire_msg_size), then builds the mirror in one block whose strings and bytes point into the
 * unpacked message; the mirror keeps that message in priv_. The mirror is checked against the
 * protocol's rules before it is handed out.
 */
#include "wire.h"

#include <assert.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "err.h"
#include "understudy.pb-c.h"

/* The mirror's numbers are the proto's: conversions are casts. */
_Static_assert((int)WIRE_HELLO == (int)UNDERSTUDY__FRAME__BODY_HELLO, "body case");
_Static_assert((int)WIRE_ERROR == (int)UNDERSTUDY__FRAME__BODY_ERROR, "body case");
_Static_assert((int)WIRE_SYNC_BEGIN == (int)UNDERSTUDY__FRAME__BODY_SYNC_BEGIN, "body case");
_Static_assert((int)WIRE_DIR_DIGEST == (int)UNDERSTUDY__FRAME__BODY_DIR_DIGEST, "body case");
_Static_assert((int)WIRE_FILE_ENTRY == (int)UNDERSTUDY__FRAME__BODY_FILE_ENTRY, "body case");
_Static_assert((int)WIRE_FILE_NEED == (int)UNDERSTUDY__FRAME__BODY_FILE_NEED, "body case");
_Static_assert((int)WIRE_FILE_DATA == (int)UNDERSTUDY__FRAME__BODY_FILE_DATA, "body case");
_Static_assert((int)WIRE_FILE_DELTA == (int)UNDERSTUDY__FRAME__BODY_FILE_DELTA, "body case");
_Static_assert((int)WIRE_FILES_END == (int)UNDERSTUDY__FRAME__BODY_FILES_END, "body case");
_Static_assert((int)WIRE_DB_BEGIN == (int)UNDERSTUDY__FRAME__BODY_DB_BEGIN, "body case");
_Static_assert((int)WIRE_DB_NEED == (int)UNDERSTUDY__FRAME__BODY_DB_NEED, "body case");
_Static_assert((int)WIRE_TABLE_DEF == (int)UNDERSTUDY__FRAME__BODY_TABLE_DEF, "body case");
_Static_assert((int)WIRE_ROW_BATCH == (int)UNDERSTUDY__FRAME__BODY_ROW_BATCH, "body case");
_Static_assert((int)WIRE_TABLE_END == (int)UNDERSTUDY__FRAME__BODY_TABLE_END, "body case");
_Static_assert((int)WIRE_COMMIT == (int)UNDERSTUDY__FRAME__BODY_COMMIT, "body case");
_Static_assert((int)WIRE_RESULT == (int)UNDERSTUDY__FRAME__BODY_RESULT, "body case");
_Static_assert((int)WIRE_SYNC_READY == (int)UNDERSTUDY__FRAME__BODY_SYNC_READY, "body case");
_Static_assert((int)WIRE_FILES_NEED_END == (int)UNDERSTUDY__FRAME__BODY_FILES_NEED_END,
               "body case");
_Static_assert((int)WIRE_ROLE_CONTROLLER == (int)UNDERSTUDY__ROLE__ROLE_CONTROLLER, "role");
_Static_assert((int)WIRE_FILE_SYMLINK == (int)UNDERSTUDY__FILE_KIND__FILE_SYMLINK, "file kind");
_Static_assert((int)WIRE_TRANSFER_NONE == (int)UNDERSTUDY__TRANSFER__TRANSFER_NONE, "transfer");
_Static_assert((int)WIRE_TABLE_EVENT == (int)UNDERSTUDY__TABLE_KIND__TABLE_EVENT, "table kind");
_Static_assert((int)WIRE_STATUS_FAILED == (int)UNDERSTUDY__STATUS__STATUS_FAILED, "status");

/* ---- one block for many arrays ----
 *
 * A first pass plans every array (adding up sizes with overflow checks), the block is allocated
 * once, and a second pass takes the arrays in the same order. */

#define BLOCK_ALIGN _Alignof(max_align_t)

typedef struct block {
    uint8_t *base;
    size_t size;
    size_t used;
    bool overflow;
} block_t;

static void block_plan(block_t *b, size_t n, size_t elem)
{
    size_t bytes;
    if (__builtin_mul_overflow(n, elem, &bytes) ||
        __builtin_add_overflow(bytes, BLOCK_ALIGN - 1, &bytes) ||
        __builtin_add_overflow(b->size, bytes & ~(BLOCK_ALIGN - 1), &b->size))
        b->overflow = true;
}

static int block_alloc(block_t *b)
{
    if (b->overflow)
        return UV_ENOMEM;
    if (b->size == 0)
        return 0; /* nothing planned: block_take is never asked for anything */
    b->base = malloc(b->size);
    return b->base ? 0 : UV_ENOMEM;
}

/* Takes the next planned array; NULL for an empty one. */
static void *block_take(block_t *b, size_t n, size_t elem)
{
    if (n == 0)
        return NULL;
    void *p = b->base + b->used;
    b->used += (n * elem + BLOCK_ALIGN - 1) & ~(BLOCK_ALIGN - 1);
    assert(b->used <= b->size);
    return p;
}

/* ---- protocol rules, checked on the mirror in both directions ---- */

/* A relative '/'-separated path without NUL bytes and without '.', '..' or empty parts. */
static bool path_ok(wire_bytes_t p, bool root_ok)
{
    if (p.len == 0)
        return root_ok;
    size_t i = 0;
    while (i <= p.len) {
        size_t j = i;
        while (j < p.len && p.data[j] != '/') {
            if (p.data[j] == '\0')
                return false;
            j++;
        }
        size_t n = j - i;
        if (n == 0 || (n == 1 && p.data[i] == '.') ||
            (n == 2 && p.data[i] == '.' && p.data[i + 1] == '.'))
            return false;
        i = j + 1;
    }
    return true;
}

static bool bytes_ok(wire_bytes_t b)
{
    return b.data || b.len == 0;
}

static bool array_ok(const void *a, size_t n)
{
    return a || n == 0;
}

static bool strings_ok(const char *const *v, size_t n)
{
    if (!array_ok(v, n))
        return false;
    for (size_t i = 0; i < n; i++)
        if (!v[i])
            return false;
    return true;
}

static bool nulls_ok(const wire_row_t *row)
{
    size_t max = row->n_values / 8 + (row->n_values % 8 != 0);
    if (row->nulls.len > max)
        return false;
    /* No bit may mark a column past the last one. */
    if (row->nulls.len == max && row->n_values % 8 != 0)
        return (row->nulls.data[max - 1] >> (row->n_values % 8)) == 0;
    return true;
}

static int check_hello(const wire_hello_t *h, bool encoding)
{
    if (!strings_ok(h->capabilities, h->n_capabilities))
        return UV_EINVAL;
    if (!(encoding && !h->magic) && (!h->magic || strcmp(h->magic, WIRE_MAGIC) != 0))
        return ERR_PROTOCOL;
    if ((unsigned)h->role > WIRE_ROLE_CONTROLLER)
        return ERR_PROTOCOL;
    return 0;
}

static int check_db_begin(const wire_db_begin_t *db)
{
    if (!array_ok(db->tables, db->n_tables) ||
        !strings_ok(db->non_transactional, db->n_non_transactional))
        return UV_EINVAL;
    for (size_t i = 0; i < db->n_tables; i++) {
        const wire_table_summary_t *t = &db->tables[i];
        if (!bytes_ok(t->digest) || !array_ok(t->chunk_digests, t->n_chunk_digests))
            return UV_EINVAL;
        for (size_t j = 0; j < t->n_chunk_digests; j++)
            if (!bytes_ok(t->chunk_digests[j]))
                return UV_EINVAL;
        if ((unsigned)t->kind > WIRE_TABLE_FUNCTION)
            return ERR_PROTOCOL;
    }
    return 0;
}

static int check_table_def(const wire_table_def_t *t)
{
    if (!array_ok(t->columns, t->n_columns) || !array_ok(t->indexes, t->n_indexes) ||
        !array_ok(t->checks, t->n_checks))
        return UV_EINVAL;
    for (size_t i = 0; i < t->n_checks; i++)
        if (!t->checks[i].name || !t->checks[i].clause || !t->checks[i].column)
            return UV_EINVAL;
    if ((unsigned)t->kind > WIRE_TABLE_FUNCTION)
        return ERR_PROTOCOL;
    for (size_t i = 0; i < t->n_indexes; i++) {
        const wire_index_def_t *x = &t->indexes[i];
        if (!strings_ok(x->columns, x->n_columns) ||
            !array_ok(x->prefix_lengths, x->n_prefix_lengths))
            return UV_EINVAL;
        if (x->n_prefix_lengths != 0 && x->n_prefix_lengths != x->n_columns)
            return ERR_PROTOCOL;
    }
    return 0;
}

static int check_row_batch(const wire_row_batch_t *rb)
{
    if (!array_ok(rb->rows, rb->n_rows))
        return UV_EINVAL;
    for (size_t i = 0; i < rb->n_rows; i++) {
        const wire_row_t *row = &rb->rows[i];
        if (!array_ok(row->values, row->n_values) || !bytes_ok(row->nulls))
            return UV_EINVAL;
        for (size_t j = 0; j < row->n_values; j++)
            if (!bytes_ok(row->values[j]))
                return UV_EINVAL;
        if (!nulls_ok(row))
            return ERR_PROTOCOL;
    }
    return 0;
}

/* Returns 0, ERR_PROTOCOL for a rule the peer could break, UV_EINVAL for what only a caller
 * building a message can get wrong (NULL where data is needed). encoding allows a NULL magic. */
static int check_msg(const wire_msg_t *m, bool encoding)
{
    switch (m->type) {
    case WIRE_HELLO:
        return check_hello(&m->u.hello, encoding);
    case WIRE_ERROR:
        return 0;
    case WIRE_SYNC_BEGIN: {
        const wire_sync_begin_t *s = &m->u.sync_begin;
        return bytes_ok(s->sync_id) && bytes_ok(s->tree_digest) ? 0 : UV_EINVAL;
    }
    case WIRE_DIR_DIGEST: {
        const wire_dir_digest_t *dd = &m->u.dir_digest;
        if (!bytes_ok(dd->path) || !bytes_ok(dd->digest))
            return UV_EINVAL;
        return path_ok(dd->path, true) ? 0 : ERR_PROTOCOL;
    }
    case WIRE_FILE_ENTRY: {
        const wire_file_entry_t *fe = &m->u.file_entry;
        if (!bytes_ok(fe->path) || !bytes_ok(fe->hash) || !bytes_ok(fe->link_target))
            return UV_EINVAL;
        if (!path_ok(fe->path, false) || (unsigned)fe->kind > WIRE_FILE_SYMLINK || fe->mode > 07777)
            return ERR_PROTOCOL;
        return 0;
    }
    case WIRE_FILE_NEED: {
        const wire_file_need_t *fn = &m->u.file_need;
        if (!bytes_ok(fn->path) || !bytes_ok(fn->signature))
            return UV_EINVAL;
        if (!path_ok(fn->path, false) || (unsigned)fn->transfer > WIRE_TRANSFER_NONE)
            return ERR_PROTOCOL;
        return 0;
    }
    case WIRE_FILE_DATA: {
        const wire_file_data_t *fd = &m->u.file_data;
        if (!bytes_ok(fd->path) || !bytes_ok(fd->data))
            return UV_EINVAL;
        return path_ok(fd->path, false) ? 0 : ERR_PROTOCOL;
    }
    case WIRE_FILE_DELTA: {
        const wire_file_delta_t *fd = &m->u.file_delta;
        if (!bytes_ok(fd->path) || !bytes_ok(fd->delta))
            return UV_EINVAL;
        return path_ok(fd->path, false) ? 0 : ERR_PROTOCOL;
    }
    case WIRE_FILES_END:
        return bytes_ok(m->u.files_end.tree_digest) ? 0 : UV_EINVAL;
    case WIRE_SYNC_READY:
        return bytes_ok(m->u.sync_ready.live_tree_digest) ? 0 : UV_EINVAL;
    case WIRE_FILES_NEED_END:
        return 0;
    case WIRE_DB_BEGIN:
        return check_db_begin(&m->u.db_begin);
    case WIRE_DB_NEED: {
        const wire_db_need_t *dn = &m->u.db_need;
        if (!strings_ok(dn->tables, dn->n_tables) || !array_ok(dn->chunks, dn->n_chunks) ||
            !strings_ok(dn->digests, dn->n_digests))
            return UV_EINVAL;
        return dn->n_chunks == 0 || dn->n_tables == 1 ? 0 : ERR_PROTOCOL;
    }
    case WIRE_TABLE_DEF:
        return check_table_def(&m->u.table_def);
    case WIRE_ROW_BATCH:
        return check_row_batch(&m->u.row_batch);
    case WIRE_TABLE_END: {
        const wire_table_end_t *te = &m->u.table_end;
        if (!bytes_ok(te->digest) || !bytes_ok(te->table_digest) ||
            !array_ok(te->chunk_digests, te->n_chunk_digests))
            return UV_EINVAL;
        for (size_t j = 0; j < te->n_chunk_digests; j++)
            if (!bytes_ok(te->chunk_digests[j]))
                return UV_EINVAL;
        return 0;
    }
    case WIRE_COMMIT:
        return bytes_ok(m->u.commit.tree_digest) ? 0 : UV_EINVAL;
    case WIRE_RESULT:
        return (unsigned)m->u.result.status > WIRE_STATUS_FAILED ? ERR_PROTOCOL : 0;
    case WIRE_NONE:
        break;
    }
    return ERR_PROTOCOL;
}

/* ---- encoding: mirror -> protobuf-c ---- */

/* Every body a frame can carry; the frame points at one of them. */
typedef union pb_body {
    Understudy__Hello hello;
    Understudy__Error error;
    Understudy__SyncBegin sync_begin;
    Understudy__DirDigest dir_digest;
    Understudy__FileEntry file_entry;
    Understudy__FileNeed file_need;
    Understudy__FileData file_data;
    Understudy__FileDelta file_delta;
    Understudy__FilesEnd files_end;
    Understudy__SyncReady sync_ready;
    Understudy__FilesNeedEnd files_need_end;
    Understudy__DbBegin db_begin;
    Understudy__DbNeed db_need;
    Understudy__TableDef table_def;
    Understudy__RowBatch row_batch;
    Understudy__TableEnd table_end;
    Understudy__Commit commit;
    Understudy__Result result;
} pb_body_t;

/* protobuf-c only reads through these pointers when packing. */
static ProtobufCBinaryData pb_bytes(wire_bytes_t b)
{
    ProtobufCBinaryData r = {b.len, (uint8_t *)b.data};
    return r;
}

static char *pb_str(const char *s)
{
    return (char *)s;
}

static char **pb_strv(const char *const *v)
{
    return (char **)v;
}

static void plan_encode(const wire_msg_t *m, block_t *b)
{
    switch (m->type) {
    case WIRE_DB_BEGIN: {
        const wire_db_begin_t *db = &m->u.db_begin;
        block_plan(b, db->n_tables, sizeof(Understudy__TableSummary *));
        block_plan(b, db->n_tables, sizeof(Understudy__TableSummary));
        for (size_t i = 0; i < db->n_tables; i++)
            block_plan(b, db->tables[i].n_chunk_digests, sizeof(ProtobufCBinaryData));
        break;
    }
    case WIRE_TABLE_DEF: {
        const wire_table_def_t *t = &m->u.table_def;
        block_plan(b, t->n_columns, sizeof(Understudy__ColumnDef *));
        block_plan(b, t->n_columns, sizeof(Understudy__ColumnDef));
        block_plan(b, t->n_indexes, sizeof(Understudy__IndexDef *));
        block_plan(b, t->n_indexes, sizeof(Understudy__IndexDef));
        block_plan(b, t->n_checks, sizeof(Understudy__CheckDef *));
        block_plan(b, t->n_checks, sizeof(Understudy__CheckDef));
        break;
    }
    case WIRE_TABLE_END:
        block_plan(b, m->u.table_end.n_chunk_digests, sizeof(ProtobufCBinaryData));
        break;
    case WIRE_ROW_BATCH: {
        const wire_row_batch_t *rb = &m->u.row_batch;
        block_plan(b, rb->n_rows, sizeof(Understudy__Row *));
        block_plan(b, rb->n_rows, sizeof(Understudy__Row));
        for (size_t i = 0; i < rb->n_rows; i++)
            block_plan(b, rb->rows[i].n_values, sizeof(ProtobufCBinaryData));
        break;
    }
    default:
        break;
    }
}

/* WIRE_TABLE_FUNCTION travels as TABLE_ROUTINE with `function` set (see wire.h). */
static Understudy__TableKind wire_kind(wire_table_kind_t kind, protobuf_c_boolean *ret_function)
{
    *ret_function = kind == WIRE_TABLE_FUNCTION;
    return kind == WIRE_TABLE_FUNCTION ? UNDERSTUDY__TABLE_KIND__TABLE_ROUTINE
                                       : (Understudy__TableKind)kind;
}

static void build_db_begin(const wire_db_begin_t *db, Understudy__DbBegin *p, block_t *b)
{
    understudy__db_begin__init(p);
    p->charset = pb_str(db->charset);
    p->table_prefix = pb_str(db->table_prefix);
    p->n_tables = db->n_tables;
    p->tables = block_take(b, db->n_tables, sizeof(*p->tables));
    Understudy__TableSummary *ts = block_take(b, db->n_tables, sizeof(*ts));
    for (size_t i = 0; i < db->n_tables; i++) {
        const wire_table_summary_t *t = &db->tables[i];
        understudy__table_summary__init(&ts[i]);
        ts[i].name = pb_str(t->name);
        ts[i].kind = wire_kind(t->kind, &ts[i].function);
        ts[i].row_count = t->row_count;
        ts[i].digest = pb_bytes(t->digest);
        ts[i].chunks_withheld = t->chunks_withheld;
        ts[i].n_chunk_digests = t->n_chunk_digests;
        ts[i].chunk_digests = block_take(b, t->n_chunk_digests, sizeof(ProtobufCBinaryData));
        for (size_t j = 0; j < t->n_chunk_digests; j++)
            ts[i].chunk_digests[j] = pb_bytes(t->chunk_digests[j]);
        p->tables[i] = &ts[i];
    }
    p->n_non_transactional = db->n_non_transactional;
    p->non_transactional = pb_strv(db->non_transactional);
    p->schema = pb_str(db->schema);
    p->deferred = db->deferred;
}

static void build_table_def(const wire_table_def_t *t, Understudy__TableDef *p, block_t *b)
{
    understudy__table_def__init(p);
    p->name = pb_str(t->name);
    p->kind = wire_kind(t->kind, &p->function);
    p->engine = pb_str(t->engine);
    p->charset = pb_str(t->charset);
    p->collation = pb_str(t->collation);
    p->auto_increment = t->auto_increment;
    p->create_sql = pb_str(t->create_sql);
    p->comment = pb_str(t->comment);
    p->sql_mode = pb_str(t->sql_mode);
    p->time_zone = pb_str(t->time_zone);

    p->n_columns = t->n_columns;
    p->columns = block_take(b, t->n_columns, sizeof(*p->columns));
    Understudy__ColumnDef *cd = block_take(b, t->n_columns, sizeof(*cd));
    for (size_t i = 0; i < t->n_columns; i++) {
        const wire_column_def_t *c = &t->columns[i];
        understudy__column_def__init(&cd[i]);
        cd[i].name = pb_str(c->name);
        cd[i].column_type = pb_str(c->column_type);
        cd[i].sql_type = c->sql_type;
        cd[i].nullable = c->nullable;
        cd[i].charset = pb_str(c->charset);
        cd[i].collation = pb_str(c->collation);
        cd[i].generated = c->generated;
        cd[i].default_value = pb_str(c->default_value);
        cd[i].has_default = c->has_default;
        cd[i].extra = pb_str(c->extra);
        cd[i].binary = c->binary;
        cd[i].generation_expression = pb_str(c->generation_expression);
        cd[i].stored = c->stored;
        p->columns[i] = &cd[i];
    }

    p->n_indexes = t->n_indexes;
    p->indexes = block_take(b, t->n_indexes, sizeof(*p->indexes));
    Understudy__IndexDef *id = block_take(b, t->n_indexes, sizeof(*id));
    for (size_t i = 0; i < t->n_indexes; i++) {
        const wire_index_def_t *x = &t->indexes[i];
        understudy__index_def__init(&id[i]);
        id[i].name = pb_str(x->name);
        id[i].unique = x->unique;
        id[i].n_columns = x->n_columns;
        id[i].columns = pb_strv(x->columns);
        id[i].n_prefix_lengths = x->n_prefix_lengths;
        id[i].prefix_lengths = (uint32_t *)x->prefix_lengths;
        id[i].index_type = pb_str(x->index_type);
        p->indexes[i] = &id[i];
    }

    p->n_checks = t->n_checks;
    p->checks = block_take(b, t->n_checks, sizeof(*p->checks));
    Understudy__CheckDef *ck = block_take(b, t->n_checks, sizeof(*ck));
    for (size_t i = 0; i < t->n_checks; i++) {
        understudy__check_def__init(&ck[i]);
        ck[i].name = pb_str(t->checks[i].name);
        ck[i].clause = pb_str(t->checks[i].clause);
        ck[i].column = pb_str(t->checks[i].column);
        p->checks[i] = &ck[i];
    }
}

static void build_row_batch(const wire_row_batch_t *rb, Understudy__RowBatch *p, block_t *b)
{
    understudy__row_batch__init(p);
    p->table = pb_str(rb->table);
    p->chunk = rb->chunk;
    p->n_rows = rb->n_rows;
    p->rows = block_take(b, rb->n_rows, sizeof(*p->rows));
    Understudy__Row *rows = block_take(b, rb->n_rows, sizeof(*rows));
    for (size_t i = 0; i < rb->n_rows; i++) {
        const wire_row_t *row = &rb->rows[i];
        understudy__row__init(&rows[i]);
        rows[i].n_values = row->n_values;
        rows[i].values = block_take(b, row->n_values, sizeof(ProtobufCBinaryData));
        for (size_t j = 0; j < row->n_values; j++)
            rows[i].values[j] = pb_bytes(row->values[j]);
        rows[i].nulls = pb_bytes(row->nulls);
        p->rows[i] = &rows[i];
    }
}

/* Points f at the protobuf-c form of m, built in body and b (already allocated). */
static void build_frame(const wire_msg_t *m, Understudy__Frame *f, pb_body_t *body, block_t *b)
{
    understudy__frame__init(f);
    f->body_case = (Understudy__Frame__BodyCase)m->type;
    switch (m->type) {
    case WIRE_HELLO: {
        const wire_hello_t *h = &m->u.hello;
        Understudy__Hello *p = &body->hello;
        understudy__hello__init(p);
        p->magic = pb_str(h->magic ? h->magic : WIRE_MAGIC);
        p->protocol_version = h->protocol_version;
        p->program_version = pb_str(h->program_version);
        p->site_id = pb_str(h->site_id);
        p->n_capabilities = h->n_capabilities;
        p->capabilities = pb_strv(h->capabilities);
        p->role = (Understudy__Role)h->role;
        f->hello = p;
        break;
    }
    case WIRE_ERROR: {
        Understudy__Error *p = &body->error;
        understudy__error__init(p);
        p->code = m->u.error.code;
        p->text = pb_str(m->u.error.text);
        f->error = p;
        break;
    }
    case WIRE_SYNC_BEGIN: {
        const wire_sync_begin_t *s = &m->u.sync_begin;
        Understudy__SyncBegin *p = &body->sync_begin;
        understudy__sync_begin__init(p);
        p->sync_id = pb_bytes(s->sync_id);
        p->dry_run = s->dry_run;
        p->base_generation = s->base_generation;
        p->tree_digest = pb_bytes(s->tree_digest);
        p->file_count = s->file_count;
        p->files_only = s->files_only;
        f->sync_begin = p;
        break;
    }
    case WIRE_DIR_DIGEST: {
        Understudy__DirDigest *p = &body->dir_digest;
        understudy__dir_digest__init(p);
        p->path = pb_bytes(m->u.dir_digest.path);
        p->digest = pb_bytes(m->u.dir_digest.digest);
        f->dir_digest = p;
        break;
    }
    case WIRE_FILE_ENTRY: {
        const wire_file_entry_t *fe = &m->u.file_entry;
        Understudy__FileEntry *p = &body->file_entry;
        understudy__file_entry__init(p);
        p->path = pb_bytes(fe->path);
        p->kind = (Understudy__FileKind)fe->kind;
        p->mode = fe->mode;
        p->mtime_ns = fe->mtime_ns;
        p->size = fe->size;
        p->hash = pb_bytes(fe->hash);
        p->link_target = pb_bytes(fe->link_target);
        p->deleted = fe->deleted;
        f->file_entry = p;
        break;
    }
    case WIRE_FILE_NEED: {
        const wire_file_need_t *fn = &m->u.file_need;
        Understudy__FileNeed *p = &body->file_need;
        understudy__file_need__init(p);
        p->path = pb_bytes(fn->path);
        p->transfer = (Understudy__Transfer)fn->transfer;
        p->signature = pb_bytes(fn->signature);
        p->resume_offset = fn->resume_offset;
        f->file_need = p;
        break;
    }
    case WIRE_FILE_DATA: {
        const wire_file_data_t *fd = &m->u.file_data;
        Understudy__FileData *p = &body->file_data;
        understudy__file_data__init(p);
        p->path = pb_bytes(fd->path);
        p->offset = fd->offset;
        p->data = pb_bytes(fd->data);
        p->zstd = fd->zstd;
        p->last = fd->last;
        f->file_data = p;
        break;
    }
    case WIRE_FILE_DELTA: {
        const wire_file_delta_t *fd = &m->u.file_delta;
        Understudy__FileDelta *p = &body->file_delta;
        understudy__file_delta__init(p);
        p->path = pb_bytes(fd->path);
        p->delta = pb_bytes(fd->delta);
        p->last = fd->last;
        f->file_delta = p;
        break;
    }
    case WIRE_FILES_END: {
        const wire_files_end_t *fe = &m->u.files_end;
        Understudy__FilesEnd *p = &body->files_end;
        understudy__files_end__init(p);
        p->tree_digest = pb_bytes(fe->tree_digest);
        p->file_count = fe->file_count;
        p->total_bytes = fe->total_bytes;
        f->files_end = p;
        break;
    }
    case WIRE_SYNC_READY: {
        const wire_sync_ready_t *sr = &m->u.sync_ready;
        Understudy__SyncReady *p = &body->sync_ready;
        understudy__sync_ready__init(p);
        p->live_generation = sr->live_generation;
        p->full_listing = sr->full_listing;
        p->live_tree_digest = pb_bytes(sr->live_tree_digest);
        f->sync_ready = p;
        break;
    }
    case WIRE_FILES_NEED_END: {
        const wire_files_need_end_t *ne = &m->u.files_need_end;
        Understudy__FilesNeedEnd *p = &body->files_need_end;
        understudy__files_need_end__init(p);
        p->need_count = ne->need_count;
        p->need_bytes = ne->need_bytes;
        f->files_need_end = p;
        break;
    }
    case WIRE_DB_BEGIN:
        build_db_begin(&m->u.db_begin, &body->db_begin, b);
        f->db_begin = &body->db_begin;
        break;
    case WIRE_DB_NEED: {
        const wire_db_need_t *dn = &m->u.db_need;
        Understudy__DbNeed *p = &body->db_need;
        understudy__db_need__init(p);
        p->n_tables = dn->n_tables;
        p->tables = pb_strv(dn->tables);
        p->n_chunks = dn->n_chunks;
        p->chunks = (uint32_t *)dn->chunks;
        p->more = dn->more;
        p->n_digests = dn->n_digests;
        p->digests = pb_strv(dn->digests);
        f->db_need = p;
        break;
    }
    case WIRE_TABLE_DEF:
        build_table_def(&m->u.table_def, &body->table_def, b);
        f->table_def = &body->table_def;
        break;
    case WIRE_ROW_BATCH:
        build_row_batch(&m->u.row_batch, &body->row_batch, b);
        f->row_batch = &body->row_batch;
        break;
    case WIRE_TABLE_END: {
        const wire_table_end_t *te = &m->u.table_end;
        Understudy__TableEnd *p = &body->table_end;
        understudy__table_end__init(p);
        p->table = pb_str(te->table);
        p->row_count = te->row_count;
        p->digest = pb_bytes(te->digest);
        p->table_digest = pb_bytes(te->table_digest);
        p->n_chunk_digests = te->n_chunk_digests;
        p->chunk_digests = block_take(b, te->n_chunk_digests, sizeof(ProtobufCBinaryData));
        for (size_t j = 0; j < te->n_chunk_digests; j++)
            p->chunk_digests[j] = pb_bytes(te->chunk_digests[j]);
        f->table_end = p;
        break;
    }
    case WIRE_COMMIT: {
        const wire_commit_t *c = &m->u.commit;
        Understudy__Commit *p = &body->commit;
        understudy__commit__init(p);
        p->tree_digest = pb_bytes(c->tree_digest);
        p->file_count = c->file_count;
        p->table_count = c->table_count;
        f->commit = p;
        break;
    }
    case WIRE_RESULT: {
        const wire_result_t *r = &m->u.result;
        Understudy__Result *p = &body->result;
        understudy__result__init(p);
        p->status = (Understudy__Status)r->status;
        p->generation = r->generation;
        p->reason_code = r->reason_code;
        p->reason = pb_str(r->reason);
        f->result = p;
        break;
    }
    case WIRE_NONE:
        assert(!"checked by check_msg");
        break;
    }
}

static size_t clamp_max_frame(size_t max_frame)
{
    if (max_frame == 0)
        return WIRE_MAX_FRAME_DEFAULT;
    return max_frame > UINT32_MAX ? UINT32_MAX : max_frame;
}

int wire_encode(const wire_msg_t *msg, size_t max_frame, buf_t *out)
{
    int r = check_msg(msg, true);
    if (r < 0)
        return r;

    block_t b = {0};
    plan_encode(msg, &b);
    r = block_alloc(&b);
    if (r < 0)
        return r;
    Understudy__Frame frame;
    pb_body_t body;
    build_frame(msg, &frame, &body, &b);

    size_t size = understudy__frame__get_packed_size(&frame);
    if (size > clamp_max_frame(max_frame)) {
        r = ERR_FRAME_TOO_LARGE;
        goto out;
    }
    uint8_t *p = buf_reserve(out, WIRE_HEADER_SIZE + size);
    if (!p) {
        size_t need = WIRE_HEADER_SIZE + size;
        r = out->max && (need > out->max || out->len > out->max - need) ? UV_ENOBUFS : UV_ENOMEM;
        goto out;
    }
    p[0] = (uint8_t)(size >> 24);
    p[1] = (uint8_t)(size >> 16);
    p[2] = (uint8_t)(size >> 8);
    p[3] = (uint8_t)size;
    size_t packed = understudy__frame__pack(&frame, p + WIRE_HEADER_SIZE);
    assert(packed == size);
    (void)packed;
    buf_commit(out, WIRE_HEADER_SIZE + size);
out:
    free(b.base);
    return r;
}

/* ---- decoding: protobuf-c -> mirror ---- */

static wire_bytes_t mirror_bytes(ProtobufCBinaryData d)
{
    wire_bytes_t r = {d.data, d.len};
    return r;
}

static const char *const *mirror_strv(char **v)
{
    return (const char *const *)v;
}

static void plan_mirror(const Understudy__Frame *f, block_t *b)
{
    switch (f->body_case) {
    case UNDERSTUDY__FRAME__BODY_DB_BEGIN: {
        const Understudy__DbBegin *p = f->db_begin;
        block_plan(b, p->n_tables, sizeof(wire_table_summary_t));
        for (size_t i = 0; i < p->n_tables; i++)
            block_plan(b, p->tables[i]->n_chunk_digests, sizeof(wire_bytes_t));
        break;
    }
    case UNDERSTUDY__FRAME__BODY_TABLE_END:
        block_plan(b, f->table_end->n_chunk_digests, sizeof(wire_bytes_t));
        break;
    case UNDERSTUDY__FRAME__BODY_TABLE_DEF:
        block_plan(b, f->table_def->n_columns, sizeof(wire_column_def_t));
        block_plan(b, f->table_def->n_indexes, sizeof(wire_index_def_t));
        block_plan(b, f->table_def->n_checks, sizeof(wire_check_def_t));
        break;
    case UNDERSTUDY__FRAME__BODY_ROW_BATCH: {
        const Understudy__RowBatch *p = f->row_batch;
        block_plan(b, p->n_rows, sizeof(wire_row_t));
        for (size_t i = 0; i < p->n_rows; i++)
            block_plan(b, p->rows[i]->n_values, sizeof(wire_bytes_t));
        break;
    }
    default:
        break;
    }
}

/* The inverse of wire_kind; a kind past TABLE_EVENT on the wire stays out of range. */
static wire_table_kind_t mirror_kind(Understudy__TableKind kind, protobuf_c_boolean function)
{
    if ((unsigned)kind > WIRE_TABLE_EVENT)
        return (wire_table_kind_t)UINT8_MAX;
    return kind == UNDERSTUDY__TABLE_KIND__TABLE_ROUTINE && function ? WIRE_TABLE_FUNCTION
                                                                     : (wire_table_kind_t)kind;
}

static void mirror_db_begin(const Understudy__DbBegin *p, wire_db_begin_t *db, block_t *b)
{
    db->charset = p->charset;
    db->table_prefix = p->table_prefix;
    wire_table_summary_t *ts = block_take(b, p->n_tables, sizeof(*ts));
    for (size_t i = 0; i < p->n_tables; i++) {
        const Understudy__TableSummary *t = p->tables[i];
        ts[i].name = t->name;
        ts[i].kind = mirror_kind(t->kind, t->function);
        ts[i].row_count = t->row_count;
        ts[i].digest = mirror_bytes(t->digest);
        ts[i].chunks_withheld = t->chunks_withheld != 0;
        wire_bytes_t *cd = block_take(b, t->n_chunk_digests, sizeof(*cd));
        for (size_t j = 0; j < t->n_chunk_digests; j++)
            cd[j] = mirror_bytes(t->chunk_digests[j]);
        ts[i].chunk_digests = cd;
        ts[i].n_chunk_digests = t->n_chunk_digests;
    }
    db->tables = ts;
    db->n_tables = p->n_tables;
    db->non_transactional = mirror_strv(p->non_transactional);
    db->n_non_transactional = p->n_non_transactional;
    db->schema = p->schema;
    db->deferred = p->deferred != 0;
}

static void mirror_table_def(const Understudy__TableDef *p, wire_table_def_t *t, block_t *b)
{
    t->name = p->name;
    t->kind = mirror_kind(p->kind, p->function);
    t->engine = p->engine;
    t->charset = p->charset;
    t->collation = p->collation;
    t->auto_increment = p->auto_increment;
    t->create_sql = p->create_sql;
    t->comment = p->comment;
    t->sql_mode = p->sql_mode;
    t->time_zone = p->time_zone;

    wire_column_def_t *cd = block_take(b, p->n_columns, sizeof(*cd));
    for (size_t i = 0; i < p->n_columns; i++) {
        const Understudy__ColumnDef *c = p->columns[i];
        cd[i].name = c->name;
        cd[i].column_type = c->column_type;
        cd[i].sql_type = c->sql_type;
        cd[i].nullable = c->nullable != 0;
        cd[i].charset = c->charset;
        cd[i].collation = c->collation;
        cd[i].generated = c->generated != 0;
        cd[i].default_value = c->default_value;
        cd[i].has_default = c->has_default != 0;
        cd[i].extra = c->extra;
        cd[i].binary = c->binary != 0;
        cd[i].generation_expression = c->generation_expression;
        cd[i].stored = c->stored != 0;
    }
    t->columns = cd;
    t->n_columns = p->n_columns;

    wire_index_def_t *id = block_take(b, p->n_indexes, sizeof(*id));
    for (size_t i = 0; i < p->n_indexes; i++) {
        const Understudy__IndexDef *x = p->indexes[i];
        id[i].name = x->name;
        id[i].unique = x->unique != 0;
        id[i].columns = mirror_strv(x->columns);
        id[i].n_columns = x->n_columns;
        id[i].prefix_lengths = x->prefix_lengths;
        id[i].n_prefix_lengths = x->n_prefix_lengths;
        id[i].index_type = x->index_type;
    }
    t->indexes = id;
    t->n_indexes = p->n_indexes;

    wire_check_def_t *ck = block_take(b, p->n_checks, sizeof(*ck));
    for (size_t i = 0; i < p->n_checks; i++) {
        ck[i].name = p->checks[i]->name;
        ck[i].clause = p->checks[i]->clause;
        ck[i].column = p->checks[i]->column;
    }
    t->checks = ck;
    t->n_checks = p->n_checks;
}

static void mirror_row_batch(const Understudy__RowBatch *p, wire_row_batch_t *rb, block_t *b)
{
    rb->table = p->table;
    rb->chunk = p->chunk;
    wire_row_t *rows = block_take(b, p->n_rows, sizeof(*rows));
    for (size_t i = 0; i < p->n_rows; i++) {
        const Understudy__Row *row = p->rows[i];
        wire_bytes_t *v = block_take(b, row->n_values, sizeof(*v));
        for (size_t j = 0; j < row->n_values; j++)
            v[j] = mirror_bytes(row->values[j]);
        rows[i].values = v;
        rows[i].n_values = row->n_values;
        rows[i].nulls = mirror_bytes(row->nulls);
    }
    rb->rows = rows;
    rb->n_rows = p->n_rows;
}

/* Fills m from f; strings and bytes point into f. */
static void mirror_frame(const Understudy__Frame *f, wire_msg_t *m, block_t *b)
{
    m->type = (wire_type_t)f->body_case;
    switch (f->body_case) {
    case UNDERSTUDY__FRAME__BODY_HELLO: {
        const Understudy__Hello *p = f->hello;
        wire_hello_t *h = &m->u.hello;
        h->magic = p->magic;
        h->protocol_version = p->protocol_version;
        h->program_version = p->program_version;
        h->site_id = p->site_id;
        h->capabilities = mirror_strv(p->capabilities);
        h->n_capabilities = p->n_capabilities;
        h->role = (wire_role_t)p->role;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_ERROR:
        m->u.error.code = f->error->code;
        m->u.error.text = f->error->text;
        break;
    case UNDERSTUDY__FRAME__BODY_SYNC_BEGIN: {
        const Understudy__SyncBegin *p = f->sync_begin;
        wire_sync_begin_t *s = &m->u.sync_begin;
        s->sync_id = mirror_bytes(p->sync_id);
        s->dry_run = p->dry_run != 0;
        s->base_generation = p->base_generation;
        s->tree_digest = mirror_bytes(p->tree_digest);
        s->file_count = p->file_count;
        s->files_only = p->files_only != 0;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_DIR_DIGEST:
        m->u.dir_digest.path = mirror_bytes(f->dir_digest->path);
        m->u.dir_digest.digest = mirror_bytes(f->dir_digest->digest);
        break;
    case UNDERSTUDY__FRAME__BODY_FILE_ENTRY: {
        const Understudy__FileEntry *p = f->file_entry;
        wire_file_entry_t *fe = &m->u.file_entry;
        fe->path = mirror_bytes(p->path);
        fe->kind = (wire_file_kind_t)p->kind;
        fe->mode = p->mode;
        fe->mtime_ns = p->mtime_ns;
        fe->size = p->size;
        fe->hash = mirror_bytes(p->hash);
        fe->link_target = mirror_bytes(p->link_target);
        fe->deleted = p->deleted != 0;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_FILE_NEED: {
        const Understudy__FileNeed *p = f->file_need;
        wire_file_need_t *fn = &m->u.file_need;
        fn->path = mirror_bytes(p->path);
        fn->transfer = (wire_transfer_t)p->transfer;
        fn->signature = mirror_bytes(p->signature);
        fn->resume_offset = p->resume_offset;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_FILE_DATA: {
        const Understudy__FileData *p = f->file_data;
        wire_file_data_t *fd = &m->u.file_data;
        fd->path = mirror_bytes(p->path);
        fd->offset = p->offset;
        fd->data = mirror_bytes(p->data);
        fd->zstd = p->zstd != 0;
        fd->last = p->last != 0;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_FILE_DELTA: {
        const Understudy__FileDelta *p = f->file_delta;
        wire_file_delta_t *fd = &m->u.file_delta;
        fd->path = mirror_bytes(p->path);
        fd->delta = mirror_bytes(p->delta);
        fd->last = p->last != 0;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_FILES_END: {
        const Understudy__FilesEnd *p = f->files_end;
        wire_files_end_t *fe = &m->u.files_end;
        fe->tree_digest = mirror_bytes(p->tree_digest);
        fe->file_count = p->file_count;
        fe->total_bytes = p->total_bytes;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_SYNC_READY: {
        const Understudy__SyncReady *p = f->sync_ready;
        wire_sync_ready_t *sr = &m->u.sync_ready;
        sr->live_generation = p->live_generation;
        sr->full_listing = p->full_listing != 0;
        sr->live_tree_digest = mirror_bytes(p->live_tree_digest);
        break;
    }
    case UNDERSTUDY__FRAME__BODY_FILES_NEED_END: {
        const Understudy__FilesNeedEnd *p = f->files_need_end;
        m->u.files_need_end.need_count = p->need_count;
        m->u.files_need_end.need_bytes = p->need_bytes;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_DB_BEGIN:
        mirror_db_begin(f->db_begin, &m->u.db_begin, b);
        break;
    case UNDERSTUDY__FRAME__BODY_DB_NEED: {
        const Understudy__DbNeed *p = f->db_need;
        wire_db_need_t *dn = &m->u.db_need;
        dn->tables = mirror_strv(p->tables);
        dn->n_tables = p->n_tables;
        dn->chunks = p->chunks;
        dn->n_chunks = p->n_chunks;
        dn->more = p->more != 0;
        dn->digests = mirror_strv(p->digests);
        dn->n_digests = p->n_digests;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_TABLE_DEF:
        mirror_table_def(f->table_def, &m->u.table_def, b);
        break;
    case UNDERSTUDY__FRAME__BODY_ROW_BATCH:
        mirror_row_batch(f->row_batch, &m->u.row_batch, b);
        break;
    case UNDERSTUDY__FRAME__BODY_TABLE_END: {
        const Understudy__TableEnd *p = f->table_end;
        wire_table_end_t *te = &m->u.table_end;
        te->table = p->table;
        te->row_count = p->row_count;
        te->digest = mirror_bytes(p->digest);
        te->table_digest = mirror_bytes(p->table_digest);
        wire_bytes_t *cd = block_take(b, p->n_chunk_digests, sizeof(*cd));
        for (size_t j = 0; j < p->n_chunk_digests; j++)
            cd[j] = mirror_bytes(p->chunk_digests[j]);
        te->chunk_digests = cd;
        te->n_chunk_digests = p->n_chunk_digests;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_COMMIT: {
        const Understudy__Commit *p = f->commit;
        wire_commit_t *c = &m->u.commit;
        c->tree_digest = mirror_bytes(p->tree_digest);
        c->file_count = p->file_count;
        c->table_count = p->table_count;
        break;
    }
    case UNDERSTUDY__FRAME__BODY_RESULT: {
        const Understudy__Result *p = f->result;
        wire_result_t *r = &m->u.result;
        r->status = (wire_status_t)p->status;
        r->generation = p->generation;
        r->reason_code = p->reason_code;
        r->reason = p->reason;
        break;
    }
    default:
        m->type = WIRE_NONE;
        break;
    }
}

/* A decoded message: the mirror first (callers hold a pointer to it), then what only this file
 * needs. The mirror's arrays follow in the same block. */
typedef struct decoded {
    wire_msg_t msg;
    size_t size; /* bytes held: protobuf-c's allocations and this block */
} decoded_t;

/* protobuf-c's default allocator, counting what it hands out; what it allocates is freed later
 * with plain free() (protobuf_c_message_free_unpacked with the default allocator). */
typedef struct budget {
    size_t held;
    bool over; /* an allocation was refused for passing WIRE_DECODE_BUDGET */
} budget_t;

static void *counting_alloc(void *data, size_t size)
{
    budget_t *bud = data;
    if (size > WIRE_DECODE_BUDGET - bud->held) {
        bud->over = true;
        return NULL;
    }
    void *p = malloc(size);
    if (p)
        bud->held += size;
    return p;
}

static void counting_free(void *data, void *p)
{
    free(p);
}

int wire_decode_payload(const uint8_t *data, size_t len, wire_msg_t **ret_msg)
{
    /* An empty Frame packs to nothing; a frame with a body never does. */
    if (len == 0)
        return ERR_PROTOCOL;
    budget_t bud = {0, false};
    ProtobufCAllocator counting = {counting_alloc, counting_free, &bud};
    Understudy__Frame *f = understudy__frame__unpack(&counting, len, data);
    if (!f)
        return bud.over ? ERR_FRAME_TOO_LARGE : ERR_PROTOCOL;
    /* Every member of the body union is a message pointer, set when body_case is. */
    if (f->body_case == UNDERSTUDY__FRAME__BODY__NOT_SET || !f->hello) {
        understudy__frame__free_unpacked(f, NULL);
        return ERR_PROTOCOL;
    }

    block_t b = {0};
    block_plan(&b, 1, sizeof(decoded_t));
    plan_mirror(f, &b);
    int r = block_alloc(&b);
    if (r < 0) {
        understudy__frame__free_unpacked(f, NULL);
        return r;
    }
    decoded_t *dec = block_take(&b, 1, sizeof(*dec));
    memset(dec, 0, sizeof(*dec));
    dec->size = bud.held + b.size;
    wire_msg_t *m = &dec->msg;
    m->priv_ = f;
    mirror_frame(f, m, &b);

    if (check_msg(m, false) < 0) {
        wire_msg_free(m);
        return ERR_PROTOCOL;
    }
    *ret_msg = m;
    return 1;
}

size_t wire_msg_size(const wire_msg_t *msg)
{
    if (!msg || !msg->priv_)
        return 0;
    return ((const decoded_t *)msg)->size;
}

void wire_msg_free(wire_msg_t *msg)
{
    if (!msg)
        return;
    if (msg->priv_)
        understudy__frame__free_unpacked(msg->priv_, NULL);
    /* The mirror and its arrays are one block starting at msg. */
    free(msg);
}

void wire_decoder_init(wire_decoder_t *d, size_t max_frame)
{
    max_frame = clamp_max_frame(max_frame);
    size_t cap = SIZE_MAX;
    if (max_frame <= (SIZE_MAX - WIRE_HEADER_SIZE) / 2)
        cap = 2 * max_frame + WIRE_HEADER_SIZE;
    buf_init(&d->in, cap);
    d->max_frame = max_frame;
    d->error = 0;
}

void wire_decoder_free(wire_decoder_t *d)
{
    buf_free(&d->in);
}

int wire_decoder_feed(wire_decoder_t *d, const void *data, size_t len)
{
    if (d->error)
        return d->error;
    return buf_append(&d->in, data, len);
}

int wire_decoder_next(wire_decoder_t *d, wire_msg_t **ret_msg)
{
    if (d->error)
        return d->error;
    if (d->in.len < WIRE_HEADER_SIZE)
        return 0;
    const uint8_t *p = buf_data(&d->in);
    uint32_t len = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
    int r;
    if (len > d->max_frame) {
        r = ERR_FRAME_TOO_LARGE;
    } else if (len == 0) {
        r = ERR_PROTOCOL;
    } else if (d->in.len - WIRE_HEADER_SIZE < len) {
        return 0;
    } else {
        r = wire_decode_payload(p + WIRE_HEADER_SIZE, len, ret_msg);
        if (r > 0) {
            buf_consume(&d->in, WIRE_HEADER_SIZE + (size_t)len);
            return 1;
        }
    }
    d->error = r;
    return r;
}

const char *wire_type_name(wire_type_t type)
{
    static const char *const names[] = {
        [WIRE_NONE] = "None",
        [WIRE_HELLO] = "Hello",
        [WIRE_ERROR] = "Error",
        [WIRE_SYNC_BEGIN] = "SyncBegin",
        [WIRE_DIR_DIGEST] = "DirDigest",
        [WIRE_FILE_ENTRY] = "FileEntry",
        [WIRE_FILE_NEED] = "FileNeed",
        [WIRE_FILE_DATA] = "FileData",
        [WIRE_FILE_DELTA] = "FileDelta",
        [WIRE_FILES_END] = "FilesEnd",
        [WIRE_SYNC_READY] = "SyncReady",
        [WIRE_FILES_NEED_END] = "FilesNeedEnd",
        [WIRE_DB_BEGIN] = "DbBegin",
        [WIRE_DB_NEED] = "DbNeed",
        [WIRE_TABLE_DEF] = "TableDef",
        [WIRE_ROW_BATCH] = "RowBatch",
        [WIRE_TABLE_END] = "TableEnd",
        [WIRE_COMMIT] = "Commit",
        [WIRE_RESULT] = "Result",
    };
    if ((unsigned)type >= sizeof(names) / sizeof(names[0]))
        return "unknown";
    return names[type];
}

/* ---- the row digest (see wire.h) ---- */

int wire_rowsum_init(wire_rowsum_t *s)
{
    memset(s, 0, sizeof(*s));
    s->md = EVP_MD_CTX_new();
    return s->md ? 0 : UV_ENOMEM;
}

int wire_rowsum_add(wire_rowsum_t *s, const wire_row_t *row, uint64_t *ret_hash)
{
    EVP_MD_CTX *md = s->md;
    uint8_t d[EVP_MAX_MD_SIZE];
    char len[24];

    if (!EVP_DigestInit_ex(md, EVP_md5(), NULL))
        return UV_ENOMEM;
    for (size_t i = 0; i < row->n_values; i++) {
        if (wire_row_is_null(row, i)) {
            EVP_DigestUpdate(md, "-", 1);
            continue;
        }
        int n = snprintf(len, sizeof(len), "%zu:", row->values[i].len);
        EVP_DigestUpdate(md, len, (size_t)n);
        if (row->values[i].len)
            EVP_DigestUpdate(md, row->values[i].data, row->values[i].len);
    }
    if (!EVP_DigestFinal_ex(md, d, NULL))
        return UV_ENOMEM;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | d[i];
    s->lo += v;
    s->hi += s->lo < v;
    s->rows++;
    if (ret_hash)
        *ret_hash = v;
    return 0;
}

void wire_rowsum_text(const wire_rowsum_t *s, char *out, size_t size)
{
    /* The 128-bit sum in decimal: repeated division by 10 over 32-bit limbs. */
    uint32_t limb[4] = {(uint32_t)(s->hi >> 32), (uint32_t)s->hi, (uint32_t)(s->lo >> 32),
                        (uint32_t)s->lo};
    char digits[48];
    size_t n = 0;
    do {
        uint64_t rem = 0;
        for (int i = 0; i < 4; i++) {
            uint64_t cur = rem << 32 | limb[i];
            limb[i] = (uint32_t)(cur / 10);
            rem = cur % 10;
        }
        digits[n++] = (char)('0' + rem);
    } while (limb[0] || limb[1] || limb[2] || limb[3]);
    int o = snprintf(out, size, "%" PRIu64 ":", s->rows);
    for (size_t i = 0; o >= 0 && (size_t)o + 1 < size && i < n; i++)
        out[o++] = digits[n - 1 - i];
    if (o >= 0 && (size_t)o < size)
        out[o] = '\0';
}

void wire_rowsum_free(wire_rowsum_t *s)
{
    EVP_MD_CTX_free(s->md);
    s->md = NULL;
}
