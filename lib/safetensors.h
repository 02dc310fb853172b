/*
 * safetensors.h - the safetensors weight-file format: reader and writer.
 *
 * Layout (huggingface/safetensors README and safetensors/src/tensor.rs):
 *   bytes 0..7   N, unsigned 64-bit little-endian: length of the header
 *   bytes 8..    N bytes of UTF-8 JSON: an object mapping each tensor name to
 *                {"dtype":"F32","shape":[2,3],"data_offsets":[BEGIN,END]}
 *                plus an optional "__metadata__" object of string -> string;
 *                whitespace may pad it (we pad with spaces to a multiple of 8)
 *   then         the data section: every tensor's raw bytes, little-endian,
 *                row-major; offsets are relative to the start of this
 *                section, END is one past the last byte, and the tensors
 *                tile the section exactly (no hole, no overlap, nothing
 *                after the last one).
 *
 * Implements:
 *   - dtype names and sizes (enum st_dtype);
 *   - st_load(): read a whole file ("-" = stdin; zstd-compressed input is
 *     recognised by its magic number, whatever the name) and validate every
 *     rule above as the reference implementation does: header length at
 *     most ST_MAX_HEADER and within the file, UTF-8 JSON object, no
 *     duplicate key, known dtypes, shape products and byte sizes without
 *     overflow, offsets that tile the data section, string metadata. Every
 *     error names the file and the offending tensor or key;
 *   - st_parse(): the same checks on a buffer already in memory;
 *   - lookups (st_find, st_meta), typed views, and st_read_f32() which
 *     converts an F32/BF16/F16 tensor to fp32 with a shape check;
 *   - the writer: st_write() for tensors already in memory, and the
 *     streaming form st_writer_begin/put/end for data produced in pieces.
 *     Output goes through struct aout (temporary file + rename, "-" is
 *     stdout, a terminal is refused unless ST_FORCE); a name ending in
 *     ".zst" (or ST_ZSTD) writes a zstd stream: checksum on, content size
 *     pledged, compression on parallel_threads() workers;
 *   - st_header(): the exact header the writer would produce (for sizes).
 *
 * The writer keeps the caller's tensor order for both the header object and
 * the data (the reference writer sorts by alignment then name; any order
 * whose offsets tile the data section is valid). The header always lists
 * __metadata__ first when there is metadata.
 *
 * I/O errors while writing die through aout (util.h); validation errors
 * return -1 with a message in struct gpt_err. Little-endian hosts only.
 */
#ifndef GPT_SAFETENSORS_H
#define GPT_SAFETENSORS_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c assumes a little-endian host"
#endif

#define ST_MAX_HEADER 100000000ull /* bytes, as the reference reader */
#define ST_MAX_DIMS 16

/* The dtypes of the reference implementation, except the sub-byte ones
 * (F4, F6_E2M3, F6_E3M2), which are rejected as unsupported. */
enum st_dtype {
	ST_BOOL, ST_U8, ST_I8, ST_F8_E5M2, ST_F8_E4M3, ST_F8_E8M0, ST_F8_E4M3FNUZ, ST_F8_E5M2FNUZ,
	ST_I16, ST_U16, ST_F16, ST_BF16, ST_I32, ST_U32, ST_F32, ST_C64, ST_F64, ST_I64, ST_U64,
	ST_NDTYPES
};
const char *st_dtype_name(enum st_dtype d);   /* "F32" */
size_t st_dtype_size(enum st_dtype d);        /* bytes per element */
int st_dtype_parse(const char *s, enum st_dtype *out); /* 0, or -1 if unknown */

/* ------------------------------------------------------------------------
 * Reading
 */
struct st_tensor {
	char *name;
	enum st_dtype dtype;
	int ndim;                      /* 0 for a scalar */
	int64_t shape[ST_MAX_DIMS];
	uint64_t numel;                /* product of shape (1 for a scalar) */
	uint64_t begin, end;           /* byte offsets in the data section */
	const void *data;              /* begin bytes into the data section */
};

struct st_file {
	char *path;                    /* as given ("-" for stdin) */
	int n;                         /* tensors, in header order */
	struct st_tensor *t;
	int nmeta;                     /* __metadata__ pairs, in header order */
	char **meta_key, **meta_val;
	uint64_t header_len;           /* N */
	uint64_t data_len;             /* bytes in the data section */
	void *data;                    /* the data section (malloc'd, 16-aligned) */
	int compressed;                /* 1 if the input was a zstd stream */
	int *by_name;                  /* indices sorted by name, for st_find */
};

