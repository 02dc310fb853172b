/*
 * gpt-init - write the initial weights of a model configuration.
 *
 * Parses the options into a struct gpt_config (a preset, then explicit
 * overrides), then either prints the parameter table (--print-config) or
 * fills the weights (lib/init) and writes them (lib/weights).
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "init.h"
#include "json.h"
#include "parallel.h"
#include "safetensors.h"
#include "util.h"
#include "weights.h"

static const struct cli_text text = {
	"gpt-init [OPTION]... [-o FILE]",
	"Write the initial weights of a GPT configuration as a safetensors file.\n"
	"\n"
	"  -p, --preset NAME        record-2025-01-04 (default; alias: record) or tiny\n"
	"      --layers N           number of blocks (even)\n"
	"      --dim N              model width\n"
	"      --heads N            attention heads (head_dim = dim / heads)\n"
	"      --vocab N            vocabulary rows (padded)\n"
	"      --mlp-hidden N       MLP width (default 4 x dim when --dim is given)\n"
	"      --value-embeds N     value-embedding tables\n"
	"      --no-attn LIST       blocks without attention: comma-separated indices, or none\n"
	"      --softcap X          logit softcap (0 disables)\n"
	"      --norm-eps X         RMS-norm epsilon\n"
	"      --rope-freqs N       rotary frequencies (default head_dim / 4)\n"
	"      --rope-min-freq X    lowest rotary frequency\n"
	"      --attn-block N       attention mask block size in tokens\n"
	"      --eot N              end-of-text token\n"
	"      --max-seq N          longest sequence the rotary table covers\n"
	"  -s, --seed N             generator seed, 0 to 2^64-1 (default 0)\n"
	"  -o, --output FILE        output file (default: standard output); FILE.zst compresses\n"
	"      --dtype record|f32   record: BF16 embeddings, F32 others (default); f32: all F32\n"
	"      --print-config       print the configuration and parameter table; write nothing\n"
	"      --json               with --print-config: as one JSON object\n"
	"  -f, --force              write binary data to a terminal\n"
	"  -T, --threads N          worker threads (default: GPT_THREADS or all CPUs)\n"
	"  -q, --quiet              no messages\n"
	"  -v, --verbose            report timings on standard error\n"
	"  -h, --help               this help\n"
	"  -V, --version            version\n"};

enum {
	O_LAYERS = 256, O_DIM, O_HEADS, O_VOCAB, O_MLP, O_VE, O_NOATTN, O_SOFTCAP, O_EPS,
	O_ROPE_FREQS, O_ROPE_MIN, O_ATTN_BLOCK, O_EOT, O_MAX_SEQ, O_DTYPE, O_PRINT, O_JSON,
};

static const struct option longopts[] = {
	{"preset", required_argument, 0, 'p'},
	{"layers", required_argument, 0, O_LAYERS},
	{"dim", required_argument, 0, O_DIM},
	{"heads", required_argument, 0, O_HEADS},
	{"vocab", required_argument, 0, O_VOCAB},
	{"mlp-hidden", required_argument, 0, O_MLP},
	{"value-embeds", required_argument, 0, O_VE},
	{"no-attn", required_argument, 0, O_NOATTN},
	{"softcap", required_argument, 0, O_SOFTCAP},
	{"norm-eps", required_argument, 0, O_EPS},
	{"rope-freqs", required_argument, 0, O_ROPE_FREQS},
	{"rope-min-freq", required_argument, 0, O_ROPE_MIN},
	{"attn-block", required_argument, 0, O_ATTN_BLOCK},
	{"eot", required_argument, 0, O_EOT},
	{"max-seq", required_argument, 0, O_MAX_SEQ},
	{"seed", required_argument, 0, 's'},
	{"output", required_argument, 0, 'o'},
	{"dtype", required_argument, 0, O_DTYPE},
	{"print-config", no_argument, 0, O_PRINT},
	{"json", no_argument, 0, O_JSON},
	{"force", no_argument, 0, 'f'},
	{"threads", required_argument, 0, 'T'},
	CLI_COMMON_LONG,
	{0, 0, 0, 0},
};

/* The test/CPU preset: 4 blocks of width 128, 2 heads of 64, one value
 * embedding (used by blocks 0 and 3), attention everywhere, the record's
 * vocabulary: 20.1M parameters, 19.3M of them in the three vocab tables. */
