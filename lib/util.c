/*
 * util.c - program name, messages, allocation, parsing, atomic outputs.
 * See util.h.
 */
#include "util.h"

#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char *progname = "gpt";
int verbosity = 1;

/* ----------------------------------------------------------------------
 * Messages
 */
static void (*die_hook)(const char *msg);

void util_at_die(void (*fn)(const char *msg)) { die_hook = fn; }

/* Format the message into buf (without the program name) and write
 * "progname: message\n" to stderr in one piece, so that the lines of
 * several processes sharing stderr do not interleave. */
static void vmsg(char *buf, size_t size, const char *fmt, va_list ap)
{
	int saved = errno;
	fflush(stdout);
	vsnprintf(buf, size, fmt, ap);
	size_t n = strlen(fmt);
	if (n && fmt[n - 1] == ':') {
		size_t k = strlen(buf);
		snprintf(buf + k, size - k, " %s", strerror(saved));
	}
	fprintf(stderr, "%s: %s\n", progname, buf);
}

void die(int status, const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	vmsg(buf, sizeof buf, fmt, ap);
	va_end(ap);
	if (die_hook) {
		void (*fn)(const char *) = die_hook;
		die_hook = NULL; /* once, even if the hook dies itself */
		fn(buf);
	}
	exit(status);
}

void warnx(const char *fmt, ...)
{
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	vmsg(buf, sizeof buf, fmt, ap);
	va_end(ap);
}

void info(int level, const char *fmt, ...)
{
	if (verbosity < level)
		return;
	char buf[4096];
	va_list ap;
	va_start(ap, fmt);
	vmsg(buf, sizeof buf, fmt, ap);
	va_end(ap);
}

int gpt_errf(struct gpt_err *e, const char *fmt, ...)
{
	if (e) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->msg, sizeof e->msg, fmt, ap);
		va_end(ap);
	}
	return -1;
}

/* ----------------------------------------------------------------------
 * Allocation
 */
void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);
	if (!p)
		die(EXIT_RUNTIME, "out of memory (%zu bytes)", n);
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p)
		die(EXIT_RUNTIME, "out of memory (%zu x %zu bytes)", n, size);
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		die(EXIT_RUNTIME, "out of memory (%zu bytes)", n);
	return p;
}

char *xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	return memcpy(xmalloc(n), s, n);
}

void *xmalloc_aligned(size_t align, size_t n)
{
	void *p = NULL;
	if (posix_memalign(&p, align, n ? n : 1) != 0)
		die(EXIT_RUNTIME, "out of memory (%zu bytes)", n);
	return p;
}

/* ----------------------------------------------------------------------
 * Parsing
 */
