/* libFuzzer target for common/wire's decoder.
 *
 * Input: byte 0 gives k = byte % 8, the next k bytes are piece sizes (0: everything left), the
 * rest is the byte stream. The stream is fed to a decoder (max_frame 1 MiB) in pieces of those
 * sizes, cycling, and every frame is pulled after each piece. Each decoded message is encoded
 * again, decoded again (which must succeed, with the same type) and encoded a third time (which
 * must give the same bytes: decoding and encoding reach a fixed point).
 *
 * Seeds: with FUZZ_WIRE_WRITE_CORPUS=DIR set, the binary writes one valid frame of every message
 * type (and one stream of them all, fed in small pieces) into DIR and exits:
 *   FUZZ_WIRE_WRITE_CORPUS=tests/fuzz/corpus-wire build/tests/fuzz-wire
 *   build/tests/fuzz-wire tests/fuzz/corpus-wire -max_total_time=60
 * The seeds are not kept in git (.gitignore lists the corpus directories); this regenerates
 * them.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <uv.h>

#include "buf.h"
#include "err.h"
#include "wire.h"

#define MAX_FRAME (1u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz-wire: %s\n", what);
        abort();
    }
}

/* Re-encodes msg, decodes that, re-encodes the copy, and checks the round trip. */
static void roundtrip(const wire_msg_t *msg)
{
    check(wire_type_name(msg->type)[0] != 'u', "decoded message of unknown type");
    check(wire_msg_size(msg) > sizeof(*msg), "decoded message without a size");

    buf_t first, second;
    buf_init(&first, 0);
    buf_init(&second, 0);
    /* Re-encoding may grow a little (packed repeated fields, canonical varints): allow more than
     * the decoder's cap. */
    int r = wire_encode(msg, WIRE_MAX_FRAME_DEFAULT, &first);
    if (r != 0)
        fprintf(stderr, "fuzz-wire: re-encoding a %s: %s\n", wire_type_name(msg->type),
                err_name(r));
    check(r == 0, "a decoded message does not encode");
    check(first.len > WIRE_HEADER_SIZE, "encoded frame without payload");

    wire_msg_t *copy = NULL;
    r = wire_decode_payload(buf_data(&first) + WIRE_HEADER_SIZE, first.len - WIRE_HEADER_SIZE,
                            &copy);
    check(r == 1, "a re-encoded message does not decode");
    check(copy->type == msg->type, "type changed in the round trip");

    check(wire_encode(copy, WIRE_MAX_FRAME_DEFAULT, &second) == 0, "the copy does not encode");
    check(second.len == first.len && memcmp(buf_data(&first), buf_data(&second), first.len) == 0,
          "encode(decode(encode(m))) differs from encode(m)");

    wire_msg_free(copy);
    buf_free(&second);
    buf_free(&first);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    size_t k = data[0] % 8;
    if (size < 1 + k)
        return 0;
    const uint8_t *pieces = data + 1;
    const uint8_t *stream = data + 1 + k;
    size_t len = size - 1 - k;

    wire_decoder_t d;
    wire_decoder_init(&d, MAX_FRAME);
    size_t off = 0, i = 0;
    int r = 0;
    while (off < len && r >= 0) {
        size_t n = k ? pieces[i++ % k] : 0;
        if (n == 0 || n > len - off)
            n = len - off;
        r = wire_decoder_feed(&d, stream + off, n);
        if (r == UV_ENOBUFS)
            break; /* only with pieces over max_frame; not an error of the decoder */
        check(r == 0, "feed failed");
        off += n;
        wire_msg_t *msg;
        while ((r = wire_decoder_next(&d, &msg)) == 1) {
            roundtrip(msg);
            wire_msg_free(msg);
        }
        check(r == 0 || r == ERR_PROTOCOL || r == ERR_FRAME_TOO_LARGE || r == UV_ENOMEM,
              "unexpected decoder error");
        check(r == 0 || wire_decoder_next(&d, &msg) == r, "decoder error not sticky");
    }
    wire_decoder_free(&d);

    /* The whole stream as one bare payload, too. */
    if (len <= MAX_FRAME) {
        wire_msg_t *msg = NULL;
        r = wire_decode_payload(stream, len, &msg);
        if (r == 1) {
            roundtrip(msg);
            wire_msg_free(msg);
        } else {
            check(r == ERR_PROTOCOL || r == UV_ENOMEM, "unexpected payload error");
            check(msg == NULL, "output set on error");
        }
    }
    return 0;
}

/* ---- seed corpus ---- */

static int write_seed(const char *dir, const char *name, const uint8_t *head, size_t head_len,
                      const buf_t *frames)
{
    char path[4096];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    int ok = fwrite(head, 1, head_len, f) == head_len &&
             fwrite(buf_data(frames), 1, frames->len, f) == frames->len;
    return fclose(f) == 0 && ok ? 0 : -1;
}

