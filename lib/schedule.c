/*
 * schedule.c - schedule streams (gpt-sched(5)). See schedule.h.
 *
 * Sections: columns; reading lines; numbers; the reader; the record's
 * formulas; shapes; generating.
 */
#include "schedule.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const double sched_record_base_lr[SCHED_NGROUPS] = {0.6, 0.008, 0.04, 0.05};

#define SCHED_MAX_STEPS 1000000000L /* longest run gpt-sched writes */
#define SCHED_MAX_WINDOW 1000000    /* largest window value a shape may give */

/* ------------------------------------------------------------------------
 * Columns
 */
enum col {
	COL_STEP, COL_LR_SCALE, COL_LR_EMBED, COL_LR_HEAD, COL_LR_SCALAR, COL_LR_MUON,
	COL_MOMENTUM, COL_WINDOW, COL_EVAL, COL_CKPT, COL_TRAIN, NCOLS
};
static const char *const col_name[NCOLS] = {
	"step", "lr_scale", "lr_embed", "lr_head", "lr_scalar", "lr_muon",
	"momentum", "window", "eval", "ckpt", "train",
};
#define COL_LR_ABS0 COL_LR_EMBED /* COL_LR_EMBED + g is group g's column */

struct sched_reader {
	FILE *fp;
	char *name;
	long line;                  /* number of the last line read (1-based) */
	char buf[SCHED_LINE_MAX + 1];
	int ncol;
	enum col col[NCOLS];        /* the column at each position */
	int absolute;
	double base_lr[SCHED_NGROUPS];
	long prev_step;             /* -1 before the first row */
	long stop_step;             /* step of a train 0 row, -1 if none yet */
	int failed;
};

static int is_ws(int c) { return c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f'; }

/* Split s in place at whitespace; returns the number of tokens (at most max;
 * if there were more, *more is set and tok[max] is the first extra one, so
 * tok must hold max + 1 pointers). */
static int split(char *s, char **tok, int max, int *more)
{
	int n = 0;
	*more = 0;
	for (;;) {
		while (is_ws((unsigned char)*s))
			s++;
		if (!*s)
			return n;
		if (n == max)
			*more = 1; /* tok[max] is the first extra token */
		tok[n] = s;
		while (*s && !is_ws((unsigned char)*s))
			s++;
		if (*s)
			*s++ = 0;
		if (n == max)
			return n;
		n++;
	}
}

/* 1 if the line is blank or a comment. */
static int is_skipped(const char *s)
{
	while (is_ws((unsigned char)*s))
		s++;
	return *s == 0 || *s == '#';
}

/* ------------------------------------------------------------------------
 * Reading lines: one getc at a time, so that nothing beyond the current
 * line's newline has to be available; stdio's buffer only holds what the
 * pipe already had.
 */
static int read_line(struct sched_reader *r, int *too_long, struct gpt_err *e)
{
	size_t n = 0;
	int c, nul = 0;
	*too_long = 0;
	for (;;) {
		c = getc(r->fp);
		if (c == EOF && ferror(r->fp) && errno == EINTR) {
			clearerr(r->fp); /* a signal interrupted read(2): try again */
			continue;
		}
		if (c == EOF || c == '\n')
			break;
		if (c == 0)
			nul = 1;
		if (n < SCHED_LINE_MAX)
			r->buf[n++] = (char)c;
		else
			*too_long = 1;
	}
	r->buf[n] = 0;
	if (c == EOF) {
		if (ferror(r->fp))
			return gpt_errf(e, "%s: read error after line %ld: %s", r->name, r->line,
			                strerror(errno));
		if (n == 0)
			return 0;
		r->line++;
		return gpt_errf(e, "%s:%ld: the last line has no newline (truncated stream?)", r->name,
		                r->line);
	}
	r->line++;
	if (nul)
		return gpt_errf(e, "%s:%ld: the line contains a NUL byte", r->name, r->line);
	return 1;
}

/* Next line that is neither blank nor a comment: 1, 0 at the end, -1. */
static int read_content_line(struct sched_reader *r, struct gpt_err *e)
{
	for (;;) {
		int too_long, rc = read_line(r, &too_long, e);
		if (rc <= 0)
			return rc;
		if (is_skipped(r->buf))
			continue;
		if (too_long)
			return gpt_errf(e, "%s:%ld: line longer than %d bytes", r->name, r->line,
			                SCHED_LINE_MAX);
		return 1;
	}
}

/* ------------------------------------------------------------------------
 * Numbers: decimal only ([+-]digits[.digits][e[+-]digits]), as awk and
 * printf write them; no hexadecimal, no nan/inf.
 */
static int is_integer_text(const char *s)
{
	if (*s == '+' || *s == '-')
		s++;
	if (!*s)
		return 0;
	for (; *s; s++)
		if (*s < '0' || *s > '9')
			return 0;
	return 1;
}

static int is_decimal_text(const char *s)
{
	int digits = 0;
	if (*s == '+' || *s == '-')
		s++;
	for (; *s >= '0' && *s <= '9'; s++)
		digits++;
	if (*s == '.')
		for (s++; *s >= '0' && *s <= '9'; s++)
			digits++;
	if (!digits)
		return 0;
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '+' || *s == '-')
			s++;
		if (!(*s >= '0' && *s <= '9'))
			return 0;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	return *s == 0;
}