int parse_long(const char *s, long lo, long hi, long *out)
{
	char *end;
	if (!s || !*s)
		return -1;
	errno = 0;
	long v = strtol(s, &end, 10);
	if (errno || *end || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

int parse_u64(const char *s, uint64_t *out)
{
	char *end;
	if (!s || !*s || *s == '-')
		return -1;
	errno = 0;
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || end == s)
		return -1;
	uint64_t mul = 1;
	if (*end == 'k' || *end == 'K')
		mul = 1000ull, end++;
	else if (*end == 'M')
		mul = 1000000ull, end++;
	else if (*end == 'G')
		mul = 1000000000ull, end++;
	if (*end)
		return -1;
	if (v > UINT64_MAX / mul)
		return -1;
	*out = (uint64_t)v * mul;
	return 0;
}

int parse_double(const char *s, double *out)
{
	char *end;
	if (!s || !*s)
		return -1;
	errno = 0;
	double v = strtod(s, &end);
	if (errno == ERANGE && fabs(v) > 1.0)
		return -1;
	if (*end || !isfinite(v))
		return -1;
	*out = v;
	return 0;
}

int is_tty(int fd) { return isatty(fd); }

int progress_enabled(void) { return verbosity >= 1 && isatty(2); }

double now_seconds(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

FILE *xfopen_in(const char *path)
{
	if (!strcmp(path, "-"))
		return stdin;
	FILE *fp = fopen(path, "rb");
	if (!fp)
		die(EXIT_RUNTIME, "%s:", path);
	return fp;
}

void xfclose_in(FILE *fp, const char *path)
{
	if (fp == stdin)
		return;
	if (fclose(fp) != 0)
		die(EXIT_RUNTIME, "%s:", path);
}

int write_all(FILE *fp, const void *buf, size_t n)
{
	if (n && fwrite(buf, 1, n, fp) != n)
		return -1;
	return 0;
}

ssize_t read_full(FILE *fp, void *buf, size_t n)
{
	size_t got = fread(buf, 1, n, fp);
	if (got < n && ferror(fp))
		return -1;
	return (ssize_t)got;
}

/* ----------------------------------------------------------------------
 * Temporary outputs and signals
 *
 * The cleanup table holds the names of the temporary files that are open;
 * the signal handler unlinks them (unlink is async-signal-safe) and
 * re-raises the signal with its default action.
 */
#define MAX_TMP 64
static char *volatile tmp_names[MAX_TMP];
static volatile sig_atomic_t *soft_flag;

static void cleanup_tmp(void)
{
	for (int i = 0; i < MAX_TMP; i++)
		if (tmp_names[i])
			unlink(tmp_names[i]);
}

void aout_cleanup_all(void) { cleanup_tmp(); }

static void fatal_signal(int sig)
{
	cleanup_tmp();
	signal(sig, SIG_DFL);
	raise(sig);
}

static void soft_signal(int sig)
{
	if (soft_flag && !*soft_flag) {
		*soft_flag = sig;
		return;
	}
	fatal_signal(sig);
}

void util_init(const char *argv0)
{
	const char *slash = argv0 ? strrchr(argv0, '/') : NULL;
	progname = slash ? slash + 1 : (argv0 ? argv0 : "gpt");
	int sigs[] = {SIGINT, SIGTERM, SIGHUP, SIGPIPE};
	for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = fatal_signal;
		sigemptyset(&sa.sa_mask);
		sigaction(sigs[i], &sa, NULL);
	}
	atexit(close_stdout);
	atexit(cleanup_tmp); /* die() before a commit removes the temporary */
}

void util_soft_signals(volatile sig_atomic_t *flag)
{
	soft_flag = flag;
	int sigs[] = {SIGINT, SIGTERM};
	for (size_t i = 0; i < 2; i++) {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = soft_signal;
		sigemptyset(&sa.sa_mask);
		sigaction(sigs[i], &sa, NULL);
	}
}

static void block_signals(sigset_t *old)
{
	sigset_t all;
	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, old);
}

static void restore_signals(const sigset_t *old) { sigprocmask(SIG_SETMASK, old, NULL); }

void aout_open(struct aout *o, const char *path, int flags)
{
	memset(o, 0, sizeof *o);
	o->slot = -1;
	if (!strcmp(path, "-")) {
		if ((flags & AOUT_BINARY) && !(flags & AOUT_FORCE) && isatty(1))
			die(EXIT_USAGE, "refusing to write binary data to a terminal (use --force or redirect)");
		o->fp = stdout;
		o->path = xstrdup("-");
		return;
	}
	o->path = xstrdup(path);
	/* A device, FIFO or socket (/dev/null, a named pipe) is written in
	 * place: a temporary file renamed over it would replace the device. */
	struct stat st;
	if (stat(path, &st) == 0 && !S_ISREG(st.st_mode)) {
		if ((flags & AOUT_BINARY) && !(flags & AOUT_FORCE) && S_ISCHR(st.st_mode)) {
			int fd = open(path, O_WRONLY);
			int tty = fd >= 0 && isatty(fd);
			if (fd >= 0)
				close(fd);
			if (tty)
				die(EXIT_USAGE, "%s: refusing to write binary data to a terminal (use --force)", path);
		}
		o->fp = fopen(path, "wb");
		if (!o->fp)
			die(EXIT_RUNTIME, "%s:", path);
		return;
	}
	const char *slash = strrchr(path, '/');
	size_t dirlen = slash ? (size_t)(slash - path) + 1 : 0;
	size_t n = strlen(path) + 16;
	char *tmp = xmalloc(n);
	snprintf(tmp, n, "%.*s.%s.XXXXXX", (int)dirlen, path, slash ? slash + 1 : path);
	sigset_t old;
	block_signals(&old);
	int fd = mkstemp(tmp);
	if (fd < 0) {
		restore_signals(&old);
		die(EXIT_RUNTIME, "%s: cannot create temporary file:", path);
	}
	int slot = -1;
	for (int i = 0; i < MAX_TMP; i++)
		if (!tmp_names[i]) {
			slot = i;
			break;
		}
	if (slot < 0) {
		unlink(tmp);
		restore_signals(&old);
		die(EXIT_RUNTIME, "too many outputs open at once");
	}
	tmp_names[slot] = tmp;
	restore_signals(&old);
	/* mkstemp makes 0600; outputs are ordinary files, so honour umask */
	mode_t mask = umask(0);
	umask(mask);
	fchmod(fd, 0666 & ~mask);
	o->fp = fdopen(fd, "wb");
	if (!o->fp) {
		aout_abort(o);
		die(EXIT_RUNTIME, "%s:", path);
	}
	o->tmp = tmp;
	o->slot = slot;
}