static int write_corpus(const char *dir)
{
    static const uint8_t digest[32] = {0xde, 0xad, 0, 0xbe, 0xef};
    static const char *const caps[] = {"zstd", "delta"};
    static const wire_bytes_t chunks[] = {{digest, 32}, {digest, 4}};
    static const wire_table_summary_t tables[] = {
        {"wp_posts", WIRE_TABLE_BASE, 10, {digest, 32}, chunks, 2},
        {"wp_v", WIRE_TABLE_VIEW, 0, {NULL, 0}, NULL, 0},
    };
    static const char *const names[] = {"wp_options"};
    static const uint32_t chunk_ids[] = {1, 300};
    static const wire_column_def_t cols[] = {
        {"ID", "bigint(20) unsigned", 8, false, "", "", false, "", false, "auto_increment", 0},
        {"t", "text", 252, true, "utf8mb4", "utf8mb4_bin", false, "x", true, "", false},
    };
    static const char *const idx_cols[] = {"ID", "t"};
    static const uint32_t prefix[] = {0, 191};
    static const wire_index_def_t idx[] = {{"PRIMARY", true, idx_cols, 2, prefix, 2, "BTREE"}};
    static const wire_bytes_t values[] = {{(const uint8_t *)"1", 1}, {NULL, 0}};
    static const uint8_t nulls[] = {0x02};
    static const wire_row_t rows[] = {{values, 2, {nulls, 1}}, {values, 1, {NULL, 0}}};
#define B(s) ((wire_bytes_t){(const uint8_t *)(s), sizeof(s) - 1})
    wire_msg_t m[16];
    memset(m, 0, sizeof(m));
    m[0].type = WIRE_HELLO;
    m[0].u.hello = (wire_hello_t){WIRE_MAGIC, 1, "0.1.0", "site", caps, 2, WIRE_ROLE_AGENT};
    m[1].type = WIRE_ERROR;
    m[1].u.error = (wire_error_t){18, "protocol version mismatch"};
    m[2].type = WIRE_SYNC_BEGIN;
    m[2].u.sync_begin = (wire_sync_begin_t){{digest, 16}, true, 7, {digest, 32}, 1000};
    m[3].type = WIRE_DIR_DIGEST;
    m[3].u.dir_digest = (wire_dir_digest_t){B("wp-content"), {digest, 32}};
    m[4].type = WIRE_FILE_ENTRY;
    m[4].u.file_entry = (wire_file_entry_t){B("wp-config.php"), WIRE_FILE_REGULAR, 0640, -5, 4096,
                                            {digest, 32},       {NULL, 0},         false};
    m[5].type = WIRE_FILE_NEED;
    m[5].u.file_need = (wire_file_need_t){B("a/b"), WIRE_TRANSFER_DELTA, {digest, 8}, 12};
    m[6].type = WIRE_FILE_DATA;
    m[6].u.file_data = (wire_file_data_t){B("a/b"), 4096, B("data\0data"), false, true};
    m[7].type = WIRE_FILE_DELTA;
    m[7].u.file_delta = (wire_file_delta_t){B("a/b"), B("delta"), true};
    m[8].type = WIRE_FILES_END;
    m[8].u.files_end = (wire_files_end_t){{digest, 32}, 1000, UINT64_MAX};
    m[9].type = WIRE_DB_BEGIN;
    m[9].u.db_begin = (wire_db_begin_t){"utf8mb4", "wp_", tables, 2, names, 1};
    m[10].type = WIRE_DB_NEED;
    m[10].u.db_need = (wire_db_need_t){names, 1, chunk_ids, 2};
    m[11].type = WIRE_TABLE_DEF;
    m[11].u.table_def = (wire_table_def_t){
        "wp_posts", WIRE_TABLE_BASE, "InnoDB", "utf8mb4", "utf8mb4_bin", 5, cols, 2, idx, 1, "",
        "c"};
    m[12].type = WIRE_ROW_BATCH;
    m[12].u.row_batch = (wire_row_batch_t){"wp_posts", 3, rows, 2};
    m[13].type = WIRE_TABLE_END;
    m[13].u.table_end = (wire_table_end_t){"wp_posts", 2, {digest, 32}};
    m[14].type = WIRE_COMMIT;
    m[14].u.commit = (wire_commit_t){{digest, 32}, 1000, 12};
    m[15].type = WIRE_RESULT;
    m[15].u.result = (wire_result_t){WIRE_STATUS_REFUSED, 9, 40, "refused"};
#undef B

    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return -1;
    buf_t all;
    buf_init(&all, 0);
    int r = 0;
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]) && r == 0; i++) {
        buf_t one;
        buf_init(&one, 0);
        static const uint8_t whole[] = {0}; /* k = 0: one feed */
        char name[64];
        snprintf(name, sizeof(name), "seed-%s", wire_type_name(m[i].type));
        r = wire_encode(&m[i], MAX_FRAME, &one);
        if (r == 0)
            r = write_seed(dir, name, whole, sizeof(whole), &one);
        if (r == 0)
            r = buf_append(&all, buf_data(&one), one.len);
        buf_free(&one);
    }
    static const uint8_t split[] = {3, 1, 7, 0}; /* pieces of 1, 7, then the rest */
    if (r == 0)
        r = write_seed(dir, "seed-all-split", split, sizeof(split), &all);
    buf_free(&all);
    return r;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    const char *dir = getenv("FUZZ_WIRE_WRITE_CORPUS");
    if (dir) {
        if (write_corpus(dir) != 0) {
            fprintf(stderr, "fuzz-wire: cannot write the corpus to %s: %s\n", dir, strerror(errno));
            exit(1);
        }
        fprintf(stderr, "fuzz-wire: seeds written to %s\n", dir);
        exit(0);
    }
    return 0;
}