static void preset_tiny(struct gpt_config *c)
{
	gpt_config_record(c);
	c->layers = 4;
	c->dim = 128;
	c->heads = 2;
	c->head_dim = 64;
	c->mlp_hidden = 512;
	c->value_embeds = 1;
	c->no_attn = 0;
	c->rope_freqs = 16;
}

static long int_arg(const char *opt, const char *s, long lo, long hi)
{
	long v;
	if (parse_long(s, lo, hi, &v))
		cli_usage_error(&text, "--%s: '%s' is not an integer in [%ld, %ld]", opt, s, lo, hi);
	return v;
}

static float float_arg(const char *opt, const char *s)
{
	double v;
	if (parse_double(s, &v))
		cli_usage_error(&text, "--%s: '%s' is not a number", opt, s);
	return (float)v;
}

static uint64_t layer_list(const char *s)
{
	if (!strcmp(s, "none") || !*s)
		return 0;
	uint64_t mask = 0;
	char *copy = xstrdup(s), *save = NULL;
	for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		mask |= 1ull << int_arg("no-attn", tok, 0, GPT_MAX_LAYERS - 1);
	free(copy);
	return mask;
}

static const char *group_name(enum gpt_group g)
{
	static const char *names[GPT_NGROUPS] = {"embed", "head", "scalar", "muon"};
	return (unsigned)g < GPT_NGROUPS ? names[g] : "?";
}

/* 1234567 -> "1,234,567" */
static const char *commas(uint64_t v, char *buf, size_t cap)
{
	char tmp[32];
	int n = snprintf(tmp, sizeof tmp, "%" PRIu64, v), k = 0;
	size_t o = 0;
	for (int i = 0; i < n && o + 2 < cap; i++) {
		buf[o++] = tmp[i];
		k = n - i - 1;
		if (k && k % 3 == 0)
			buf[o++] = ',';
	}
	buf[o] = 0;
	return buf;
}

/* Exact size of the file weights_save would write (uncompressed). */
static uint64_t file_size(const struct gpt_config *c, const struct gpt_table *t, int f32,
                          const char *const *extra, int nextra)
{
	struct gpt_meta m;
	gpt_config_to_meta(c, &m);
	const char **meta = xmalloc((size_t)(2 * (m.n + nextra)) * sizeof *meta);
	for (int i = 0; i < m.n; i++)
		meta[2 * i] = m.key[i], meta[2 * i + 1] = m.val[i];
	for (int i = 0; i < 2 * nextra; i++)
		meta[2 * m.n + i] = extra[i];
	struct st_entry *ent = xcalloc((size_t)t->n, sizeof *ent);
	for (int i = 0; i < t->n; i++)
		ent[i] = (struct st_entry){t->p[i].name,
		                           t->p[i].dtype == GPT_BF16 && !f32 ? ST_BF16 : ST_F32,
		                           t->p[i].ndim, t->p[i].shape, NULL};
	size_t hl;
	uint64_t dl;
	struct gpt_err e;
	char *h = st_header(ent, t->n, meta, m.n + nextra, &hl, &dl, &e);
	if (!h)
		die(EXIT_RUNTIME, "%s", e.msg);
	free(h);
	free(ent);
	free(meta);
	return 8 + hl + dl;
}