static void forget_tmp(struct aout *o)
{
	sigset_t old;
	block_signals(&old);
	if (o->slot >= 0)
		tmp_names[o->slot] = NULL;
	restore_signals(&old);
	o->slot = -1;
}

void aout_abort(struct aout *o)
{
	if (o->fp && o->fp != stdout)
		fclose(o->fp);
	if (o->tmp) {
		unlink(o->tmp);
		forget_tmp(o);
		free(o->tmp);
	}
	free(o->path);
	memset(o, 0, sizeof *o);
	o->slot = -1;
}

void aout_write(struct aout *o, const void *buf, size_t n)
{
	if (write_all(o->fp, buf, n) != 0) {
		int e = errno;
		char *p = xstrdup(o->path);
		aout_abort(o);
		errno = e;
		die(EXIT_RUNTIME, "%s: write failed:", !strcmp(p, "-") ? "standard output" : p);
	}
}

void aout_commit(struct aout *o)
{
	if (o->fp == stdout) {
		if (fflush(stdout) != 0)
			die(EXIT_RUNTIME, "standard output:");
		free(o->path);
		o->path = NULL;
		return;
	}
	if (!o->tmp) { /* a device or FIFO written in place */
		int bad = fflush(o->fp) != 0 || ferror(o->fp);
		int e = errno;
		if (fclose(o->fp) != 0 && !bad)
			bad = 1, e = errno;
		if (bad) {
			errno = e;
			die(EXIT_RUNTIME, "%s:", o->path);
		}
		free(o->path);
		memset(o, 0, sizeof *o);
		o->slot = -1;
		return;
	}
	int err = 0;
	if (fflush(o->fp) != 0 || fsync(fileno(o->fp)) != 0)
		err = errno;
	if (fclose(o->fp) != 0 && !err)
		err = errno;
	o->fp = NULL;
	if (!err && rename(o->tmp, o->path) != 0)
		err = errno;
	if (err) {
		char *p = xstrdup(o->path);
		aout_abort(o);
		errno = err;
		die(EXIT_RUNTIME, "%s:", p);
	}
	forget_tmp(o);
	free(o->tmp);
	free(o->path);
	memset(o, 0, sizeof *o);
	o->slot = -1;
}

void close_stdout(void)
{
	if (fflush(stdout) != 0 || ferror(stdout)) {
		if (errno == EPIPE)
			_exit(EXIT_RUNTIME);
		fprintf(stderr, "%s: standard output: %s\n", progname, strerror(errno));
		cleanup_tmp();
		_exit(EXIT_RUNTIME);
	}
}

/* ----------------------------------------------------------------------
 * Command lines
 */
int cli_common(int c, const struct cli_text *t)
{
	switch (c) {
	case 'h':
		printf("Usage: %s\n%s", t->synopsis, t->help);
		exit(0);
	case 'V':
		printf("%s (gpt-*) %s\n", progname, GPT_VERSION);
		exit(0);
	case 'q':
		verbosity = 0;
		return 1;
	case 'v':
		verbosity++;
		return 1;
	}
	return 0;
}

void cli_usage_error(const struct cli_text *t, const char *fmt, ...)
{
	if (fmt) {
		va_list ap;
		va_start(ap, fmt);
		fprintf(stderr, "%s: ", progname);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		va_end(ap);
	}
	fprintf(stderr, "Usage: %s\nTry '%s --help' for more information.\n", t->synopsis, progname);
	exit(EXIT_USAGE);
}