static int field_err(const struct sched_reader *r, enum col c, struct gpt_err *e, const char *fmt,
                     ...) __attribute__((format(printf, 4, 5)));
static int field_err(const struct sched_reader *r, enum col c, struct gpt_err *e, const char *fmt,
                     ...)
{
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return gpt_errf(e, "%s:%ld: column '%s': %s", r->name, r->line, col_name[c], what);
}

static int field_double(const struct sched_reader *r, enum col c, const char *tok, double *out,
                        struct gpt_err *e)
{
	char *end;
	if (!is_decimal_text(tok)) {
		double v = strtod(tok, &end);
		if (end != tok && !*end && !isfinite(v))
			return field_err(r, c, e, "'%.40s' is not a finite number", tok);
		return field_err(r, c, e, "'%.40s' is not a decimal number", tok);
	}
	double v = strtod(tok, &end);
	if (!isfinite(v))
		return field_err(r, c, e, "'%.40s' is out of range", tok);
	*out = v;
	return 0;
}

static int field_long(const struct sched_reader *r, enum col c, const char *tok, long lo, long hi,
                      const char *range, long *out, struct gpt_err *e)
{
	if (!is_integer_text(tok)) {
		if (is_decimal_text(tok))
			return field_err(r, c, e, "'%.40s' is not an integer", tok);
		char *end;
		double v = strtod(tok, &end);
		if (end != tok && !*end && !isfinite(v))
			return field_err(r, c, e, "'%.40s' is not a finite number", tok);
		return field_err(r, c, e, "'%.40s' is not a number", tok);
	}
	errno = 0;
	long v = strtol(tok, NULL, 10);
	if (errno == ERANGE || v < lo || v > hi)
		return field_err(r, c, e, "'%.40s' is out of range (%s)", tok, range);
	*out = v;
	return 0;
}

/* ------------------------------------------------------------------------
 * The reader
 */
static int read_magic(struct sched_reader *r, struct gpt_err *e)
{
	int too_long, rc = read_line(r, &too_long, e);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return gpt_errf(e, "%s: empty; a schedule stream starts with the line '%s %d'",
		                r->name, SCHED_MAGIC, SCHED_VERSION);
	size_t m = strlen(SCHED_MAGIC);
	if (strncmp(r->buf, SCHED_MAGIC, m) != 0 || (r->buf[m] && !is_ws((unsigned char)r->buf[m]))) {
		char shown[48];
		size_t i;
		for (i = 0; i < sizeof shown - 1 && r->buf[i]; i++)
			shown[i] = r->buf[i] >= 32 && r->buf[i] < 127 ? r->buf[i] : '?';
		shown[i] = 0;
		return gpt_errf(e,
		                "%s:1: not a schedule stream: line 1 is '%s', expected '%s %d' "
		                "(see gpt-sched(5))",
		                r->name, shown, SCHED_MAGIC, SCHED_VERSION);
	}
	char *tok[2];
	int more, n = split(r->buf + m, tok, 2, &more);
	long version;
	if (n == 0)
		return gpt_errf(e, "%s:1: no version number after '%s' (expected '%s %d')", r->name,
		                SCHED_MAGIC, SCHED_MAGIC, SCHED_VERSION);
	if (n > 1 || parse_long(tok[0], 0, LONG_MAX, &version) != 0)
		return gpt_errf(e, "%s:1: malformed first line, expected '%s %d'", r->name, SCHED_MAGIC,
		                SCHED_VERSION);
	if (version != SCHED_VERSION)
		return gpt_errf(e,
		                "%s:1: schedule stream version %ld is not supported: this program "
		                "reads version %d (write the stream with this build's gpt-sched, or "
		                "read it with a newer gpt-*)",
		                r->name, version, SCHED_VERSION);
	return 0;
}