static void print_config(const struct gpt_config *c, int json, int f32, const char *const *extra,
                         int nextra)
{
	struct gpt_table t;
	gpt_table_build(c, &t);
	struct gpt_meta m;
	gpt_config_to_meta(c, &m);
	uint64_t groups[GPT_NGROUPS] = {0};
	for (int i = 0; i < t.n; i++)
		groups[t.p[i].group] += t.p[i].numel;
	uint64_t bytes = file_size(c, &t, f32, extra, nextra);
	char a[32], b[64], d[48];
	if (json) {
		printf("{\"config\":{");
		for (int i = 0; i < m.n; i++) {
			printf("%s", i ? "," : "");
			json_put_string(stdout, m.key[i], strlen(m.key[i]));
			putchar(':');
			json_put_string(stdout, m.val[i], strlen(m.val[i]));
		}
		printf("},\n\"tensors\":[\n");
		for (int i = 0; i < t.n; i++) {
			const struct gpt_param *p = &t.p[i];
			printf("{\"name\":\"%s\",\"shape\":[%" PRId64, p->name, p->shape[0]);
			if (p->ndim == 2)
				printf(",%" PRId64, p->shape[1]);
			printf("],\"dtype\":\"%s\",\"count\":%zu,\"group\":\"%s\",\"init\":\"%s\","
			       "\"offset\":%zu}%s\n",
			       p->dtype == GPT_BF16 && !f32 ? "BF16" : "F32", p->numel,
			       group_name(p->group), init_describe(p, d, sizeof d), p->offset,
			       i + 1 < t.n ? "," : "");
		}
		printf("],\n\"total_tensors\":%d,\"total_params\":%zu,\"groups\":{", t.n, t.total);
		for (int g = 0; g < GPT_NGROUPS; g++)
			printf("%s\"%s\":%" PRIu64, g ? "," : "", group_name((enum gpt_group)g), groups[g]);
		printf("},\"dtype\":\"%s\",\"file_bytes\":%" PRIu64 "}\n", f32 ? "f32" : "record", bytes);
	} else {
		printf("configuration:\n");
		for (int i = 0; i < m.n; i++)
			printf("  %-16s %s\n", m.key[i], *m.val[i] ? m.val[i] : "(none)");
		printf("\n%-32s %-14s %-5s %12s  %-6s  %s\n", "name", "shape", "dtype", "count", "group",
		       "init");
		for (int i = 0; i < t.n; i++) {
			const struct gpt_param *p = &t.p[i];
			if (p->ndim == 2)
				snprintf(b, sizeof b, "[%" PRId64 ", %" PRId64 "]", p->shape[0], p->shape[1]);
			else
				snprintf(b, sizeof b, "[%" PRId64 "]", p->shape[0]);
			printf("%-32s %-14s %-5s %12s  %-6s  %s\n", p->name, b,
			       p->dtype == GPT_BF16 && !f32 ? "BF16" : "F32",
			       commas(p->numel, a, sizeof a), group_name(p->group),
			       init_describe(p, d, sizeof d));
		}
		printf("\ntotal: %d tensors, %s parameters\n", t.n, commas(t.total, a, sizeof a));
		for (int g = 0; g < GPT_NGROUPS; g++)
			printf("  %-6s %14s\n", group_name((enum gpt_group)g), commas(groups[g], a, sizeof a));
		printf("file: %s bytes (--dtype %s, uncompressed)\n", commas(bytes, a, sizeof a),
		       f32 ? "f32" : "record");
	}
	gpt_table_free(&t);
}

