/*
 * gpt-sched - write a schedule stream (from a preset or per-column shapes)
 * or check one. See gpt-sched(1) and, for the format, gpt-sched(5).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "schedule.h"
#include "util.h"

static const struct cli_text text = {
	"gpt-sched --preset NAME [--steps N] [OPTION]...\n"
	"       gpt-sched --steps N --lr SHAPE --momentum SHAPE --window SHAPE [OPTION]...\n"
	"       gpt-sched --check FILE",
	"Write a schedule stream (one text line per training step), or check one.\n"
	"\n"
	"  -p, --preset NAME        start from a preset: " SCHED_RECORD_PRESET "\n"
	"  -n, --steps N            N training steps: rows 0..N, row N evaluates only\n"
	"      --lr SHAPE           lr_scale, the multiplier of the base learning rates\n"
	"      --momentum SHAPE     Muon momentum, in [0, 1]\n"
	"      --window SHAPE       attention window in 128-token blocks (const, steps, grow)\n"
	"      --momentum-warmup K  the preset's momentum warmup, in steps (default 300)\n"
	"  -e, --eval-every K       evaluate at steps 0, K, 2K, ... and at N\n"
	"                           (preset: 125; default 0: at N only)\n"
	"      --ckpt-every K       checkpoint at steps K, 2K, ... and at N (default 0: none)\n"
	"      --absolute           write lr_embed lr_head lr_scalar lr_muon, not lr_scale\n"
	"      --base-lr E,H,S,M    base rates for --absolute (default 0.6,0.008,0.04,0.05)\n"
	"  -o, --output FILE        write FILE atomically (default '-': standard output)\n"
	"  -c, --check FILE         validate a stream ('-': standard input) and print a\n"
	"                           one-line JSON summary\n"
	"  -q, --quiet              -v, --verbose    -h, --help    -V, --version\n"
	"\n"
	"Shapes, at step s of N (x = s/N):\n"
	"  const:V  linear:A:B  cosine:A:B  ramp:A:B:K  warmup:K:PEAK\n"
	"  trapezoid:K:F[:FLOOR]  steps:V@S,V@S,...  points:V@S,V@S,...  grow:A:B\n"
	"See gpt-sched(1) for the shapes and gpt-sched(5) for the format.\n",
};

enum {
	OPT_LR = 256, OPT_MOMENTUM, OPT_WINDOW, OPT_MOMENTUM_WARMUP, OPT_CKPT_EVERY, OPT_ABSOLUTE,
	OPT_BASE_LR,
};

static const struct option options[] = {
	{"preset", required_argument, 0, 'p'},
	{"steps", required_argument, 0, 'n'},
	{"lr", required_argument, 0, OPT_LR},
	{"momentum", required_argument, 0, OPT_MOMENTUM},
	{"window", required_argument, 0, OPT_WINDOW},
	{"momentum-warmup", required_argument, 0, OPT_MOMENTUM_WARMUP},
	{"eval-every", required_argument, 0, 'e'},
	{"ckpt-every", required_argument, 0, OPT_CKPT_EVERY},
	{"absolute", no_argument, 0, OPT_ABSOLUTE},
	{"base-lr", required_argument, 0, OPT_BASE_LR},
	{"output", required_argument, 0, 'o'},
	{"check", required_argument, 0, 'c'},
	CLI_COMMON_LONG,
	{0, 0, 0, 0},
};

/* Name of option c, for messages. */
static const char *opt_name(int c)
{
	for (const struct option *o = options; o->name; o++)
		if (o->val == c)
			return o->name;
	return "?";
}

static long count_arg(int c, const char *s, long lo, long hi)
{
	long v;
	if (parse_long(s, lo, hi, &v) != 0)
		cli_usage_error(&text, "--%s: '%s' is not an integer from %ld to %ld", opt_name(c), s,
		                lo, hi);
	return v;
}

static void base_lr_arg(const char *s, double base[SCHED_NGROUPS])
{
	char *copy = xstrdup(s), *p = copy;
	int n = 0;
	for (char *item; (item = strsep(&p, ",")) != NULL; n++)
		if (n >= SCHED_NGROUPS || parse_double(item, &base[n]) != 0 || base[n] < 0)
			cli_usage_error(&text,
			                "--base-lr: '%s' is not four numbers >= 0 (EMBED,HEAD,SCALAR,MUON)",
			                s);
	free(copy);
	if (n != SCHED_NGROUPS)
		cli_usage_error(&text, "--base-lr: '%s' is not four numbers >= 0 (EMBED,HEAD,SCALAR,MUON)",
		                s);
}

static void shape_arg(int c, const char *s, struct sched_shape *sh)
{
	struct gpt_err e;
	if (sched_shape_parse(sh, s, c == OPT_WINDOW, &e) != 0)
		cli_usage_error(&text, "--%s: %s", opt_name(c), e.msg);
}