/* Read and validate a whole file. path "-" reads stdin. On error returns -1
 * with e naming the path and the problem; *f is then empty. */
int st_load(const char *path, struct st_file *f, struct gpt_err *e);
/* Validate a complete file image held in memory (name is used in messages).
 * The image is copied; the caller keeps buf. */
int st_parse(const void *buf, size_t len, const char *name, struct st_file *f,
             struct gpt_err *e);
void st_free(struct st_file *f);

const struct st_tensor *st_find(const struct st_file *f, const char *name);
const char *st_meta(const struct st_file *f, const char *key); /* NULL if absent */

/* Raw bytes (never NULL; end - begin bytes). */
static inline const void *st_data(const struct st_tensor *t) { return t->data; }
/* Typed views: NULL unless the dtype matches and the data is aligned for the
 * type (files written by others may place a tensor at any offset; use
 * st_read_f32, which copies, to be safe). BF16 and F16 are raw uint16. */
const float *st_f32(const struct st_tensor *t);
const double *st_f64(const struct st_tensor *t);
const uint16_t *st_bf16(const struct st_tensor *t);
const uint16_t *st_f16(const struct st_tensor *t);
const int64_t *st_i64(const struct st_tensor *t);
const int32_t *st_i32(const struct st_tensor *t);
const uint8_t *st_u8(const struct st_tensor *t);

/* Copy tensor t into dst as fp32, converting from F32, BF16 or F16. If
 * shape is not NULL the tensor must have exactly ndim dimensions equal to
 * shape[]; any other dtype or shape is an error naming the tensor. */
int st_read_f32(const struct st_file *f, const struct st_tensor *t, int ndim,
                const int64_t *shape, float *dst, struct gpt_err *e);

/* IEEE half -> float (exact). */
float st_f16_to_f32(uint16_t h);

/* ------------------------------------------------------------------------
 * Writing
 */
struct st_entry {
	const char *name;
	enum st_dtype dtype;
	int ndim;
	const int64_t *shape;          /* ndim entries (may be NULL when ndim is 0) */
	const void *data;              /* st_write only; numel * size bytes */
};

enum {
	ST_FORCE = 1,  /* allow writing binary data to a terminal */
	ST_ZSTD = 2,   /* compress even if the name does not end in ".zst" */
	ST_PLAIN = 4,  /* never compress */
};

struct st_writer {
	struct aout out;
	void *zc;                      /* ZSTD_CCtx *, NULL when not compressing */
	void *zbuf;
	size_t zcap;
	uint64_t expect, done;         /* data-section bytes: promised, written */
};

/* Validate the entries (unique non-empty UTF-8 names, none "__metadata__",
 * 0 <= ndim <= ST_MAX_DIMS, non-negative dims, sizes without overflow,
 * unique metadata keys), open the output and write the length and header.
 * meta holds nmeta key/value pairs: meta[2i] is a key, meta[2i+1] its value.
 * Then st_writer_put() the data of every tensor in entry order, and
 * st_writer_end(). */
int st_writer_begin(struct st_writer *w, const char *path, int flags,
                    const struct st_entry *t, int n, const char *const *meta, int nmeta,
                    struct gpt_err *e);
void st_writer_put(struct st_writer *w, const void *buf, size_t len);
/* Check that exactly the promised bytes were put, finish the zstd frame and
 * commit the output. -1 (and nothing left behind) if the count is wrong. */
int st_writer_end(struct st_writer *w, struct gpt_err *e);
void st_writer_abort(struct st_writer *w);

/* Everything at once: entries with their data pointers. */
int st_write(const char *path, int flags, const struct st_entry *t, int n,
             const char *const *meta, int nmeta, struct gpt_err *e);

/* The header st_writer_begin would write (JSON + space padding to a
 * multiple of 8, without the 8-byte length); *len gets its length.
 * Returns a malloc'd buffer, or NULL with e set. */
char *st_header(const struct st_entry *t, int n, const char *const *meta, int nmeta,
                size_t *len, uint64_t *data_len, struct gpt_err *e);

#endif