static int read_header(struct sched_reader *r, struct gpt_err *e)
{
	int rc = read_content_line(r, e);
	if (rc < 0)
		return -1;
	if (rc == 0)
		return gpt_errf(e, "%s: no header line after '%s %d' (column names such as "
		                   "'step lr_scale momentum window')",
		                r->name, SCHED_MAGIC, SCHED_VERSION);
	char *tok[NCOLS + 2];
	int more, n = split(r->buf, tok, NCOLS + 1, &more);
	int pos[NCOLS];
	for (int c = 0; c < NCOLS; c++)
		pos[c] = -1;
	for (int i = 0; i < n; i++) {
		int c;
		for (c = 0; c < NCOLS; c++)
			if (!strcmp(tok[i], col_name[c]))
				break;
		if (c == NCOLS) {
			int numeric = (tok[i][0] >= '0' && tok[i][0] <= '9') || tok[i][0] == '-';
			return gpt_errf(e,
			                "%s:%ld: header: unknown column '%.40s' (known: step window "
			                "momentum lr_scale lr_embed lr_head lr_scalar lr_muon eval ckpt "
			                "train)%s",
			                r->name, r->line, tok[i],
			                numeric ? "; is the header line missing?" : "");
		}
		if (pos[c] >= 0)
			return gpt_errf(e, "%s:%ld: header: duplicate column '%s' (fields %d and %d)",
			                r->name, r->line, col_name[c], pos[c] + 1, i + 1);
		pos[c] = i;
		r->col[i] = (enum col)c;
	}
	/* n <= NCOLS here: an (NCOLS+1)th name is unknown or a duplicate */
	r->ncol = n;
	static const enum col required[] = {COL_STEP, COL_WINDOW, COL_MOMENTUM};
	for (size_t i = 0; i < sizeof required / sizeof *required; i++)
		if (pos[required[i]] < 0)
			return gpt_errf(e, "%s:%ld: header: missing column '%s'", r->name, r->line,
			                col_name[required[i]]);
	int nabs = 0, first_abs = -1, first_missing = -1;
	for (int g = 0; g < SCHED_NGROUPS; g++) {
		if (pos[COL_LR_ABS0 + g] >= 0) {
			nabs++;
			if (first_abs < 0)
				first_abs = COL_LR_ABS0 + g;
		} else if (first_missing < 0) {
			first_missing = COL_LR_ABS0 + g;
		}
	}
	if (pos[COL_LR_SCALE] >= 0 && nabs)
		return gpt_errf(e,
		                "%s:%ld: header: both 'lr_scale' and absolute column '%s': give either "
		                "lr_scale or all of lr_embed lr_head lr_scalar lr_muon",
		                r->name, r->line, col_name[first_abs]);
	if (pos[COL_LR_SCALE] < 0 && nabs == 0)
		return gpt_errf(e,
		                "%s:%ld: header: missing learning rates: give column 'lr_scale' or all "
		                "of lr_embed lr_head lr_scalar lr_muon",
		                r->name, r->line);
	if (nabs && nabs < SCHED_NGROUPS)
		return gpt_errf(e,
		                "%s:%ld: header: missing column '%s' (absolute learning rates need all "
		                "of lr_embed lr_head lr_scalar lr_muon)",
		                r->name, r->line, col_name[first_missing]);
	r->absolute = nabs == SCHED_NGROUPS;
	return 0;
}

struct sched_reader *sched_open(FILE *fp, const char *name, const double base_lr[SCHED_NGROUPS],
                                struct gpt_err *e)
{
	struct sched_reader *r = xcalloc(1, sizeof *r);
	r->fp = fp;
	r->name = xstrdup(name ? name : "schedule");
	r->prev_step = -1;
	r->stop_step = -1;
	memcpy(r->base_lr, base_lr ? base_lr : sched_record_base_lr, sizeof r->base_lr);
	if (read_magic(r, e) != 0 || read_header(r, e) != 0) {
		sched_close(r);
		return NULL;
	}
	return r;
}