/* --check: read the whole stream, print the summary. */
static void check_stream(const char *path)
{
	const char *name = strcmp(path, "-") ? path : "standard input";
	FILE *fp = xfopen_in(path);
	struct gpt_err e;
	struct sched_reader *r = sched_open(fp, name, NULL, &e);
	if (!r)
		die(EXIT_RUNTIME, "%s", e.msg);
	struct sched_row row;
	long rows = 0, first = -1, last = -1, trains = 0, evals = 0, ckpts = 0;
	int minw = INT_MAX, maxw = 0, rc;
	while ((rc = sched_next(r, &row, &e)) == 1) {
		if (!rows)
			first = row.step;
		last = row.step;
		rows++;
		trains += row.train;
		evals += row.eval;
		ckpts += row.ckpt;
		if (row.window < minw)
			minw = row.window;
		if (row.window > maxw)
			maxw = row.window;
	}
	if (rc < 0)
		die(EXIT_RUNTIME, "%s", e.msg);
	if (!rows)
		die(EXIT_RUNTIME, "%s: no rows after the header", name);
	printf("{\"rows\":%ld,\"first_step\":%ld,\"last_step\":%ld,\"train_steps\":%ld,"
	       "\"evals\":%ld,\"ckpts\":%ld,\"min_window\":%d,\"max_window\":%d,\"lr\":\"%s\"}\n",
	       rows, first, last, trains, evals, ckpts, minw, maxw,
	       sched_absolute(r) ? "absolute" : "scale");
	sched_close(r);
	xfclose_in(fp, path);
}

int main(int argc, char **argv)
{
	util_init(argv[0]);
	const char *preset = NULL, *output = "-", *check = NULL, *gen_opt = NULL;
	const char *lr = NULL, *momentum = NULL, *window = NULL;
	long steps = 0, momentum_warmup = -1, eval_every = -1, ckpt_every = 0;
	int absolute = 0, have_base = 0;
	double base_lr[SCHED_NGROUPS];
	memcpy(base_lr, sched_record_base_lr, sizeof base_lr);
	struct sched_shape lr_sh, momentum_sh, window_sh;

	int c;
	while ((c = getopt_long(argc, argv, "p:n:e:o:c:" CLI_COMMON_SHORT, options, NULL)) != -1) {
		int common = c < 256 && strchr(CLI_COMMON_SHORT, c); /* (char)256 is '\0' */
		if (c != 'c' && c != '?' && !common && !gen_opt)
			gen_opt = opt_name(c);
		switch (c) {
		case 'p':
			preset = optarg;
			break;
		case 'n':
			steps = count_arg(c, optarg, 1, 1000000000L);
			break;
		case OPT_LR:
			shape_arg(c, lr = optarg, &lr_sh);
			break;
		case OPT_MOMENTUM:
			shape_arg(c, momentum = optarg, &momentum_sh);
			break;
		case OPT_WINDOW:
			shape_arg(c, window = optarg, &window_sh);
			break;
		case OPT_MOMENTUM_WARMUP:
			momentum_warmup = count_arg(c, optarg, 0, 1000000000L);
			break;
		case 'e':
			eval_every = count_arg(c, optarg, 0, LONG_MAX);
			break;
		case OPT_CKPT_EVERY:
			ckpt_every = count_arg(c, optarg, 0, LONG_MAX);
			break;
		case OPT_ABSOLUTE:
			absolute = 1;
			break;
		case OPT_BASE_LR:
			base_lr_arg(optarg, base_lr);
			have_base = 1;
			break;
		case 'o':
			output = optarg;
			break;
		case 'c':
			check = optarg;
			break;
		default:
			if (!cli_common(c, &text))
				cli_usage_error(&text, NULL);
		}
	}
	if (optind < argc)
		cli_usage_error(&text, "unexpected argument '%s'", argv[optind]);

	if (check) {
		if (gen_opt)
			cli_usage_error(&text, "--check takes no other option (got --%s)", gen_opt);
		check_stream(check);
		return 0;
	}

	/* Validation: what the stream is made of. */
	struct sched_spec sp;
	struct gpt_err e;
	if (preset) {
		if (momentum_warmup >= 0 && momentum)
			cli_usage_error(&text, "--momentum-warmup sets the preset's momentum; it "
			                       "conflicts with --momentum");
		if (sched_spec_preset(&sp, preset, steps, momentum_warmup, &e) != 0)
			cli_usage_error(&text, "--preset: %s", e.msg);
	} else {
		if (!steps)
			cli_usage_error(&text, "give --preset NAME, or --steps N with --lr, --momentum "
			                       "and --window");
		if (!lr || !momentum || !window)
			cli_usage_error(&text, "no --%s shape (give --lr, --momentum and --window, or "
			                       "--preset NAME)",
			                !lr ? "lr" : !momentum ? "momentum" : "window");
		if (momentum_warmup >= 0)
			cli_usage_error(&text, "--momentum-warmup applies to a --preset; use "
			                       "--momentum ramp:A:B:K");
		memset(&sp, 0, sizeof sp);
		sp.steps = steps;
		sp.eval_every = 0;
	}
	if (lr)
		sp.lr = lr_sh;
	if (momentum)
		sp.momentum = momentum_sh;
	if (window)
		sp.window = window_sh;
	if (eval_every >= 0)
		sp.eval_every = eval_every;
	sp.ckpt_every = ckpt_every;
	if (have_base && !absolute)
		cli_usage_error(&text, "--base-lr is used with --absolute (lr_scale streams carry no "
		                       "base rates)");
	sp.absolute = absolute;
	memcpy(sp.base_lr, base_lr, sizeof base_lr);
	if (sched_spec_check(&sp, &e) != 0)
		cli_usage_error(&text, "%s", e.msg);

	/* Work. */
	struct aout o;
	aout_open(&o, output, 0);
	if (sched_write(o.fp, &sp) != 0) {
		int err = errno;
		aout_abort(&o);
		errno = err;
		die(EXIT_RUNTIME, "%s: write failed:", strcmp(output, "-") ? output : "standard output");
	}
	aout_commit(&o);
	return 0;
}
