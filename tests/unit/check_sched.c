/* check_sched.c - schedule streams (lib/schedule.h): the record's formulas,
 * the preset at every step, shapes, the reader's malformed cases, lazy
 * reading from a pipe. */
#include <math.h>
#include <signal.h>

#include "check_common.h"
#include "schedule.h"

/* ------------------------------------------------------------------------
 * The spec's formulas, written out independently, as the record's Python
 * computes them (float64; no fused multiply-add in ISO C mode).
 */
static int py_window(long s, long total)
{
	double x = (double)s / (double)total;         /* x = step / 1390 */
	double v = (1.0 - x) * 128.0 + x * 1856.0;    /* (1 - x) * 128 + x * 1856 */
	return (int)floor(v / 128.0);                 /* int(... // 128) */
}

static double py_lr(long s, long total)
{
	double t = 1.0 - (double)s / (double)total;
	if (t >= 0.4)
		return 1.0;
	return t / 0.4;
}

static double py_momentum(long s)
{
	double frac = (double)s / 300.0;
	if (frac > 1.0)
		frac = 1.0;
	return (1.0 - frac) * 0.85 + frac * 0.95;
}

/* Write a spec to memory and open a reader on it. */
struct mem {
	char *buf;
	size_t len;
	FILE *fp;
};
static struct sched_reader *open_text(struct mem *m, const char *text, struct gpt_err *e)
{
	m->buf = xstrdup(text);
	m->len = strlen(text);
	m->fp = fmemopen(m->buf, m->len ? m->len : 1, "r");
	if (!m->len) { /* fmemopen of size 0 is an error: read from an empty file */
		fclose(m->fp);
		m->fp = fopen("/dev/null", "r");
	}
	ck_assert_ptr_nonnull(m->fp);
	return sched_open(m->fp, "t.sched", NULL, e);
}
static void mem_close(struct mem *m)
{
	fclose(m->fp);
	free(m->buf);
}

static char *spec_text(const struct sched_spec *sp)
{
	char *buf = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&buf, &len);
	ck_assert_ptr_nonnull(fp);
	ck_assert_int_eq(sched_write(fp, sp), 0);
	fclose(fp);
	return buf;
}

/* ------------------------------------------------------------------------
 * The record's formulas
 */
START_TEST(record_window_every_step)
{
	for (long s = 0; s <= 1390; s++)
		ck_assert_int_eq(sched_record_window(s, 1390), py_window(s, 1390));
	for (long s = 0; s <= 300; s++)
		ck_assert_int_eq(sched_record_window(s, 300), py_window(s, 300));
	/* 900 steps: Python's float formula gives one block less than the
	 * integer form 1 + floor(27s/1800) at s = 200, 400, 800 (values computed
	 * with CPython: int(((1-s/900)*128 + (s/900)*1856)//128)) */
	ck_assert_int_eq(sched_record_window(200, 900), 3);
	ck_assert_int_eq(sched_record_window(400, 900), 6);
	ck_assert_int_eq(sched_record_window(800, 900), 12);
	ck_assert_int_eq(sched_record_window(199, 900), 3);
	ck_assert_int_eq(sched_record_window(201, 900), 4);
	/* the table in spec 6 */
	static const struct { int w; long lo, hi; } table[] = {
		{1, 0, 102},      {2, 103, 205},    {3, 206, 308},    {4, 309, 411},
		{5, 412, 514},    {6, 515, 617},    {7, 618, 720},    {8, 721, 823},
		{9, 824, 926},    {10, 927, 1029},  {11, 1030, 1132}, {12, 1133, 1235},
		{13, 1236, 1338}, {14, 1339, 1390},
	};
	long covered = 0;
	for (size_t i = 0; i < sizeof table / sizeof *table; i++)
		for (long s = table[i].lo; s <= table[i].hi; s++, covered++)
			ck_assert_msg(sched_record_window(s, 1390) == table[i].w, "W(%ld) = %d, table %d",
			              s, sched_record_window(s, 1390), table[i].w);
	ck_assert_int_eq(covered, 1391);
	/* mean W over the 1390 training steps: 7.2568 */
	long sum = 0;
	for (long s = 0; s < 1390; s++)
		sum += sched_record_window(s, 1390);
	ck_assert_double_eq_tol((double)sum / 1390.0, 7.2568, 5e-5);
}
END_TEST