int sched_absolute(const struct sched_reader *r) { return r->absolute; }

static int parse_row(struct sched_reader *r, struct sched_row *row, struct gpt_err *e)
{
	char *tok[NCOLS + 2];
	int more, n = split(r->buf, tok, r->ncol, &more);
	if (n < r->ncol)
		return gpt_errf(e, "%s:%ld: column '%s': missing value (%d fields, the header names %d)",
		                r->name, r->line, col_name[r->col[n]], n, r->ncol);
	if (more)
		return gpt_errf(e,
		                "%s:%ld: extra field '%.40s' after column '%s' (the header names %d "
		                "columns)",
		                r->name, r->line, tok[r->ncol], col_name[r->col[r->ncol - 1]], r->ncol);
	double lr_scale = 0, lr_abs[SCHED_NGROUPS] = {0};
	long v;
	memset(row, 0, sizeof *row);
	row->train = 1;
	for (int i = 0; i < n; i++) {
		enum col c = r->col[i];
		double d;
		switch (c) {
		case COL_STEP:
			if (field_long(r, c, tok[i], 0, LONG_MAX - 1, "a step is >= 0", &v, e))
				return -1;
			row->step = v;
			break;
		case COL_WINDOW:
			if (field_long(r, c, tok[i], 1, INT_MAX, "a window is >= 1 block", &v, e))
				return -1;
			row->window = (int)v;
			break;
		case COL_EVAL:
		case COL_CKPT:
		case COL_TRAIN:
			if (strcmp(tok[i], "0") != 0 && strcmp(tok[i], "1") != 0)
				return field_err(r, c, e, "'%.40s' is not 0 or 1", tok[i]);
			*(c == COL_EVAL ? &row->eval : c == COL_CKPT ? &row->ckpt : &row->train) =
			    tok[i][0] == '1';
			break;
		case COL_MOMENTUM:
			if (field_double(r, c, tok[i], &d, e))
				return -1;
			if (!(d >= 0 && d <= 1))
				return field_err(r, c, e, "%.40s is outside [0, 1]", tok[i]);
			row->momentum = d;
			break;
		default: /* learning rates */
			if (field_double(r, c, tok[i], &d, e))
				return -1;
			if (d < 0)
				return field_err(r, c, e, "%.40s is negative", tok[i]);
			if (c == COL_LR_SCALE)
				lr_scale = d;
			else
				lr_abs[c - COL_LR_ABS0] = d;
			break;
		}
	}
	for (int g = 0; g < SCHED_NGROUPS; g++)
		row->lr[g] = r->absolute ? lr_abs[g] : r->base_lr[g] * lr_scale;
	if (r->prev_step >= 0 && row->step != r->prev_step + 1)
		return field_err(r, COL_STEP, e,
		                 "%ld after step %ld (each row's step is the previous one + 1)",
		                 row->step, r->prev_step);
	if (r->stop_step >= 0)
		return gpt_errf(e, "%s:%ld: a row after step %ld, which has train 0 (only the last "
		                   "row may have train 0)",
		                r->name, r->line, r->stop_step);
	return 0;
}

int sched_next(struct sched_reader *r, struct sched_row *row, struct gpt_err *e)
{
	if (r->failed)
		return gpt_errf(e, "%s: read after an error", r->name);
	int rc = read_content_line(r, e);
	if (rc == 0)
		return 0;
	if (rc < 0 || parse_row(r, row, e) != 0) {
		r->failed = 1;
		return -1;
	}
	r->prev_step = row->step;
	if (!row->train)
		r->stop_step = row->step;
	return 1;
}

void sched_close(struct sched_reader *r)
{
	if (!r)
		return;
	free(r->name);
	free(r);
}

/* ------------------------------------------------------------------------
 * The record's formulas
 */
/* Python's float floor division a // b (Objects/floatobject.c, float_divmod),
 * so that windows equal the record's int(((1-x)*128 + x*1856)//128) bit for
 * bit for every step count, not only where an integer form agrees. */
