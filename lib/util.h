/*
 * util.h - conventions shared by every gpt-* program.
 *
 * Implements:
 *   - the program name and verbosity (one integer, as zstd's DISPLAYLEVEL);
 *   - die()/warnx(): "gpt-xxx: message" on stderr; a format ending in ':'
 *     gets ": strerror(errno)" appended (sbase eprintf style);
 *   - checked allocation (xmalloc & co);
 *   - number parsing that rejects trailing garbage and overflow;
 *   - atomic outputs (struct aout): write to a temporary file beside the
 *     final name, then fsync + rename; SIGINT/SIGTERM/SIGHUP remove every
 *     open temporary file and re-raise, so an interrupted run never leaves
 *     a half-written file under its final name (git lockfile.h, zstd
 *     fileio.c INThandler);
 *   - inputs: "-" means stdin;
 *   - close_stdout(): flush and check stdout at exit (sbase fshut.c).
 *
 * Exit statuses used by every program: 0 success, 1 runtime error,
 * 2 usage error (EXIT_USAGE).
 */
#ifndef GPT_UTIL_H
#define GPT_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <getopt.h>
#include <stdio.h>
#include <sys/types.h>

#define EXIT_RUNTIME 1
#define EXIT_USAGE 2

#define GPT_VERSION "0.1.0"

extern const char *progname; /* "gpt-xxx", set by util_init() */
extern int verbosity;        /* 0 quiet (-q), 1 default, 2+ verbose (-v) */

/* Call first in main(): sets progname, installs the signal handlers that
 * clean up temporary outputs, and registers close_stdout() with atexit. */
void util_init(const char *argv0);

/* Library functions report errors through a struct gpt_err and return -1
 * (or NULL); programs print err.msg with die(). Messages name the file. */
struct gpt_err {
	char msg[512];
};
/* Format into e (if not NULL) and return -1. */
int gpt_errf(struct gpt_err *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Print "progname: fmt" (+ ": strerror(errno)" if fmt ends in ':') and exit. */
void die(int status, const char *fmt, ...) __attribute__((noreturn, format(printf, 2, 3)));
/* Have die() call fn with its message (without "progname: ") after
 * printing it and before exiting, once (NULL: none). A data-parallel run
 * uses it to tell the other ranks why this one stops (lib/dist.h). */
void util_at_die(void (*fn)(const char *msg));
/* Same message, no exit. */
void warnx(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Message at verbosity >= level, prefixed with progname. */
void info(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);
/* Aligned allocation (for SIMD / pinned-like buffers); free with free(). */
void *xmalloc_aligned(size_t align, size_t n);

/* Parse a whole string; return 0 on success, -1 on garbage, overflow or
 * out of range [lo, hi]. */
int parse_long(const char *s, long lo, long hi, long *out);
int parse_u64(const char *s, uint64_t *out); /* accepts k/M/G suffixes (x1000) */
int parse_double(const char *s, double *out);

/* 1 if fd is a terminal. */
int is_tty(int fd);
/* 1 if progress lines should be drawn on stderr (a tty and verbosity >= 1). */
int progress_enabled(void);

/* Monotonic clock in seconds. */
double now_seconds(void);

/* Open an input: "-" is stdin. Dies with a message naming path on failure. */
FILE *xfopen_in(const char *path);
void xfclose_in(FILE *fp, const char *path);

/* ---------------------------------------------------------------------
 * Atomic output.
 *   struct aout o;
 *   aout_open(&o, path, AOUT_BINARY);   // "-" is stdout
 *   fwrite(..., o.fp) ...
 *   aout_commit(&o);                     // fflush, fsync, rename; dies on error
 * On any error (or a signal) before commit, the temporary file is removed.
 */
enum {
	AOUT_BINARY = 1, /* refuse a terminal as stdout unless AOUT_FORCE */
	AOUT_FORCE = 2,  /* allow binary output to a terminal */
};
struct aout {
	FILE *fp;
	char *path; /* final name, or "-" */
	char *tmp;  /* temporary name, NULL for stdout */
	int slot;   /* index in the cleanup table, -1 for stdout */
};
void aout_open(struct aout *o, const char *path, int flags);
void aout_commit(struct aout *o);
void aout_abort(struct aout *o); /* remove the temporary file, no message */
/* Remove every open temporary file now (async-signal-safe; for a process
 * that ends with _exit, such as lib/dist.c's watchdog). */
void aout_cleanup_all(void);
/* Write all of buf or die naming the output. */
void aout_write(struct aout *o, const void *buf, size_t n);

/* Write all of buf to fp; return 0 or -1 (errno set). */
int write_all(FILE *fp, const void *buf, size_t n);
/* Read exactly n bytes: return n, or fewer at end of file; -1 on error. */
ssize_t read_full(FILE *fp, void *buf, size_t n);

/* ---------------------------------------------------------------------
 * Command lines.  Every program uses getopt_long with these common options:
 *   -h --help  -V --version  -q --quiet  -v --verbose
 * CLI_COMMON_SHORT goes into the short-option string, CLI_COMMON_LONG into
 * the struct option array, and cli_common() handles them in the switch's
 * default branch (it returns 0 for an option it does not know, after which
 * the caller reports a usage error with cli_usage_error()).
 */
#define CLI_COMMON_SHORT "hVqv"
#define CLI_COMMON_LONG                                                        \
	{"help", no_argument, 0, 'h'}, {"version", no_argument, 0, 'V'},       \
	    {"quiet", no_argument, 0, 'q'}, {"verbose", no_argument, 0, 'v'}
struct cli_text {
	const char *synopsis; /* "gpt-xxx [OPTION]... FILE" (one or more lines) */
	const char *help;     /* option table printed by --help */
};
/* -h: full help on stdout, exit 0; -V: version, exit 0; -q/-v: verbosity.
 * Returns 1 if c was one of these, 0 otherwise. */
int cli_common(int c, const struct cli_text *t);
/* "progname: msg", the synopsis and "Try 'progname --help'" on stderr; exit 2. */
void cli_usage_error(const struct cli_text *t, const char *fmt, ...)
	__attribute__((noreturn, format(printf, 2, 3)));

/* Flush and check stdout; on failure print a message and _exit(1). */
void close_stdout(void);

/* Install a handler that sets *flag (volatile sig_atomic_t) on SIGINT/SIGTERM
 * instead of the default cleanup-and-die (for trainers that stop cleanly).
 * A second signal falls back to cleanup-and-die. */
#include <signal.h>
void util_soft_signals(volatile sig_atomic_t *flag);

/* bf16 <-> fp32 (round to nearest even; NaN kept NaN). */
static inline float bf16_to_f32(uint16_t h)
{
	union { uint32_t u; float f; } v;
	v.u = (uint32_t)h << 16;
	return v.f;
}
static inline uint16_t f32_to_bf16(float f)
{
	union { uint32_t u; float f; } v;
	v.f = f;
	if ((v.u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((v.u >> 16) | 0x40); /* quiet NaN */
	uint32_t rounding = 0x7fffu + ((v.u >> 16) & 1u);
	return (uint16_t)((v.u + rounding) >> 16);
}
static inline float round_bf16(float f) { return bf16_to_f32(f32_to_bf16(f)); }

#endif