START_TEST(record_lr_every_step)
{
	for (long s = 0; s <= 1390; s++) {
		double f = sched_record_lr_scale(s, 1390, 0.4);
		ck_assert_msg(f == py_lr(s, 1390), "f(%ld) = %.17g, want %.17g", s, f, py_lr(s, 1390));
	}
	ck_assert(sched_record_lr_scale(834, 1390, 0.4) == 1.0); /* t == 0.4 exactly */
	ck_assert(sched_record_lr_scale(835, 1390, 0.4) < 1.0);
	ck_assert_double_eq_tol(sched_record_lr_scale(835, 1390, 0.4), 0.998201, 5e-7);
	ck_assert_double_eq_tol(sched_record_lr_scale(1389, 1390, 0.4), 1.0 / 556, 1e-15);
	ck_assert(sched_record_lr_scale(1390, 1390, 0.4) == 0.0);
	/* 835 steps stable, then 555 decaying */
	int stable = 0;
	for (long s = 0; s < 1390; s++)
		stable += sched_record_lr_scale(s, 1390, 0.4) == 1.0;
	ck_assert_int_eq(stable, 835);
}
END_TEST

START_TEST(record_momentum_every_step)
{
	for (long s = 0; s <= 1390; s++)
		ck_assert(sched_record_momentum(s, 300) == py_momentum(s));
	ck_assert(sched_record_momentum(0, 300) == 0.85);
	ck_assert(sched_record_momentum(300, 300) == 0.95);
	ck_assert(sched_record_momentum(1389, 300) == 0.95);
	ck_assert_double_eq_tol(sched_record_momentum(150, 300), 0.9, 1e-15);
	ck_assert(sched_record_momentum(5, 0) == 0.95);
}
END_TEST