static double py_floordiv(double a, double b)
{
	double mod = fmod(a, b);
	double div = (a - mod) / b;
	if (mod != 0.0 && ((b < 0) != (mod < 0)))
		div -= 1.0;
	if (div == 0.0)
		return copysign(0.0, a / b);
	double fl = floor(div);
	if (div - fl > 0.5)
		fl += 1.0;
	return fl;
}

/* The record's window line from A blocks to B + 1/2 blocks, floored:
 * A=1, B=14 gives int(((1-x)*128 + x*1856)//128) with x = step/total. */
static long grow_window(long a, long b, long step, long total)
{
	double x = (double)step / (double)total;
	double v = (1.0 - x) * (double)(128 * a) + x * (double)(128 * b + 64);
	return (long)py_floordiv(v, 128.0);
}

int sched_record_window(long step, long total)
{
	return (int)grow_window(1, 14, step, total);
}

double sched_record_lr_scale(long step, long total, double cooldown_frac)
{
	double t = 1.0 - (double)step / (double)total;
	return t >= cooldown_frac ? 1.0 : t / cooldown_frac;
}

double sched_record_momentum(long step, long warmup)
{
	double frac = warmup > 0 ? (double)step / (double)warmup : 1.0;
	if (frac > 1.0)
		frac = 1.0;
	return 0.85 * (1.0 - frac) + 0.95 * frac;
}

/* ------------------------------------------------------------------------
 * Shapes
 *
 * Parameters by kind: const a=V; linear, cosine a=A b=B; ramp a=A b=B k=K;
 * warmup a=PEAK k=K; trapezoid a=F b=FLOOR k=K; grow a=A b=B (integers);
 * steps, points v[]/at[].
 */
static const struct {
	const char *name;
	enum sched_shape_kind kind;
	const char *usage;
	int nmin, nmax; /* number of ':' parameters; -1 for a V@S list */
} shape_kinds[] = {
	{"const", SHAPE_CONST, "const:V", 1, 1},
	{"linear", SHAPE_LINEAR, "linear:A:B", 2, 2},
	{"cosine", SHAPE_COSINE, "cosine:A:B", 2, 2},
	{"ramp", SHAPE_RAMP, "ramp:A:B:K", 3, 3},
	{"warmup", SHAPE_WARMUP, "warmup:K:PEAK", 2, 2},
	{"trapezoid", SHAPE_TRAPEZOID, "trapezoid:K:F[:FLOOR]", 2, 3},
	{"steps", SHAPE_STEPS, "steps:V@S,V@S,...", -1, -1},
	{"points", SHAPE_POINTS, "points:V@S,V@S,...", -1, -1},
	{"grow", SHAPE_GROW, "grow:A:B", 2, 2},
};
#define NKINDS (sizeof shape_kinds / sizeof *shape_kinds)