int main(int argc, char **argv)
{
	util_init(argv[0]);
	struct gpt_config c;
	gpt_config_record(&c);
	/* explicit options, applied on top of the preset after parsing */
	long layers = -1, dim = -1, heads = -1, vocab = -1, mlp = -1, ve = -1, rope_freqs = -1,
	     attn_block = -1, eot = -1, max_seq = -1;
	int have_noattn = 0, have_softcap = 0, have_eps = 0, have_rope_min = 0;
	uint64_t noattn = 0, seed = 0;
	float softcap = 0, eps = 0, rope_min = 0;
	const char *out = "-", *preset = GPT_RECORD_PRESET;
	int f32 = 0, print = 0, json = 0, force = 0, out_given = 0;
	long threads = 0;
	int ch;
	while ((ch = getopt_long(argc, argv, "p:s:o:fT:" CLI_COMMON_SHORT, longopts, NULL)) != -1) {
		switch (ch) {
		case 'p': preset = optarg; break;
		case O_LAYERS: layers = int_arg("layers", optarg, 2, GPT_MAX_LAYERS); break;
		case O_DIM: dim = int_arg("dim", optarg, 1, 1 << 16); break;
		case O_HEADS: heads = int_arg("heads", optarg, 1, 1 << 12); break;
		case O_VOCAB: vocab = int_arg("vocab", optarg, 1, 1 << 24); break;
		case O_MLP: mlp = int_arg("mlp-hidden", optarg, 1, 1 << 20); break;
		case O_VE: ve = int_arg("value-embeds", optarg, 0, 8); break;
		case O_NOATTN: noattn = layer_list(optarg), have_noattn = 1; break;
		case O_SOFTCAP: softcap = float_arg("softcap", optarg), have_softcap = 1; break;
		case O_EPS: eps = float_arg("norm-eps", optarg), have_eps = 1; break;
		case O_ROPE_FREQS: rope_freqs = int_arg("rope-freqs", optarg, 0, 1 << 15); break;
		case O_ROPE_MIN: rope_min = float_arg("rope-min-freq", optarg), have_rope_min = 1; break;
		case O_ATTN_BLOCK: attn_block = int_arg("attn-block", optarg, 1, 1 << 20); break;
		case O_EOT: eot = int_arg("eot", optarg, 0, (1 << 24) - 1); break;
		case O_MAX_SEQ: max_seq = int_arg("max-seq", optarg, 1, 1 << 30); break;
		case 's':
			if (parse_u64(optarg, &seed))
				cli_usage_error(&text, "--seed: '%s' is not an integer in [0, 2^64-1]", optarg);
			break;
		case 'o': out = optarg, out_given = 1; break;
		case O_DTYPE:
			if (!strcmp(optarg, "record"))
				f32 = 0;
			else if (!strcmp(optarg, "f32"))
				f32 = 1;
			else
				cli_usage_error(&text, "--dtype: '%s' is not record or f32", optarg);
			break;
		case O_PRINT: print = 1; break;
		case O_JSON: json = print = 1; break;
		case 'f': force = 1; break;
		case 'T': threads = int_arg("threads", optarg, 1, 256); break;
		default:
			if (!cli_common(ch, &text))
				cli_usage_error(&text, NULL);
		}
	}
	if (optind < argc)
		cli_usage_error(&text, "unexpected argument '%s' (the output is -o FILE)", argv[optind]);
	if (print && out_given)
		cli_usage_error(&text, "--print-config writes no weights: drop -o");

	if (!strcmp(preset, GPT_RECORD_PRESET) || !strcmp(preset, "record"))
		gpt_config_record(&c);
	else if (!strcmp(preset, "tiny"))
		preset_tiny(&c);
	else
		cli_usage_error(&text, "--preset: unknown preset '%s' (record-2025-01-04, tiny)", preset);
	if (layers >= 0)
		c.layers = (int)layers;
	if (dim >= 0) {
		c.dim = (int)dim;
		if (mlp < 0)
			c.mlp_hidden = 4 * c.dim;
	}
	if (heads >= 0)
		c.heads = (int)heads;
	if (dim >= 0 || heads >= 0) {
		c.head_dim = c.dim % c.heads ? 0 : c.dim / c.heads;
		if (rope_freqs < 0)
			c.rope_freqs = c.head_dim / 4;
	}
	if (vocab >= 0)
		c.vocab = (int)vocab;
	if (mlp >= 0)
		c.mlp_hidden = (int)mlp;
	if (ve >= 0)
		c.value_embeds = (int)ve;
	if (have_noattn)
		c.no_attn = noattn;
	if (have_softcap)
		c.softcap = softcap;
	if (have_eps)
		c.norm_eps = eps;
	if (rope_freqs >= 0)
		c.rope_freqs = (int)rope_freqs;
	if (have_rope_min)
		c.rope_min_freq = rope_min;
	if (attn_block >= 0)
		c.attn_block = (int)attn_block;
	if (eot >= 0)
		c.eot = (int)eot;
	if (max_seq >= 0)
		c.max_seq = (int)max_seq;
	struct gpt_err e;
	if (gpt_config_check(&c, &e))
		cli_usage_error(&text, "bad model configuration: %s", e.msg);
	if (threads)
		parallel_set_threads((int)threads);

	char seedstr[32];
	snprintf(seedstr, sizeof seedstr, "%" PRIu64, seed);
	const char *extra[4] = {"init", "gpt-init/1", "init_seed", seedstr};
	if (print) {
		print_config(&c, json, f32, extra, 2);
		return 0;
	}
	if (!strcmp(out, "-") && !force && is_tty(1))
		die(EXIT_USAGE, "refusing to write binary data to a terminal (use --force or redirect)");

	struct gpt_table t;
	gpt_table_build(&c, &t);
	float *w = xmalloc_aligned(64, t.total * sizeof *w);
	double t0 = now_seconds();
	init_weights(&t, seed, w);
	double t1 = now_seconds();
	if (weights_save(out, &c, w, (f32 ? WEIGHTS_F32 : 0) | (force ? WEIGHTS_FORCE : 0), extra, 2,
	                 &e))
		die(EXIT_RUNTIME, "%s", e.msg);
	double t2 = now_seconds();
	info(2, "%zu parameters initialised in %.2f s (%d threads), written to %s in %.2f s",
	     t.total, t1 - t0, parallel_threads(), strcmp(out, "-") ? out : "standard output",
	     t2 - t1);
	free(w);
	gpt_table_free(&t);
	return 0;
}