/* The preset, written as text and read back, at every step 0..1390. */
START_TEST(record_preset_stream)
{
	struct sched_spec sp;
	struct gpt_err e;
	ck_assert_int_eq(sched_spec_preset(&sp, "record-2025-01-04", 0, -1, &e), 0);
	ck_assert_int_eq(sp.steps, 1390);
	ck_assert_int_eq(sched_spec_check(&sp, &e), 0);
	char *text = spec_text(&sp);
	ck_assert(!strncmp(text, "#gpt-sched 1\nstep lr_scale momentum window eval ckpt train\n"
	                         "0 1 0.85 1 1 0 1\n",
	                   strlen("#gpt-sched 1\nstep lr_scale momentum window eval ckpt train\n"
	                          "0 1 0.85 1 1 0 1\n")));
	ck_assert_ptr_nonnull(strstr(text, "\n1389 0.0017985611510790145 0.95 14 0 0 1\n"
	                                   "1390 0 0.95 14 1 0 0\n"));
	struct mem m;
	struct sched_reader *r = open_text(&m, text, &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	ck_assert_int_eq(sched_absolute(r), 0);
	struct sched_row row;
	long s = 0, evals = 0;
	while (sched_next(r, &row, &e) == 1) {
		ck_assert_int_eq(row.step, s);
		double f = py_lr(s, 1390);
		ck_assert(row.lr[SCHED_EMBED] == 0.6 * f);
		ck_assert(row.lr[SCHED_HEAD] == 0.008 * f);
		ck_assert(row.lr[SCHED_SCALAR] == 0.04 * f);
		ck_assert(row.lr[SCHED_MUON] == 0.05 * f);
		ck_assert(row.momentum == py_momentum(s));
		ck_assert_int_eq(row.window, py_window(s, 1390));
		ck_assert_int_eq(row.eval, s % 125 == 0 || s == 1390);
		ck_assert_int_eq(row.ckpt, 0);
		ck_assert_int_eq(row.train, s < 1390);
		evals += row.eval;
		s++;
	}
	ck_assert_int_eq(s, 1391);
	ck_assert_int_eq(evals, 13); /* 0, 125, ..., 1375 and 1390 */
	ck_assert_int_eq(sched_next(r, &row, &e), 0);
	sched_close(r);
	mem_close(&m);
	free(text);
}
END_TEST

/* --steps 300 --eval-every 50: the compressed schedule; and --absolute. */
START_TEST(preset_rescaled)
{
	struct sched_spec sp;
	struct gpt_err e;
	ck_assert_int_eq(sched_spec_preset(&sp, "record-2025-01-04", 300, -1, &e), 0);
	sp.eval_every = 50;
	sp.absolute = 1;
	ck_assert_int_eq(sched_spec_check(&sp, &e), 0);
	char *text = spec_text(&sp);
	ck_assert(!strncmp(text, "#gpt-sched 1\nstep lr_embed lr_head lr_scalar lr_muon momentum "
	                         "window eval ckpt train\n", 80));
	struct mem m;
	struct sched_reader *r = open_text(&m, text, &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	ck_assert_int_eq(sched_absolute(r), 1);
	struct sched_row row;
	long s = 0, evals = 0, stable = 0;
	while (sched_next(r, &row, &e) == 1) {
		double f = py_lr(s, 300);
		for (int g = 0; g < SCHED_NGROUPS; g++)
			ck_assert(row.lr[g] == sched_record_base_lr[g] * f);
		stable += s < 300 && f == 1.0;
		ck_assert(row.momentum == py_momentum(s)); /* the warmup stays 300 steps */
		ck_assert_int_eq(row.window, py_window(s, 300));
		ck_assert_int_eq(row.eval, s % 50 == 0 || s == 300);
		ck_assert_int_eq(row.train, s < 300);
		evals += row.eval;
		s++;
	}
	ck_assert_int_eq(s, 301);
	ck_assert_int_eq(evals, 7);
	ck_assert_int_eq(stable, 181); /* steps 0..180: t >= 0.4 */
	ck_assert_int_eq(py_window(300, 300), 14);
	sched_close(r);
	mem_close(&m);
	free(text);

	/* the momentum warmup can be changed, and checkpoints added */
	ck_assert_int_eq(sched_spec_preset(&sp, "record-2025-01-04", 100, 10, &e), 0);
	sp.ckpt_every = 30;
	struct sched_row rr;
	sched_spec_row(&sp, 10, &rr, NULL);
	ck_assert(rr.momentum == 0.95);
	sched_spec_row(&sp, 5, &rr, NULL);
	ck_assert_double_eq_tol(rr.momentum, 0.9, 1e-15);
	long ckpts[8], n = 0;
	for (long k = 0; k <= 100; k++) {
		sched_spec_row(&sp, k, &rr, NULL);
		if (rr.ckpt)
			ckpts[n++] = k;
	}
	ck_assert_int_eq(n, 4);
	ck_assert(ckpts[0] == 30 && ckpts[1] == 60 && ckpts[2] == 90 && ckpts[3] == 100);
	ck_assert_int_eq(sched_spec_preset(&sp, "record-2024", 0, -1, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "unknown preset 'record-2024'"));
}
END_TEST

/* ------------------------------------------------------------------------
 * Reading: good streams
 */
START_TEST(reader_good)
{
	struct gpt_err e;
	struct mem m;
	struct sched_row row;
	/* any column order, comments, blank lines, CRLF, a resumed start */
	struct sched_reader *r = open_text(&m,
	                                   "#gpt-sched 1\n"
	                                   "# written by hand\n"
	                                   "\n"
	                                   "window train momentum step lr_scale ckpt\r\n"
	                                   "3 1 0.9 500 0.5 1\r\n"
	                                   "   # a comment between rows\n"
	                                   "\t4\t0  0.95   501 0.25 0\n",
	                                   &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	ck_assert_int_eq(sched_next(r, &row, &e), 1);
	ck_assert_int_eq(row.step, 500);
	ck_assert_int_eq(row.window, 3);
	ck_assert(row.momentum == 0.9);
	ck_assert(row.lr[SCHED_EMBED] == 0.6 * 0.5 && row.lr[SCHED_MUON] == 0.05 * 0.5);
	ck_assert(row.eval == 0 && row.ckpt == 1 && row.train == 1);
	ck_assert_int_eq(sched_next(r, &row, &e), 1);
	ck_assert(row.step == 501 && row.window == 4 && row.train == 0 && row.ckpt == 0);
	ck_assert_int_eq(sched_next(r, &row, &e), 0);
	sched_close(r);
	mem_close(&m);

	/* absolute rates; another base_lr for lr_scale streams */
	r = open_text(&m,
	              "#gpt-sched 1\nstep lr_muon lr_head lr_scalar lr_embed momentum window eval\n"
	              "0 0.1 0.2 0.3 0.4 0 1 1\n1 0 0 0 0 1 2 0\n",
	              &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	ck_assert_int_eq(sched_absolute(r), 1);
	ck_assert_int_eq(sched_next(r, &row, &e), 1);
	ck_assert(row.lr[SCHED_MUON] == 0.1 && row.lr[SCHED_HEAD] == 0.2 &&
	          row.lr[SCHED_SCALAR] == 0.3 && row.lr[SCHED_EMBED] == 0.4);
	ck_assert(row.eval == 1 && row.ckpt == 0 && row.train == 1);
	ck_assert_int_eq(sched_next(r, &row, &e), 1);
	ck_assert(row.momentum == 1.0 && row.lr[SCHED_EMBED] == 0.0);
	ck_assert_int_eq(sched_next(r, &row, &e), 0);
	sched_close(r);
	mem_close(&m);

	double base[4] = {1, 2, 3, 4};
	static char text3[] = "#gpt-sched   1  \nstep lr_scale momentum window\n7 0.5 0 1\n";
	FILE *fp = fmemopen(text3, strlen(text3), "r");
	r = sched_open(fp, "x", base, &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	ck_assert_int_eq(sched_next(r, &row, &e), 1);
	ck_assert(row.lr[0] == 0.5 && row.lr[1] == 1 && row.lr[2] == 1.5 && row.lr[3] == 2);
	ck_assert_int_eq(sched_next(r, &row, &e), 0);
	sched_close(r);
	fclose(fp);

	/* a header and no rows is a valid (empty) stream for the reader */
	r = open_text(&m, "#gpt-sched 1\nstep lr_scale momentum window\n# nothing yet\n", &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	ck_assert_int_eq(sched_next(r, &row, &e), 0);
	sched_close(r);
	mem_close(&m);
}
END_TEST

/* ------------------------------------------------------------------------
 * Reading: every malformed case names the line and the column
 */
#define HDR "#gpt-sched 1\nstep lr_scale momentum window eval ckpt train\n"

/* Open text, read rows until an error; the message must contain every
 * given fragment. at_open: the error comes from sched_open. */
static void expect_error(const char *text, const char *frag1, const char *frag2,
                         const char *frag3)
{
	struct gpt_err e = {{0}};
	struct mem m;
	struct sched_reader *r = open_text(&m, text, &e);
	int rc = 0;
	if (r) {
		struct sched_row row;
		int guard = 0;
		while ((rc = sched_next(r, &row, &e)) == 1 && guard++ < 100)
			;
		ck_assert_msg(rc == -1, "no error for: %s", text);
		/* the reader stays failed */
		ck_assert_int_eq(sched_next(r, &row, NULL), -1);
		sched_close(r);
	}
	const char *frags[3] = {frag1, frag2, frag3};
	for (int i = 0; i < 3; i++)
		if (frags[i])
			ck_assert_msg(strstr(e.msg, frags[i]) != NULL, "message '%s' lacks '%s' (input %s)",
			              e.msg, frags[i], text);
	mem_close(&m);
}

START_TEST(reader_bad_start)
{
	expect_error("", "t.sched: empty", "#gpt-sched 1", NULL);
	expect_error("step lr_scale momentum window\n0 1 0.85 1\n", "t.sched:1:",
	             "not a schedule stream", "expected '#gpt-sched 1'");
	expect_error("#gpt-schedule 1\n", "t.sched:1:", "not a schedule stream", NULL);
	expect_error("#gpt-sched 2\nstep lr_scale momentum window\n", "t.sched:1:", "version 2",
	             "not supported");
	expect_error("#gpt-sched 0\n", "t.sched:1:", "version 0", "reads version 1");
	expect_error("#gpt-sched\n", "t.sched:1:", "no version", NULL);
	expect_error("#gpt-sched 1 x\n", "t.sched:1:", "malformed first line", NULL);
	expect_error("#gpt-sched one\n", "t.sched:1:", "malformed first line", NULL);
	expect_error("#gpt-sched 1\n", "t.sched: no header line", NULL, NULL);
	expect_error("#gpt-sched 1\n# only comments\n\n", "no header line", NULL, NULL);
	expect_error("#gpt-sched 1", "t.sched:1:", "no newline", NULL);
}
END_TEST

START_TEST(reader_bad_header)
{
	expect_error("#gpt-sched 1\nstep lr_scale momentum\n", "t.sched:2:", "missing column 'window'",
	             NULL);
	expect_error("#gpt-sched 1\nlr_scale momentum window\n", "t.sched:2:",
	             "missing column 'step'", NULL);
	expect_error("#gpt-sched 1\nstep lr_scale window\n", "t.sched:2:", "missing column 'momentum'",
	             NULL);
	expect_error("#gpt-sched 1\n# c\nstep lr_scale momentum window warmup\n", "t.sched:3:",
	             "unknown column 'warmup'", NULL);
	expect_error("#gpt-sched 1\nstep lr_scale momentum window step\n", "t.sched:2:",
	             "duplicate column 'step'", "fields 1 and 5");
	expect_error("#gpt-sched 1\nstep lr_scale momentum window eval eval\n", "t.sched:2:",
	             "duplicate column 'eval'", NULL);
	expect_error("#gpt-sched 1\nstep lr_embed lr_head lr_muon momentum window\n", "t.sched:2:",
	             "missing column 'lr_scalar'", "all of lr_embed");
	expect_error("#gpt-sched 1\nstep lr_scale lr_head momentum window\n", "t.sched:2:",
	             "both 'lr_scale' and absolute column 'lr_head'", NULL);
	expect_error("#gpt-sched 1\nstep momentum window\n", "t.sched:2:",
	             "missing learning rates", NULL);
	expect_error("#gpt-sched 1\n0 1 0.85 1 1 0 1\n", "t.sched:2:", "unknown column '0'",
	             "header line missing");
	/* twelve names: more than there are columns */
	expect_error("#gpt-sched 1\nstep lr_scale momentum window eval ckpt train lr_embed lr_head "
	             "lr_scalar lr_muon step\n",
	             "t.sched:2:", "duplicate column 'step'", NULL);
}
END_TEST

START_TEST(reader_bad_rows)
{
	/* line numbers: the magic is 1, the header 2, the first row 3 */
	expect_error(HDR "0 abc 0.85 1 1 0 1\n", "t.sched:3:", "column 'lr_scale'",
	             "'abc' is not a decimal number");
	expect_error(HDR "0 1 nan 1 1 0 1\n", "t.sched:3:", "column 'momentum'", "not a finite");
	expect_error(HDR "0 inf 0.85 1 1 0 1\n", "t.sched:3:", "column 'lr_scale'", "not a finite");
	expect_error(HDR "0 -Infinity 0.85 1 1 0 1\n", "t.sched:3:", "column 'lr_scale'",
	             "not a finite");
	expect_error(HDR "0 1e999 0.85 1 1 0 1\n", "t.sched:3:", "column 'lr_scale'", "out of range");
	expect_error(HDR "0 0x1p-3 0.85 1 1 0 1\n", "t.sched:3:", "column 'lr_scale'",
	             "not a decimal number");
	expect_error(HDR "0 1. 0.85 1 1 0 1\n1 1 0.85e 1 1 0 1\n", "t.sched:4:", "column 'momentum'",
	             "'0.85e'");
	expect_error(HDR "0 -0.5 0.85 1 1 0 1\n", "t.sched:3:", "column 'lr_scale'", "negative");
	expect_error(HDR "0 1 1.5 1 1 0 1\n", "t.sched:3:", "column 'momentum'", "outside [0, 1]");
	expect_error(HDR "0 1 -0.1 1 1 0 1\n", "t.sched:3:", "column 'momentum'", "outside [0, 1]");
	expect_error(HDR "0 1 0.85 1 1 0\n", "t.sched:3:", "column 'train'", "missing value");
	expect_error(HDR "0 1 0.85\n", "t.sched:3:", "column 'window'", "missing value");
	expect_error(HDR "0 1 0.85 1 1 0 1 7\n", "t.sched:3:", "extra field '7'",
	             "after column 'train'");
	expect_error(HDR "0 1 0.85 1 1 0 1\n1 1 0.85 1 0 0 1\n3 1 0.85 1 0 0 1\n", "t.sched:5:",
	             "column 'step'", "3 after step 1");
	expect_error(HDR "5 1 0.85 1 1 0 1\n5 1 0.85 1 1 0 1\n", "t.sched:4:", "column 'step'",
	             "5 after step 5");
	expect_error(HDR "1 1 0.85 1 1 0 1\n0 1 0.85 1 1 0 1\n", "t.sched:4:", "column 'step'", NULL);
	expect_error(HDR "-1 1 0.85 1 1 0 1\n", "t.sched:3:", "column 'step'", "out of range");
	expect_error(HDR "1.5 1 0.85 1 1 0 1\n", "t.sched:3:", "column 'step'", "not an integer");
	expect_error(HDR "1e3 1 0.85 1 1 0 1\n", "t.sched:3:", "column 'step'", "not an integer");
	expect_error(HDR "99999999999999999999 1 0.85 1 1 0 1\n", "t.sched:3:", "column 'step'",
	             "out of range");
	expect_error(HDR "0 1 0.85 2.5 1 0 1\n", "t.sched:3:", "column 'window'", "not an integer");
	expect_error(HDR "0 1 0.85 0 1 0 1\n", "t.sched:3:", "column 'window'", "out of range");
	expect_error(HDR "0 1 0.85 x 1 0 1\n", "t.sched:3:", "column 'window'", "not a number");
	expect_error(HDR "0 1 0.85 nan 1 0 1\n", "t.sched:3:", "column 'window'", "not a finite");
	expect_error(HDR "0 1 0.85 1 2 0 1\n", "t.sched:3:", "column 'eval'", "not 0 or 1");
	expect_error(HDR "0 1 0.85 1 1 -1 1\n", "t.sched:3:", "column 'ckpt'", "not 0 or 1");
	expect_error(HDR "0 1 0.85 1 1 0 0.5\n", "t.sched:3:", "column 'train'", "not 0 or 1");
	/* comment and blank lines still count */
	expect_error(HDR "0 1 0.85 1 1 0 1\n# c\n\n1 1 0.85 1 0 0 y\n", "t.sched:6:", "column 'train'",
	             NULL);
	/* only the last row may have train 0 */
	expect_error(HDR "0 1 0.85 1 1 0 0\n1 1 0.85 1 0 0 1\n", "t.sched:4:", "train 0", NULL);
	/* a truncated stream */
	expect_error(HDR "0 1 0.85 1 1 0 1\n1 1 0.8", "t.sched:4:", "no newline", NULL);
	/* a NUL byte; an overlong row (an overlong comment is fine) */
	{
		char text[128];
		size_t n = strlen(HDR);
		memcpy(text, HDR "0 1 0.85 1 1 0 1\n", n + 17);
		text[n + 2] = 0;
		struct gpt_err e;
		FILE *fp = fmemopen(text, n + 17, "r");
		struct sched_reader *r = sched_open(fp, "t.sched", NULL, &e);
		ck_assert_ptr_nonnull(r);
		struct sched_row row;
		ck_assert_int_eq(sched_next(r, &row, &e), -1);
		ck_assert_ptr_nonnull(strstr(e.msg, "t.sched:3: the line contains a NUL byte"));
		sched_close(r);
		fclose(fp);
	}
	{
		size_t n = 3 * SCHED_LINE_MAX;
		char *text = xmalloc(2 * n + 256);
		strcpy(text, HDR "#");
		size_t k = strlen(text);
		memset(text + k, 'c', n);
		strcpy(text + k + n, "\n0 1 0.85 1 1 0 1\n1");
		k = strlen(text);
		memset(text + k, '0', n);
		strcpy(text + k + n, " 1 0.85 1 1 0 1\n");
		expect_error(text, "t.sched:5:", "longer than 4096 bytes", NULL);
		free(text);
	}
}
END_TEST

/* ------------------------------------------------------------------------
 * Lazy reading: row s comes back before row s+1 is written.
 */
static void put(int fd, const char *s)
{
	size_t n = strlen(s);
	ck_assert_int_eq(write(fd, s, n), (ssize_t)n);
}

START_TEST(reader_lazy_pipe)
{
	int p[2];
	ck_assert_int_eq(pipe(p), 0);
	FILE *in = fdopen(p[0], "r");
	ck_assert_ptr_nonnull(in);
	alarm(10); /* a read that blocks fails the test instead of hanging */
	struct gpt_err e;
	struct sched_row row;
	put(p[1], "#gpt-sched 1\nstep lr_scale momentum window eval ckpt train\n");
	struct sched_reader *r = sched_open(in, "pipe", NULL, &e);
	ck_assert_msg(r != NULL, "%s", e.msg);
	put(p[1], "0 1 0.85 1 1 0 1\n");
	ck_assert_int_eq(sched_next(r, &row, &e), 1);
	ck_assert_int_eq(row.step, 0);
	ck_assert(row.eval == 1);
	/* a row written in two pieces is read once complete */
	put(p[1], "# between\n1 0.5 0.9");
	put(p[1], " 2 0 1 1\n");
	ck_assert_int_eq(sched_next(r, &row, &e), 1);
	ck_assert(row.step == 1 && row.window == 2 && row.ckpt == 1 && row.momentum == 0.9);
	put(p[1], "2 0 0.95 2 1 0 0\n");
	ck_assert_int_eq(sched_next(r, &row, &e), 1);
	ck_assert(row.step == 2 && row.train == 0);
	close(p[1]);
	ck_assert_int_eq(sched_next(r, &row, &e), 0);
	alarm(0);
	sched_close(r);
	fclose(in);
}
END_TEST

/* ------------------------------------------------------------------------
 * Shapes
 */
static double shape(const char *text, long s, long n)
{
	struct sched_shape sh;
	struct gpt_err e;
	int rc = sched_shape_parse(&sh, text, 0, &e);
	ck_assert_msg(rc == 0, "%s: %s", text, e.msg);
	return sched_shape_value(&sh, s, n);
}

START_TEST(shapes_values)
{
	ck_assert(shape("const:0.5", 7, 10) == 0.5);
	ck_assert(shape("linear:1:0", 0, 10) == 1.0);
	ck_assert(shape("linear:1:0", 10, 10) == 0.0);
	ck_assert_double_eq_tol(shape("linear:1:0", 3, 10), 0.7, 1e-15);
	ck_assert(shape("cosine:1:0.1", 0, 100) == 1.0);
	ck_assert(shape("cosine:1:0.1", 100, 100) == 0.1);
	ck_assert_double_eq_tol(shape("cosine:1:0.1", 50, 100), 0.55, 1e-15);
	ck_assert(shape("ramp:0.85:0.95:300", 0, 1390) == 0.85);
	for (long s = 0; s <= 1390; s++)
		ck_assert(shape("ramp:0.85:0.95:300", s, 1390) == py_momentum(s));
	ck_assert(shape("ramp:0.5:0.9:0", 0, 10) == 0.9);
	ck_assert_double_eq_tol(shape("warmup:4:2", 0, 10), 0.5, 1e-15); /* (s+1)/K */
	ck_assert(shape("warmup:4:2", 3, 10) == 2.0);
	ck_assert(shape("warmup:4:2", 9, 10) == 2.0);
	ck_assert(shape("warmup:0:2", 0, 10) == 2.0);
	for (long s = 0; s <= 1390; s++)
		ck_assert(shape("trapezoid:0:0.4", s, 1390) == py_lr(s, 1390));
	ck_assert_double_eq_tol(shape("trapezoid:10:0.5", 0, 100), 0.1, 1e-15);
	ck_assert(shape("trapezoid:10:0.5", 9, 100) == 1.0);
	ck_assert(shape("trapezoid:10:0.5", 50, 100) == 1.0);
	ck_assert_double_eq_tol(shape("trapezoid:10:0.5", 75, 100), 0.5, 1e-15);
	/* the next record's floor: w + (1 - w) * 0.1 */
	ck_assert_double_eq_tol(shape("trapezoid:0:0.4:0.1", 1390, 1390), 0.1, 1e-15);
	ck_assert_double_eq_tol(shape("trapezoid:0:0.5:0.1", 75, 100), 0.55, 1e-15);
	ck_assert(shape("trapezoid:0:0", 99, 100) == 1.0);
	ck_assert(shape("steps:3@0,2@10,1@20", 0, 30) == 3);
	ck_assert(shape("steps:3@0,2@10,1@20", 9, 30) == 3);
	ck_assert(shape("steps:3@0,2@10,1@20", 10, 30) == 2);
	ck_assert(shape("steps:3@0,2@10,1@20", 30, 30) == 1);
	ck_assert(shape("points:0@0,1@10,0.5@20", 0, 30) == 0.0);
	ck_assert_double_eq_tol(shape("points:0@0,1@10,0.5@20", 5, 30), 0.5, 1e-15);
	ck_assert(shape("points:0@0,1@10,0.5@20", 10, 30) == 1.0);
	ck_assert_double_eq_tol(shape("points:0@0,1@10,0.5@20", 15, 30), 0.75, 1e-15);
	ck_assert(shape("points:0@0,1@10,0.5@20", 25, 30) == 0.5);
	for (long s = 0; s <= 1390; s++)
		ck_assert(shape("grow:1:14", s, 1390) == py_window(s, 1390));
	for (long s = 0; s <= 300; s++)
		ck_assert(shape("grow:1:14", s, 300) == sched_record_window(s, 300));
	ck_assert(shape("grow:4:4", 50, 100) == 4);
	ck_assert(shape("grow:2:3", 100, 100) == 3);
	ck_assert(shape("grow:2:3", 66, 100) == 2); /* 2 + floor(3*66/200) */
	ck_assert(shape("grow:2:3", 67, 100) == 3);
}
END_TEST

static void shape_bad(const char *text, int integer, const char *frag)
{
	struct sched_shape sh;
	struct gpt_err e = {{0}};
	ck_assert_msg(sched_shape_parse(&sh, text, integer, &e) == -1, "accepted '%s'", text);
	ck_assert_msg(strstr(e.msg, frag) != NULL, "'%s': message '%s' lacks '%s'", text, e.msg, frag);
}

START_TEST(shapes_errors)
{
	shape_bad("", 0, "unknown shape ''");
	shape_bad("exp:1:2", 0, "unknown shape 'exp'");
	shape_bad("const", 0, "no parameters (const:V)");
	shape_bad("const:", 0, "no parameters");
	shape_bad("const:1:2", 0, "const takes 1 parameter, not 2");
	shape_bad("linear:1", 0, "linear takes 2 parameters, not 1 (linear:A:B)");
	shape_bad("ramp:1:2:3:4:5", 0, "ramp takes 3 parameters, not 5");
	shape_bad("trapezoid:1", 0, "trapezoid takes 2 or 3 parameters");
	shape_bad("linear:1:x", 0, "B 'x' is not a finite number");
	shape_bad("const:nan", 0, "V 'nan' is not a finite number");
	shape_bad("const:inf", 0, "not a finite number");
	shape_bad("ramp:0.85:0.95:-3", 0, "K '-3' is not a step count");
	shape_bad("warmup:1.5:1", 0, "K '1.5' is not a step count");
	shape_bad("trapezoid:0:1.5", 0, "F (the cooldown fraction) must be in [0, 1]");
	shape_bad("steps:1@5,2@10", 0, "the first point must be at step 0");
	shape_bad("steps:1@0,2@10,3@10", 0, "steps must increase (10 after 10)");
	shape_bad("points:1@0,2", 0, "'2' is not V@STEP");
	shape_bad("steps:1@0,x@3", 0, "value 'x'");
	shape_bad("steps:1@0,2@x", 0, "step 'x'");
	shape_bad("grow:3:2", 0, "B (2) is less than A (3)");
	shape_bad("grow:1.5:2", 1, "integers");
	shape_bad("linear:1:14", 1, "'linear' gives fractional values");
	shape_bad("cosine:1:14", 1, "fractional");
	shape_bad("const:2.5", 1, "window 2.5 is not an integer");
	shape_bad("const:0", 1, "window 0 is not an integer from 1");
	shape_bad("steps:1@0,2.5@10", 1, "window 2.5");
	char long_text[1100];
	memset(long_text, 'a', sizeof long_text - 1);
	long_text[sizeof long_text - 1] = 0;
	shape_bad(long_text, 0, "longer than 1023 characters");
	char many[1024] = "steps:1@0";
	for (int i = 1; i < SCHED_SHAPE_MAXPTS; i++)
		snprintf(many + strlen(many), sizeof many - strlen(many), ",1@%d", i);
	ck_assert_int_eq(shape(many, 63, 100), 1.0); /* 64 points are fine */
	strcat(many, ",2@64");
	shape_bad(many, 0, "more than 64 points");
}
END_TEST

START_TEST(spec_check_values)
{
	struct sched_spec sp;
	struct gpt_err e;
	ck_assert_int_eq(sched_spec_preset(&sp, "record-2025-01-04", 100, -1, &e), 0);
	ck_assert_int_eq(sched_shape_parse(&sp.momentum, "linear:0.9:1.1", 0, &e), 0);
	ck_assert_int_eq(sched_spec_check(&sp, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "momentum shape 'linear:0.9:1.1'"));
	ck_assert_ptr_nonnull(strstr(e.msg, "at step 51 is outside [0, 1]"));
	ck_assert_int_eq(sched_spec_preset(&sp, "record-2025-01-04", 100, -1, &e), 0);
	ck_assert_int_eq(sched_shape_parse(&sp.lr, "cosine:1:-0.5", 0, &e), 0);
	ck_assert_int_eq(sched_spec_check(&sp, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "lr_scale shape 'cosine:1:-0.5'"));
	ck_assert_ptr_nonnull(strstr(e.msg, "is negative"));
	ck_assert_int_eq(sched_spec_preset(&sp, "record-2025-01-04", 100, -1, &e), 0);
	sp.base_lr[2] = -1;
	ck_assert_int_eq(sched_spec_check(&sp, &e), -1);
	ck_assert_int_eq(sched_spec_preset(&sp, "record-2025-01-04", 100, -1, &e), 0);
	ck_assert_int_eq(sched_shape_parse(&sp.window, "grow:0:3", 1, &e), 0);
	ck_assert_int_eq(sched_spec_check(&sp, &e), -1);
	ck_assert_ptr_nonnull(strstr(e.msg, "window shape 'grow:0:3': value 0 at step 0"));
}
END_TEST

/* sched_fmt: shortest text that reads back exactly. */
START_TEST(fmt_round_trip)
{
	char buf[32];
	ck_assert_str_eq(sched_fmt(buf, 1.0), "1");
	ck_assert_str_eq(sched_fmt(buf, 0.85), "0.85");
	ck_assert_str_eq(sched_fmt(buf, 0.95), "0.95");
	ck_assert_str_eq(sched_fmt(buf, 0.0), "0");
	ck_assert_str_eq(sched_fmt(buf, 0.1 + 0.2), "0.30000000000000004");
	ck_assert_str_eq(sched_fmt(buf, 1.0 / 556), "0.0017985611510791368");
	uint64_t x = 88172645463325252ull;
	for (int i = 0; i < 100000; i++) {
		x ^= x << 13, x ^= x >> 7, x ^= x << 17;
		double v;
		memcpy(&v, &x, sizeof v);
		if (!isfinite(v))
			continue;
		sched_fmt(buf, v);
		ck_assert_msg(strtod(buf, NULL) == v, "%s", buf);
		ck_assert(strlen(buf) < 32);
	}
}
END_TEST

static Suite *sched_suite(void)
{
	Suite *s = suite_create("sched");
	TCase *tc = tcase_create("record");
	tcase_add_test(tc, record_window_every_step);
	tcase_add_test(tc, record_lr_every_step);
	tcase_add_test(tc, record_momentum_every_step);
	tcase_add_test(tc, record_preset_stream);
	tcase_add_test(tc, preset_rescaled);
	suite_add_tcase(s, tc);
	tc = tcase_create("reader");
	tcase_add_test(tc, reader_good);
	tcase_add_test(tc, reader_bad_start);
	tcase_add_test(tc, reader_bad_header);
	tcase_add_test(tc, reader_bad_rows);
	tcase_add_test(tc, reader_lazy_pipe);
	suite_add_tcase(s, tc);
	tc = tcase_create("shapes");
	tcase_add_test(tc, shapes_values);
	tcase_add_test(tc, shapes_errors);
	tcase_add_test(tc, spec_check_values);
	tcase_add_test(tc, fmt_round_trip);
	suite_add_tcase(s, tc);
	return s;
}

CHECK_MAIN(sched_suite)