static int shape_err(const struct sched_shape *sh, struct gpt_err *e, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int shape_err(const struct sched_shape *sh, struct gpt_err *e, const char *fmt, ...)
{
	char what[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(what, sizeof what, fmt, ap);
	va_end(ap);
	return gpt_errf(e, "shape '%s': %s", sh->text, what);
}

static int shape_num(const struct sched_shape *sh, const char *what, const char *s, double *out,
                     struct gpt_err *e)
{
	if (parse_double(s, out) != 0)
		return shape_err(sh, e, "%s '%s' is not a finite number", what, s);
	return 0;
}

static int shape_steps(const struct sched_shape *sh, const char *what, const char *s, long *out,
                       struct gpt_err *e)
{
	if (parse_long(s, 0, SCHED_MAX_STEPS, out) != 0)
		return shape_err(sh, e, "%s '%s' is not a step count from 0 to %ld", what, s,
		                 SCHED_MAX_STEPS);
	return 0;
}

static int is_whole(double v) { return v == floor(v); }

/* "V@S,V@S,...": first S is 0, then strictly increasing. */
static int shape_list(struct sched_shape *sh, char *list, const char *usage, struct gpt_err *e)
{
	sh->npts = 0;
	for (char *item = list, *next; item; item = next) {
		next = strchr(item, ',');
		if (next)
			*next++ = 0;
		char *at = strchr(item, '@');
		if (!at)
			return shape_err(sh, e, "'%s' is not V@STEP (%s)", item, usage);
		*at++ = 0;
		if (sh->npts == SCHED_SHAPE_MAXPTS)
			return shape_err(sh, e, "more than %d points", SCHED_SHAPE_MAXPTS);
		int i = sh->npts;
		if (shape_num(sh, "value", item, &sh->v[i], e) ||
		    shape_steps(sh, "step", at, &sh->at[i], e))
			return -1;
		if (i == 0 && sh->at[0] != 0)
			return shape_err(sh, e, "the first point must be at step 0 (V@0), not %ld",
			                 sh->at[0]);
		if (i > 0 && sh->at[i] <= sh->at[i - 1])
			return shape_err(sh, e, "steps must increase (%ld after %ld)", sh->at[i],
			                 sh->at[i - 1]);
		sh->npts++;
	}
	return 0;
}

int sched_shape_parse(struct sched_shape *sh, const char *text, int integer, struct gpt_err *e)
{
	memset(sh, 0, sizeof *sh);
	if (strlen(text) >= sizeof sh->text) {
		snprintf(sh->text, sizeof sh->text, "%.40s...", text);
		return shape_err(sh, e, "longer than %zu characters", sizeof sh->text - 1);
	}
	strcpy(sh->text, text);
	char work[sizeof sh->text];
	strcpy(work, text);
	char *colon = strchr(work, ':');
	if (colon)
		*colon = 0;
	size_t kk;
	for (kk = 0; kk < NKINDS; kk++)
		if (!strcmp(work, shape_kinds[kk].name))
			break;
	if (kk == NKINDS)
		return shape_err(sh, e,
		                 "unknown shape '%s' (const, linear, cosine, ramp, warmup, trapezoid, "
		                 "steps, points, grow)",
		                 work);
	sh->kind = shape_kinds[kk].kind;
	const char *usage = shape_kinds[kk].usage;
	if (!colon || !colon[1])
		return shape_err(sh, e, "no parameters (%s)", usage);
	char *rest = colon + 1;
	if (integer && sh->kind != SHAPE_CONST && sh->kind != SHAPE_STEPS && sh->kind != SHAPE_GROW)
		return shape_err(sh, e,
		                 "'%s' gives fractional values; the window takes const:N, "
		                 "steps:N@S,... or grow:A:B (integers)",
		                 shape_kinds[kk].name);
	if (shape_kinds[kk].nmin < 0) {
		if (shape_list(sh, rest, usage, e))
			return -1;
	} else {
		char *p[3];
		int np = 0, nmin = shape_kinds[kk].nmin, nmax = shape_kinds[kk].nmax;
		for (char *s = rest; s; np++) {
			if (np < 3)
				p[np] = s;
			s = strchr(s, ':');
			if (s)
				*s++ = 0;
		}
		if (np < nmin || np > nmax) {
			char want[32];
			if (nmin == nmax)
				snprintf(want, sizeof want, "%d", nmin);
			else
				snprintf(want, sizeof want, "%d or %d", nmin, nmax);
			return shape_err(sh, e, "%s takes %s parameter%s, not %d (%s)",
			                 shape_kinds[kk].name, want, nmax == 1 ? "" : "s", np, usage);
		}
		switch (sh->kind) {
		case SHAPE_CONST:
			if (shape_num(sh, "V", p[0], &sh->a, e))
				return -1;
			break;
		case SHAPE_LINEAR:
		case SHAPE_COSINE:
			if (shape_num(sh, "A", p[0], &sh->a, e) || shape_num(sh, "B", p[1], &sh->b, e))
				return -1;
			break;
		case SHAPE_RAMP:
			if (shape_num(sh, "A", p[0], &sh->a, e) || shape_num(sh, "B", p[1], &sh->b, e) ||
			    shape_steps(sh, "K", p[2], &sh->k, e))
				return -1;
			break;
		case SHAPE_WARMUP:
			if (shape_steps(sh, "K", p[0], &sh->k, e) || shape_num(sh, "PEAK", p[1], &sh->a, e))
				return -1;
			break;
		case SHAPE_TRAPEZOID:
			if (shape_steps(sh, "K", p[0], &sh->k, e) || shape_num(sh, "F", p[1], &sh->a, e))
				return -1;
			if (!(sh->a >= 0 && sh->a <= 1))
				return shape_err(sh, e, "F (the cooldown fraction) must be in [0, 1]");
			if (np == 3 && shape_num(sh, "FLOOR", p[2], &sh->b, e))
				return -1;
			break;
		case SHAPE_GROW: {
			long a, b;
			if (parse_long(p[0], 0, SCHED_MAX_WINDOW, &a) != 0 ||
			    parse_long(p[1], 0, SCHED_MAX_WINDOW, &b) != 0)
				return shape_err(sh, e, "A and B must be integers from 0 to %d",
				                 SCHED_MAX_WINDOW);
			if (b < a)
				return shape_err(sh, e, "B (%ld) is less than A (%ld)", b, a);
			sh->a = (double)a;
			sh->b = (double)b;
			break;
		}
		default:
			break;
		}
	}
	if (integer) {
		int n = sh->kind == SHAPE_CONST ? 1 : sh->kind == SHAPE_STEPS ? sh->npts : 0;
		for (int i = 0; i < n; i++) {
			double v = sh->kind == SHAPE_CONST ? sh->a : sh->v[i];
			if (!is_whole(v) || v < 1 || v > SCHED_MAX_WINDOW)
				return shape_err(sh, e, "window %g is not an integer from 1 to %d", v,
				                 SCHED_MAX_WINDOW);
		}
	}
	return 0;
}

double sched_shape_value(const struct sched_shape *sh, long s, long total)
{
	double x = (double)s / (double)total, frac;
	int i;
	switch (sh->kind) {
	case SHAPE_CONST:
		return sh->a;
	case SHAPE_LINEAR:
		return sh->a * (1.0 - x) + sh->b * x;
	case SHAPE_COSINE:
		frac = (1.0 - cos(M_PI * x)) / 2.0;
		return sh->a * (1.0 - frac) + sh->b * frac;
	case SHAPE_RAMP:
		frac = sh->k > 0 ? (double)s / (double)sh->k : 1.0;
		if (frac > 1.0)
			frac = 1.0;
		return sh->a * (1.0 - frac) + sh->b * frac;
	case SHAPE_WARMUP:
		return s < sh->k ? sh->a * ((double)(s + 1) / (double)sh->k) : sh->a;
	case SHAPE_TRAPEZOID: {
		double warm = s < sh->k ? (double)(s + 1) / (double)sh->k : 1.0;
		double t = 1.0 - x, cool;
		if (t >= sh->a) {
			cool = 1.0;
		} else {
			double w = t / sh->a; /* the record: t / cooldown_frac */
			cool = w * 1.0 + (1.0 - w) * sh->b;
		}
		return warm < cool ? warm : cool;
	}
	case SHAPE_STEPS:
	case SHAPE_POINTS:
		for (i = sh->npts - 1; i > 0 && sh->at[i] > s; i--)
			;
		if (sh->kind == SHAPE_STEPS || i == sh->npts - 1)
			return sh->v[i];
		frac = (double)(s - sh->at[i]) / (double)(sh->at[i + 1] - sh->at[i]);
		return sh->v[i] * (1.0 - frac) + sh->v[i + 1] * frac;
	case SHAPE_GROW: {
		/* floor of the line from A to B + 1/2, as the record computes it */
		return (double)grow_window((long)sh->a, (long)sh->b, s, total);
	}
	}
	return NAN;
}

/* ------------------------------------------------------------------------
 * Generating
 */
int sched_spec_preset(struct sched_spec *sp, const char *name, long steps, long momentum_warmup,
                      struct gpt_err *e)
{
	memset(sp, 0, sizeof *sp);
	if (strcmp(name, SCHED_RECORD_PRESET) != 0)
		return gpt_errf(e, "unknown preset '%s' (known: %s)", name, SCHED_RECORD_PRESET);
	char mom[64];
	snprintf(mom, sizeof mom, "ramp:0.85:0.95:%ld", momentum_warmup >= 0 ? momentum_warmup : 300);
	sp->steps = steps > 0 ? steps : 1390;
	if (sched_shape_parse(&sp->lr, "trapezoid:0:0.4", 0, e) ||
	    sched_shape_parse(&sp->momentum, mom, 0, e) ||
	    sched_shape_parse(&sp->window, "grow:1:14", 1, e))
		return -1;
	sp->eval_every = 125;
	sp->ckpt_every = 0;
	sp->absolute = 0;
	memcpy(sp->base_lr, sched_record_base_lr, sizeof sp->base_lr);
	return 0;
}

void sched_spec_row(const struct sched_spec *sp, long s, struct sched_row *row, double *lr_scale)
{
	long n = sp->steps;
	double scale = sched_shape_value(&sp->lr, s, n);
	memset(row, 0, sizeof *row);
	row->step = s;
	for (int g = 0; g < SCHED_NGROUPS; g++)
		row->lr[g] = sp->base_lr[g] * scale;
	row->momentum = sched_shape_value(&sp->momentum, s, n);
	row->window = (int)sched_shape_value(&sp->window, s, n);
	row->eval = (sp->eval_every > 0 && s % sp->eval_every == 0) || s == n;
	row->ckpt = sp->ckpt_every > 0 && s > 0 && (s % sp->ckpt_every == 0 || s == n);
	row->train = s < n;
	if (lr_scale)
		*lr_scale = scale;
}

int sched_spec_check(const struct sched_spec *sp, struct gpt_err *e)
{
	if (sp->steps < 1 || sp->steps > SCHED_MAX_STEPS)
		return gpt_errf(e, "steps %ld is not from 1 to %ld", sp->steps, SCHED_MAX_STEPS);
	if (sp->eval_every < 0 || sp->ckpt_every < 0)
		return gpt_errf(e, "negative eval or checkpoint interval");
	for (int g = 0; g < SCHED_NGROUPS; g++)
		if (!(sp->base_lr[g] >= 0) || !isfinite(sp->base_lr[g]))
			return gpt_errf(e, "base learning rate %g is not a finite number >= 0",
			                sp->base_lr[g]);
	for (long s = 0; s <= sp->steps; s++) {
		struct sched_row row;
		double scale;
		sched_spec_row(sp, s, &row, &scale);
		if (!(scale >= 0))
			return gpt_errf(e, "lr_scale shape '%s': value %g at step %ld is negative",
			                sp->lr.text, scale, s);
		if (!(row.momentum >= 0 && row.momentum <= 1))
			return gpt_errf(e, "momentum shape '%s': value %g at step %ld is outside [0, 1]",
			                sp->momentum.text, row.momentum, s);
		double w = sched_shape_value(&sp->window, s, sp->steps);
		if (!(w >= 1 && w <= SCHED_MAX_WINDOW && is_whole(w)))
			return gpt_errf(e, "window shape '%s': value %g at step %ld is not an integer >= 1",
			                sp->window.text, w, s);
	}
	return 0;
}

char *sched_fmt(char *buf, double v)
{
	for (int p = 15; p <= 17; p++) {
		snprintf(buf, 32, "%.*g", p, v);
		if (strtod(buf, NULL) == v)
			break;
	}
	return buf;
}

int sched_write(FILE *fp, const struct sched_spec *sp)
{
	if (fprintf(fp, "%s %d\n", SCHED_MAGIC, SCHED_VERSION) < 0)
		return -1;
	if (fputs(sp->absolute ? "step lr_embed lr_head lr_scalar lr_muon momentum window eval ckpt train\n"
	                       : "step lr_scale momentum window eval ckpt train\n",
	          fp) < 0)
		return -1;
	for (long s = 0; s <= sp->steps; s++) {
		struct sched_row row;
		double scale;
		char b[6][32];
		sched_spec_row(sp, s, &row, &scale);
		int rc;
		if (sp->absolute)
			rc = fprintf(fp, "%ld %s %s %s %s %s %d %d %d %d\n", s, sched_fmt(b[0], row.lr[0]),
			             sched_fmt(b[1], row.lr[1]), sched_fmt(b[2], row.lr[2]),
			             sched_fmt(b[3], row.lr[3]), sched_fmt(b[4], row.momentum), row.window,
			             row.eval, row.ckpt, row.train);
		else
			rc = fprintf(fp, "%ld %s %s %d %d %d %d\n", s, sched_fmt(b[0], scale),
			             sched_fmt(b[4], row.momentum), row.window, row.eval, row.ckpt,
			             row.train);
		if (rc < 0)
			return -1;
	}
	return ferror(fp) ? -1 : 0;
}
