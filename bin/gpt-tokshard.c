/*
 * gpt-tokshard - text (plain or JSON lines, zstd-compressed or not) to
 * GPT-2 token shards; import and export of llm.c .bin files, decoding and
 * statistics. See gpt-tokshard(1); shards are gpt-shard(5).
 *
 * Tokenizing is a pipeline: a reader thread cuts the inputs into chunks
 * (lib/textin: whole JSON lines, or pieces of a document cut at safe split
 * points), worker threads tokenize chunks in any order (lib/bpe), and the
 * main thread takes the results in input order, prints their warnings and
 * writes the tokens to the validation output and the shards. The chunks do
 * not depend on the thread count, so neither does the output.
 */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bpe.h"
#include "json.h"
#include "shard.h"
#include "textin.h"
#include "util.h"

static const struct cli_text text = {
	"gpt-tokshard [OPTION]... -o PATTERN [FILE]...\n"
	"       gpt-tokshard --stats [OPTION]... [FILE]...\n"
	"       gpt-tokshard --import [-o NAME] FILE.bin...\n"
	"       gpt-tokshard --export [-o NAME] SHARD...\n"
	"       gpt-tokshard --decode [-o FILE] SHARD...",
	"Tokenize text with GPT-2's BPE (tiktoken \"gpt2\") into token shards.\n"
	"Each document becomes <|endoftext|> (50256) followed by its tokens.\n"
	"\n"
	"  -o, --output PATTERN   shard names, printf-like with one integer (%d, %06d):\n"
	"                         'out/train_%06d.bin.zst'; '-' for one stream on stdout\n"
	"  -s, --shard-size N     tokens per shard (default 100M; k/M/G = 1e3/1e6/1e9)\n"
	"      --val-tokens N     the first N tokens go to a validation shard\n"
	"      --val-output NAME  its name (default: DIR/val.SUFFIX, DIR and SUFFIX from\n"
	"                         PATTERN)\n"
	"  -j, --jsonl            input is JSON lines with a \"text\" member (default for\n"
	"                         .jsonl/.json names, .zst or not)\n"
	"      --text             input is plain text, whatever its name\n"
	"      --field NAME       the JSON member holding the text (default \"text\")\n"
	"  -d, --delimiter[=STR]  documents in plain text are separated by STR (default\n"
	"                         <|endoftext|>; \\n \\t \\r \\\\ \\xHH escapes); without this\n"
	"                         option each file is one document\n"
	"  -t, --threads N        tokenizing threads (default: all cores)\n"
	"      --strict           invalid UTF-8, NUL bytes and bad JSON lines are errors\n"
	"                         (default: warn; tokenize the bytes, skip bad lines)\n"
	"      --raw              write uncompressed llm.c .bin shards (no metadata)\n"
	"  -l, --level N          zstd level of the shards (default 3)\n"
	"      --vocab DIR        read DIR/vocab.bpe and DIR/encoder.json instead of the\n"
	"                         built-in GPT-2 vocabulary\n"
	"  -f, --force            write binary data to a terminal\n"
	"      --stats            print documents, tokens, bytes, bytes per token as one\n"
	"                         JSON line (without -o: count only; .bin and .bin.zst\n"
	"                         inputs are read as shards)\n"
	"      --import           llm.c .bin files to shards (NAME.bin -> NAME.bin.zst)\n"
	"      --export           shards to llm.c .bin files (NAME.bin.zst -> NAME.bin)\n"
	"      --decode           shards back to text (<|endoftext|> between documents)\n"
	"  -q, --quiet            -v, --verbose    -h, --help    -V, --version\n"
	"\n"
	"FILE '-' or none is standard input; .zst input is decompressed.\n"
	"See gpt-tokshard(1) and gpt-shard(5).\n",
};

enum {
	OPT_VAL_TOKENS = 256, OPT_VAL_OUTPUT, OPT_TEXT, OPT_FIELD, OPT_STRICT, OPT_RAW, OPT_VOCAB,
	OPT_STATS, OPT_IMPORT, OPT_EXPORT, OPT_DECODE,
};

static const struct option options[] = {
	{"output", required_argument, 0, 'o'},
	{"shard-size", required_argument, 0, 's'},
	{"val-tokens", required_argument, 0, OPT_VAL_TOKENS},
	{"val-output", required_argument, 0, OPT_VAL_OUTPUT},
	{"jsonl", no_argument, 0, 'j'},
	{"text", no_argument, 0, OPT_TEXT},
	{"field", required_argument, 0, OPT_FIELD},
	{"delimiter", optional_argument, 0, 'd'},
	{"threads", required_argument, 0, 't'},
	{"strict", no_argument, 0, OPT_STRICT},
	{"raw", no_argument, 0, OPT_RAW},
	{"level", required_argument, 0, 'l'},
	{"vocab", required_argument, 0, OPT_VOCAB},
	{"force", no_argument, 0, 'f'},
	{"stats", no_argument, 0, OPT_STATS},
	{"import", no_argument, 0, OPT_IMPORT},
	{"export", no_argument, 0, OPT_EXPORT},
	{"decode", no_argument, 0, OPT_DECODE},
	CLI_COMMON_LONG,
	{0, 0, 0, 0},
};

enum mode { M_TOKENIZE, M_IMPORT, M_EXPORT, M_DECODE };

static struct {
	enum mode mode;
	int stats;
	const char *output;
	const char *val_output;
	uint64_t shard_size;
	uint64_t val_tokens;
	int jsonl; /* -1 by name, 0 text, 1 JSON lines */
	char *delim;
	size_t dlen;
	const char *field;
	int threads;
	int strict;
	int raw;
	int level;
	int force;
	const char *vocab;
} opt = {.shard_size = 100000000, .jsonl = -1, .field = "text"};

static struct bpe *tok;
static uint8_t *tok_len; /* byte length of each token; 0 for <|endoftext|> */
static uint32_t eot;

/* ----------------------------------------------------------------------
 * Arguments
 */
static int ends_with(const char *s, const char *suffix)
{
	size_t a = strlen(s), b = strlen(suffix);
	return a >= b && !strcmp(s + a - b, suffix);
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Undo \n \t \r \\ \xHH in a delimiter. */
static void delimiter_arg(const char *s)
{
	char *d = xmalloc(strlen(s) + 1);
	size_t n = 0;
	for (const char *p = s; *p; p++) {
		if (*p != '\\') {
			d[n++] = *p;
			continue;
		}
		switch (*++p) {
		case 'n': d[n++] = '\n'; break;
		case 't': d[n++] = '\t'; break;
		case 'r': d[n++] = '\r'; break;
		case '\\': d[n++] = '\\'; break;
		case 'x':
			if (hexval(p[1]) >= 0 && hexval(p[2]) >= 0) {
				d[n++] = (char)(hexval(p[1]) * 16 + hexval(p[2]));
				p += 2;
				break;
			}
			/* fall through */
		default:
			cli_usage_error(&text, "--delimiter: bad escape in '%s' (known: \\n \\t \\r \\\\ \\xHH)", s);
		}
	}
	if (!n)
		cli_usage_error(&text, "--delimiter: empty delimiter");
	free(opt.delim);
	opt.delim = d;
	opt.dlen = n;
}

/* An output pattern: text, at most one %[0][width]d|i|u, and %%. */
struct pattern {
	char *pre, *post;
	int has_num, zero, width;
};

static int pattern_parse(const char *s, struct pattern *p)
{
	memset(p, 0, sizeof *p);
	size_t n = strlen(s);
	char *pre = xmalloc(n + 1), *post = xmalloc(n + 1);
	size_t a = 0, b = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%') {
			if (p->has_num)
				post[b++] = s[i];
			else
				pre[a++] = s[i];
			continue;
		}
		i++;
		if (s[i] == '%') {
			if (p->has_num)
				post[b++] = '%';
			else
				pre[a++] = '%';
			continue;
		}
		if (p->has_num)
			goto bad;
		if (s[i] == '0') {
			p->zero = 1;
			i++;
		}
		while (s[i] >= '0' && s[i] <= '9') {
			p->width = p->width * 10 + (s[i] - '0');
			if (p->width > 20)
				goto bad;
			i++;
		}
		if (s[i] != 'd' && s[i] != 'i' && s[i] != 'u')
			goto bad;
		p->has_num = 1;
	}
	pre[a] = post[b] = 0;
	p->pre = pre;
	p->post = post;
	return 0;
bad:
	free(pre);
	free(post);
	return -1;
}

static char *pattern_name(const struct pattern *p, long index)
{
	size_t n = strlen(p->pre) + strlen(p->post) + 48;
	char *s = xmalloc(n);
	if (p->has_num)
		snprintf(s, n, p->zero ? "%s%0*ld%s" : "%s%*ld%s", p->pre, p->width, index, p->post);
	else
		snprintf(s, n, "%s%s", p->pre, p->post);
	return s;
}

/* Default validation name: "val" plus the pattern's suffix after the number
 * (or its extension), in the pattern's directory. */
static char *default_val_name(const char *pattern, const struct pattern *p)
{
	const char *slash = strrchr(p->pre, '/');
	size_t dirlen = slash ? (size_t)(slash - p->pre) + 1 : 0;
	const char *suffix = p->post;
	if (!p->has_num) {
		const char *base = strrchr(pattern, '/');
		base = base ? base + 1 : pattern;
		suffix = strchr(base, '.');
		suffix = suffix ? suffix : "";
	}
	size_t n = dirlen + strlen(suffix) + 8;
	char *s = xmalloc(n);
	snprintf(s, n, "%.*sval%s", (int)dirlen, p->pre, suffix);
	return s;
}

static int is_jsonl_name(const char *name)
{
	static const char *sfx[] = {".jsonl", ".json", ".ndjson", ".jsonl.zst", ".json.zst", ".ndjson.zst"};
	for (size_t i = 0; i < sizeof sfx / sizeof *sfx; i++)
		if (ends_with(name, sfx[i]))
			return 1;
	return 0;
}

/* Fail early on inputs that cannot be read. */
static void check_inputs(char **in, int n)
{
	for (int i = 0; i < n; i++) {
		if (!strcmp(in[i], "-"))
			continue;
		struct stat st;
		if (stat(in[i], &st) != 0)
			die(EXIT_RUNTIME, "%s:", in[i]);
		if (S_ISDIR(st.st_mode))
			die(EXIT_RUNTIME, "%s: is a directory", in[i]);
		if (access(in[i], R_OK) != 0)
			die(EXIT_RUNTIME, "%s:", in[i]);
	}
}

/* mkdir -p for the directory part of a path */
static void make_parent(const char *path)
{
	char *d = xstrdup(path);
	char *slash = strrchr(d, '/');
	if (slash && slash != d) {
		*slash = 0;
		for (char *p = d + 1; *p; p++)
			if (*p == '/') {
				*p = 0;
				if (mkdir(d, 0777) != 0 && errno != EEXIST)
					die(EXIT_RUNTIME, "%s: cannot create directory:", d);
				*p = '/';
			}
		if (mkdir(d, 0777) != 0 && errno != EEXIST)
			die(EXIT_RUNTIME, "%s: cannot create directory:", d);
	}
	free(d);
}

/* ----------------------------------------------------------------------
 * Counting
 */
struct counts {
	uint64_t docs, tokens, bytes;
};

static void count_tokens(const uint32_t *t, size_t n, struct counts *c)
{
	uint64_t docs = 0, bytes = 0;
	for (size_t i = 0; i < n; i++) {
		docs += t[i] == eot;
		bytes += tok_len[t[i]];
	}
	c->docs += docs;
	c->tokens += n;
	c->bytes += bytes;
}

/* ----------------------------------------------------------------------
 * Outputs: the validation shard, then shards of shard_size tokens.
 */
struct out {
	struct shard_writer *w;
	char *name;
	struct counts c;
};

static struct {
	struct pattern pat;
	int to_stdout;
	char *val_name;
	struct out val, cur;
	long next_index;
	uint64_t val_left;
	long shards;
	struct counts total;
} o;

static void out_open(struct out *x, const char *name)
{
	struct shard_writer_opts wo = {.raw = opt.raw, .level = opt.level, .threads = opt.threads,
				       .force_tty = opt.force};
	struct gpt_err e;
	if (strcmp(name, "-"))
		make_parent(name);
	x->w = shard_writer_open(name, &wo, &e);
	if (!x->w)
		die(EXIT_RUNTIME, "%s", e.msg);
	x->name = xstrdup(name);
	memset(&x->c, 0, sizeof x->c);
}

/* Put the first k tokens of the rest of an item (whose counts are *rest):
 * all of them take rest's counts, a part is counted token by token. */
static void out_put(struct out *x, const uint32_t *t, size_t k, struct counts *rest)
{
	struct gpt_err e;
	if (shard_writer_put(x->w, t, k, &e))
		die(EXIT_RUNTIME, "%s", e.msg);
	struct counts part = {0};
	if (k == rest->tokens)
		part = *rest;
	else
		count_tokens(t, k, &part);
	x->c.docs += part.docs;
	x->c.tokens += part.tokens;
	x->c.bytes += part.bytes;
	rest->docs -= part.docs;
	rest->tokens -= part.tokens;
	rest->bytes -= part.bytes;
}

static void out_close(struct out *x)
{
	struct gpt_err e;
	if (shard_writer_close(x->w, (int64_t)x->c.docs, (int64_t)x->c.bytes, &e))
		die(EXIT_RUNTIME, "%s", e.msg);
	info(2, "%s: %llu tokens, %llu documents, %llu bytes", x->name, (unsigned long long)x->c.tokens,
	     (unsigned long long)x->c.docs, (unsigned long long)x->c.bytes);
	x->w = NULL;
	free(x->name);
	x->name = NULL;
	o.shards++;
}

/* A full shard is compressed and written on a thread of its own while
 * tokenizing goes on; one at a time, so at most two shards are in memory. */
static struct {
	pthread_t th;
	int active;
	struct out x;
	int failed;
	struct gpt_err e;
} closer;

static void *closer_main(void *arg)
{
	(void)arg;
	closer.failed = shard_writer_close(closer.x.w, (int64_t)closer.x.c.docs, (int64_t)closer.x.c.bytes,
					   &closer.e) != 0;
	return NULL;
}

static void closer_join(void)
{
	if (!closer.active)
		return;
	pthread_join(closer.th, NULL);
	closer.active = 0;
	if (closer.failed)
		die(EXIT_RUNTIME, "%s", closer.e.msg);
	info(2, "%s: %llu tokens, %llu documents, %llu bytes", closer.x.name,
	     (unsigned long long)closer.x.c.tokens, (unsigned long long)closer.x.c.docs,
	     (unsigned long long)closer.x.c.bytes);
	free(closer.x.name);
}

/* Hand a full output to the closer thread (none may be running). */
static void out_close_async(struct out *x)
{
	closer.x = *x;
	closer.failed = 0;
	if (pthread_create(&closer.th, NULL, closer_main, NULL))
		die(EXIT_RUNTIME, "cannot start a thread:");
	closer.active = 1;
	x->w = NULL;
	x->name = NULL;
	o.shards++;
}

/* A full output waits here until the next one is open: outputs are opened
 * (aout_open) only while no closer runs (aout's table of temporary files
 * is not made for concurrent use), and a name without %d fails before a
 * second shard is committed under it. */
static struct out full;
static int have_full;

static void open_next(struct out *x, const char *name)
{
	closer_join();
	out_open(x, name);
	if (have_full) {
		out_close_async(&full);
		have_full = 0;
	}
}

static void set_full(struct out *x)
{
	full = *x;
	have_full = 1;
	x->w = NULL;
	x->name = NULL;
}

/* Send n tokens holding docs documents and bytes text bytes to the
 * outputs (the counts of an item come from the worker that made it). */
static void route(const uint32_t *t, size_t n, uint64_t docs, uint64_t bytes)
{
	struct counts rest = {docs, n, bytes};
	o.total.docs += docs;
	o.total.tokens += n;
	o.total.bytes += bytes;
	if (!opt.output)
		return;
	if (o.val_left) {
		size_t k = n < o.val_left ? n : (size_t)o.val_left;
		if (!o.val.w)
			open_next(&o.val, o.val_name);
		out_put(&o.val, t, k, &rest);
		o.val_left -= k;
		t += k;
		n -= k;
		if (!o.val_left)
			set_full(&o.val);
	}
	while (n) {
		if (o.cur.w && o.cur.c.tokens == opt.shard_size) {
			if (o.to_stdout) {
				shard_writer_abort(o.cur.w);
				die(EXIT_RUNTIME, "standard output: more than %u tokens do not fit one shard",
				    SHARD_MAX_TOKENS);
			}
			if (!o.pat.has_num) {
				shard_writer_abort(o.cur.w);
				die(EXIT_RUNTIME, "%s: more than %llu tokens, and the name has no %%d for a "
						  "second shard (use a pattern or a larger --shard-size)",
				    opt.output, (unsigned long long)opt.shard_size);
			}
			set_full(&o.cur);
		}
		if (!o.cur.w) {
			if (o.to_stdout) {
				open_next(&o.cur, "-");
			} else {
				char *name = pattern_name(&o.pat, o.next_index++);
				open_next(&o.cur, name);
				free(name);
			}
		}
		uint64_t room = opt.shard_size - o.cur.c.tokens;
		size_t k = n < room ? n : (size_t)room;
		out_put(&o.cur, t, k, &rest);
		t += k;
		n -= k;
	}
}

static void outputs_finish(void)
{
	if (!opt.output)
		return;
	closer_join();
	if (have_full) {
		out_close(&full);
		have_full = 0;
	}
	if (o.val.w) {
		info(1, "only %llu tokens in all, fewer than --val-tokens %llu: no training shard written",
		     (unsigned long long)o.val.c.tokens, (unsigned long long)opt.val_tokens);
		out_close(&o.val);
	}
	if (o.cur.w)
		out_close(&o.cur);
	if (!o.total.tokens) {
		if (o.to_stdout) { /* a valid empty shard for the reader downstream */
			out_open(&o.cur, "-");
			out_close(&o.cur);
		} else {
			info(1, "no documents in the input: no shard written");
		}
	}
}

/* ----------------------------------------------------------------------
 * Tokenizing pipeline
 */
enum { EV_INVALID = 1, EV_NUL, EV_JSON };

struct event {
	int kind;
	uint64_t line, count;
	char msg[512];
};

struct item {
	struct textin_chunk c;
	int file;
	int jsonl;
	char *fatal; /* a read error: stop here */
	uint64_t consumed;
	uint32_t *ids;
	size_t n, cap;
	uint64_t docs, bytes;
	struct event *ev;
	size_t nev;
	int done;
};

static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv_work, cv_done, cv_space;
	struct item *ring;
	size_t q;                        /* ring size */
	size_t produced, taken, written; /* item counters */
	int reader_done;
	char **inputs;
	int ninputs;
	int *jsonl;
	uint64_t in_total; /* input bytes when known, else 0 */
} pl = {.mu = PTHREAD_MUTEX_INITIALIZER,
	.cv_work = PTHREAD_COND_INITIALIZER,
	.cv_done = PTHREAD_COND_INITIALIZER,
	.cv_space = PTHREAD_COND_INITIALIZER};

static void push_event(struct item *it, int kind, uint64_t line, uint64_t count, const char *msg)
{
	it->ev = xrealloc(it->ev, (it->nev + 1) * sizeof *it->ev);
	struct event *v = &it->ev[it->nev++];
	v->kind = kind;
	v->line = line;
	v->count = count;
	size_t n = msg ? strnlen(msg, sizeof v->msg - 1) : 0;
	memcpy(v->msg, msg ? msg : "", n);
	v->msg[n] = 0;
}

static uint64_t lines_before(const char *s, size_t off)
{
	uint64_t k = 0;
	for (const char *p = s, *end = s + off; (p = memchr(p, '\n', (size_t)(end - p))); p++)
		k++;
	return k;
}

/* Encode one document's text (or part): EOT first if start. */
static void encode_doc(struct item *it, const char *s, size_t n, int start, uint64_t line, int line_fixed)
{
	if (start) {
		if (it->n + 1 > it->cap) {
			it->cap = it->cap ? 2 * it->cap : 1024;
			it->ids = xrealloc(it->ids, it->cap * sizeof *it->ids);
		}
		it->ids[it->n++] = eot;
		it->docs++;
	}
	struct bpe_info bi;
	bpe_encode(tok, s, n, &it->ids, &it->n, &it->cap, &bi);
	it->bytes += n;
	if (bi.invalid)
		push_event(it, EV_INVALID, line + (line_fixed ? 0 : lines_before(s, bi.first_invalid)), bi.invalid,
			   NULL);
	if (bi.nul)
		push_event(it, EV_NUL, line + (line_fixed ? 0 : lines_before(s, bi.first_nul)), bi.nul, NULL);
}

static void process(struct item *it)
{
	if (it->fatal)
		return;
	struct textin_chunk *c = &it->c;
	if (c->kind == TEXTIN_TEXT) {
		encode_doc(it, c->data, c->len, c->doc_start, c->line, it->jsonl);
		return;
	}
	uint64_t line = c->line;
	for (char *p = c->data, *end = c->data + c->len, *nl; p < end; p = nl + 1, line++) {
		nl = memchr(p, '\n', (size_t)(end - p));
		struct json *doc;
		const char *t;
		size_t tlen;
		struct gpt_err e;
		int r = textin_json_text(p, (size_t)(nl - p), opt.field, &doc, &t, &tlen, &e);
		if (r < 0)
			push_event(it, EV_JSON, line, 1, e.msg);
		else if (r > 0 && tlen)
			encode_doc(it, t, tlen, 1, line, 1);
		json_free(doc);
	}
}

static void *worker(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&pl.mu);
	for (;;) {
		if (pl.taken < pl.produced) {
			struct item *it = &pl.ring[pl.taken++ % pl.q];
			pthread_mutex_unlock(&pl.mu);
			process(it);
			pthread_mutex_lock(&pl.mu);
			it->done = 1;
			pthread_cond_broadcast(&pl.cv_done);
			continue;
		}
		if (pl.reader_done)
			break;
		pthread_cond_wait(&pl.cv_work, &pl.mu);
	}
	pthread_mutex_unlock(&pl.mu);
	return NULL;
}

/* Claim the next ring slot (waits for room). */
static struct item *slot_get(void)
{
	pthread_mutex_lock(&pl.mu);
	while (pl.produced - pl.written >= pl.q)
		pthread_cond_wait(&pl.cv_space, &pl.mu);
	struct item *it = &pl.ring[pl.produced % pl.q];
	pthread_mutex_unlock(&pl.mu);
	memset(it, 0, sizeof *it);
	return it;
}

static void slot_publish(void)
{
	pthread_mutex_lock(&pl.mu);
	pl.produced++;
	pthread_cond_signal(&pl.cv_work);
	pthread_mutex_unlock(&pl.mu);
}

static void *reader(void *arg)
{
	(void)arg;
	uint64_t base = 0;
	for (int f = 0; f < pl.ninputs; f++) {
		struct textin_opts to = {.jsonl = pl.jsonl[f], .delim = opt.delim, .dlen = opt.dlen, .field = opt.field};
		struct gpt_err e;
		struct textin *t = textin_open(pl.inputs[f], &to, &e);
		if (!t) {
			struct item *it = slot_get();
			it->file = f;
			it->fatal = xstrdup(e.msg);
			slot_publish();
			goto done;
		}
		for (;;) {
			struct item *it = slot_get();
			it->file = f;
			it->jsonl = pl.jsonl[f];
			int r = textin_next(t, &it->c, &e);
			it->consumed = base + textin_consumed(t);
			if (r == 0)
				break; /* the slot is reused */
			if (r < 0) {
				it->fatal = xstrdup(e.msg);
				slot_publish();
				textin_close(t);
				goto done;
			}
			slot_publish();
		}
		base += textin_consumed(t);
		textin_close(t);
	}
done:
	pthread_mutex_lock(&pl.mu);
	pl.reader_done = 1;
	pthread_cond_broadcast(&pl.cv_work);
	pthread_cond_broadcast(&pl.cv_done);
	pthread_mutex_unlock(&pl.mu);
	return NULL;
}

/* Warnings, per input file: the first of each kind with its line, then a
 * summary at the end of the file. */
struct file_stats {
	uint64_t invalid, nul, skipped;
	uint64_t n_invalid, n_nul; /* events */
};
static struct file_stats *fstats;
static struct {
	uint64_t invalid, nul, skipped;
} warn_total;
#define MAX_JSON_WARNINGS 10

static const char *in_name(int f) { return strcmp(pl.inputs[f], "-") ? pl.inputs[f] : "standard input"; }

static void report(int f, const struct event *v)
{
	struct file_stats *s = &fstats[f];
	const char *name = in_name(f);
	switch (v->kind) {
	case EV_INVALID:
		if (opt.strict)
			die(EXIT_RUNTIME, "%s:%llu: invalid UTF-8 (--strict)", name, (unsigned long long)v->line);
		if (!s->n_invalid++)
			info(1, "%s:%llu: invalid UTF-8; its bytes are tokenized as they are", name,
			     (unsigned long long)v->line);
		s->invalid += v->count;
		warn_total.invalid += v->count;
		break;
	case EV_NUL:
		if (opt.strict)
			die(EXIT_RUNTIME, "%s:%llu: NUL byte in the text (--strict)", name, (unsigned long long)v->line);
		if (!s->n_nul++)
			info(1, "%s:%llu: NUL byte in the text (binary input?); tokenized as it is", name,
			     (unsigned long long)v->line);
		s->nul += v->count;
		warn_total.nul += v->count;
		break;
	case EV_JSON:
		if (opt.strict)
			die(EXIT_RUNTIME, "%s:%llu: %s (--strict)", name, (unsigned long long)v->line, v->msg);
		if (s->skipped < MAX_JSON_WARNINGS)
			info(1, "%s:%llu: %s; line skipped", name, (unsigned long long)v->line, v->msg);
		else if (s->skipped == MAX_JSON_WARNINGS)
			info(1, "%s: more bad lines; no more warnings for this file", name);
		s->skipped++;
		warn_total.skipped++;
		break;
	}
}

static void file_summary(int f)
{
	struct file_stats *s = &fstats[f];
	const char *name = in_name(f);
	if (s->invalid > 1)
		info(1, "%s: %llu bytes of invalid UTF-8 in all", name, (unsigned long long)s->invalid);
	if (s->nul > 1)
		info(1, "%s: %llu NUL bytes in all", name, (unsigned long long)s->nul);
	if (s->skipped > 1)
		info(1, "%s: %llu lines skipped in all", name, (unsigned long long)s->skipped);
}

static void progress(uint64_t consumed, int final)
{
	static double t0, last;
	double now = now_seconds();
	if (!t0)
		t0 = last = now;
	if (!final && now - last < 0.25)
		return;
	last = now;
	double dt = now - t0 > 1e-6 ? now - t0 : 1e-6;
	char eta[64] = "";
	if (pl.in_total && consumed && !final) {
		double frac = (double)consumed / (double)pl.in_total;
		double left = dt * (1 - frac) / frac;
		snprintf(eta, sizeof eta, "  %3.0f%%  ETA %d:%02d", 100 * frac, (int)(left / 60), (int)left % 60);
	}
	fprintf(stderr, "\r%s: %.1f MB, %.2fM tokens, %.1f MB/s%s\033[K%s", progname, (double)o.total.bytes / 1e6,
		(double)o.total.tokens / 1e6, (double)o.total.bytes / 1e6 / dt, eta, final ? "\n" : "");
}

static void tokenize(char **inputs, int ninputs)
{
	pl.inputs = inputs;
	pl.ninputs = ninputs;
	pl.jsonl = xcalloc((size_t)ninputs, sizeof *pl.jsonl);
	fstats = xcalloc((size_t)ninputs, sizeof *fstats);
	for (int i = 0; i < ninputs; i++) {
		pl.jsonl[i] = opt.jsonl >= 0 ? opt.jsonl : is_jsonl_name(inputs[i]);
	}
	/* the input size, for the ETA, when every input is a regular file */
	for (int i = 0; i < ninputs; i++) {
		struct stat st;
		if (strcmp(inputs[i], "-") && stat(inputs[i], &st) == 0 && S_ISREG(st.st_mode)) {
			pl.in_total += (uint64_t)st.st_size;
		} else {
			pl.in_total = 0;
			break;
		}
	}
	int nw = opt.threads;
	pl.q = 4 * (size_t)nw + 4;
	pl.ring = xcalloc(pl.q, sizeof *pl.ring);
	pthread_t rd, *wk = xmalloc((size_t)nw * sizeof *wk);
	if (pthread_create(&rd, NULL, reader, NULL))
		die(EXIT_RUNTIME, "cannot start the reader thread:");
	for (int i = 0; i < nw; i++)
		if (pthread_create(&wk[i], NULL, worker, NULL))
			die(EXIT_RUNTIME, "cannot start thread %d:", i);
	int show = progress_enabled();
	int last_file = -1;
	for (;;) {
		pthread_mutex_lock(&pl.mu);
		while (!(pl.written < pl.produced && pl.ring[pl.written % pl.q].done) &&
		       !(pl.written < pl.produced && pl.ring[pl.written % pl.q].fatal) &&
		       !(pl.reader_done && pl.written == pl.produced))
			pthread_cond_wait(&pl.cv_done, &pl.mu);
		if (pl.reader_done && pl.written == pl.produced) {
			pthread_mutex_unlock(&pl.mu);
			break;
		}
		struct item *it = &pl.ring[pl.written % pl.q];
		pthread_mutex_unlock(&pl.mu);
		if (it->file != last_file) {
			if (last_file >= 0)
				file_summary(last_file);
			last_file = it->file;
		}
		if (it->fatal) {
			if (show)
				fputc('\n', stderr);
			die(EXIT_RUNTIME, "%s", it->fatal);
		}
		for (size_t i = 0; i < it->nev; i++)
			report(it->file, &it->ev[i]);
		route(it->ids, it->n, it->docs, it->bytes);
		if (show)
			progress(it->consumed, 0);
		free(it->c.data);
		free(it->ids);
		free(it->ev);
		pthread_mutex_lock(&pl.mu);
		pl.written++;
		pthread_cond_signal(&pl.cv_space);
		pthread_mutex_unlock(&pl.mu);
	}
	if (last_file >= 0)
		file_summary(last_file);
	pthread_join(rd, NULL);
	for (int i = 0; i < nw; i++)
		pthread_join(wk[i], NULL);
	outputs_finish();
	if (show)
		progress(pl.in_total, 1);
	free(wk);
	free(pl.ring);
	free(pl.jsonl);
	free(fstats);
}

/* ----------------------------------------------------------------------
 * Shard inputs: --import, --export, --decode, --stats on shards
 */
#define BLOCK (1u << 20)

static struct shard_reader *open_shard(const char *path)
{
	struct gpt_err e;
	struct shard_reader *r = shard_open(path, &e);
	if (!r)
		die(EXIT_RUNTIME, "%s", e.msg);
	shard_set_vocab(r, bpe_vocab_size(tok));
	return r;
}

/* Name for the i-th of n converted files: -o (a pattern, or a name when
 * n == 1), else the input name with ".zst" removed (strip) or added. */
static char *convert_name(const char *in, int i, int n, int strip)
{
	if (opt.output) {
		if (o.pat.has_num)
			return pattern_name(&o.pat, i);
		if (n > 1)
			cli_usage_error(&text, "-o '%s' names one file but there are %d inputs (use a %%d pattern)",
					opt.output, n);
		return xstrdup(opt.output);
	}
	if (!strcmp(in, "-"))
		cli_usage_error(&text, "standard input needs -o");
	size_t len = strlen(in);
	char *s = xmalloc(len + 5);
	if (strip) {
		if (!ends_with(in, ".zst"))
			cli_usage_error(&text, "%s: no .zst suffix to remove (give -o)", in);
		snprintf(s, len + 5, "%.*s", (int)(len - 4), in);
	} else {
		snprintf(s, len + 5, "%s.zst", in);
	}
	return s;
}

static void convert(char **inputs, int n, int to_raw)
{
	uint32_t *buf = xmalloc(BLOCK * sizeof *buf);
	for (int i = 0; i < n; i++) {
		char *name = convert_name(inputs[i], i, n, to_raw);
		struct shard_reader *r = open_shard(inputs[i]);
		struct shard_writer_opts wo = {.raw = to_raw, .level = opt.level, .threads = opt.threads,
					       .force_tty = opt.force};
		struct gpt_err e;
		struct shard_writer *w = shard_writer_open(name, &wo, &e);
		if (!w)
			die(EXIT_RUNTIME, "%s", e.msg);
		struct counts c = {0};
		ssize_t k;
		while ((k = shard_read(r, buf, BLOCK, &e)) > 0) {
			if (shard_writer_put(w, buf, (size_t)k, &e))
				die(EXIT_RUNTIME, "%s", e.msg);
			count_tokens(buf, (size_t)k, &c);
		}
		if (k < 0) {
			shard_writer_abort(w);
			die(EXIT_RUNTIME, "%s", e.msg);
		}
		shard_close(r);
		if (shard_writer_close(w, (int64_t)c.docs, (int64_t)c.bytes, &e))
			die(EXIT_RUNTIME, "%s", e.msg);
		info(2, "%s -> %s: %llu tokens", inputs[i], name, (unsigned long long)c.tokens);
		o.total.docs += c.docs;
		o.total.tokens += c.tokens;
		o.total.bytes += c.bytes;
		free(name);
	}
	free(buf);
}

static void decode(char **inputs, int n)
{
	struct aout out;
	aout_open(&out, opt.output ? opt.output : "-", 0);
	uint32_t *buf = xmalloc(BLOCK * sizeof *buf);
	char *text = NULL;
	size_t cap = 0;
	for (int i = 0; i < n; i++) {
		struct shard_reader *r = open_shard(inputs[i]);
		struct gpt_err e;
		ssize_t k;
		while ((k = shard_read(r, buf, BLOCK, &e)) > 0) {
			size_t len = 0;
			if (bpe_decode(tok, buf, (size_t)k, &text, &len, &cap, &e))
				die(EXIT_RUNTIME, "%s: %s", inputs[i], e.msg);
			aout_write(&out, text, len);
		}
		if (k < 0) {
			aout_abort(&out);
			die(EXIT_RUNTIME, "%s", e.msg);
		}
		shard_close(r);
	}
	aout_commit(&out);
	free(text);
	free(buf);
}

static void shard_stats(const char *path)
{
	struct shard_reader *r = open_shard(path);
	uint32_t *buf = xmalloc(BLOCK * sizeof *buf);
	struct gpt_err e;
	ssize_t k;
	struct counts c = {0};
	while ((k = shard_read(r, buf, BLOCK, &e)) > 0)
		count_tokens(buf, (size_t)k, &c);
	if (k < 0)
		die(EXIT_RUNTIME, "%s", e.msg);
	/* the metadata, when there is some, must agree with the tokens */
	const struct shard_info *si = shard_reader_info(r);
	if ((si->docs >= 0 && (uint64_t)si->docs != c.docs) || (si->bytes >= 0 && (uint64_t)si->bytes != c.bytes))
		info(1, "%s: the metadata says %lld documents and %lld bytes, the tokens make %llu and %llu", path,
		     (long long)si->docs, (long long)si->bytes, (unsigned long long)c.docs,
		     (unsigned long long)c.bytes);
	shard_close(r);
	o.total.docs += c.docs;
	o.total.tokens += c.tokens;
	o.total.bytes += c.bytes;
	free(buf);
}

static int is_shard_name(const char *s) { return ends_with(s, ".bin") || ends_with(s, ".bin.zst"); }

static void print_stats(int files)
{
	printf("{\"files\":%d,\"documents\":%llu,\"tokens\":%llu,\"bytes\":%llu,\"bytes_per_token\":%.4f", files,
	       (unsigned long long)o.total.docs, (unsigned long long)o.total.tokens,
	       (unsigned long long)o.total.bytes,
	       o.total.tokens ? (double)o.total.bytes / (double)o.total.tokens : 0.0);
	if (opt.mode == M_TOKENIZE && opt.output)
		printf(",\"shards\":%ld", o.shards);
	if (warn_total.invalid || warn_total.nul || warn_total.skipped)
		printf(",\"invalid_utf8_bytes\":%llu,\"nul_bytes\":%llu,\"skipped_lines\":%llu",
		       (unsigned long long)warn_total.invalid, (unsigned long long)warn_total.nul,
		       (unsigned long long)warn_total.skipped);
	printf("}\n");
}

/* ----------------------------------------------------------------------
 */
static void set_mode(enum mode m)
{
	if (opt.mode != M_TOKENIZE && opt.mode != m)
		cli_usage_error(&text, "--import, --export and --decode exclude each other");
	opt.mode = m;
}

int main(int argc, char **argv)
{
	util_init(argv[0]);
	int c, have_size = 0, text_flag = 0, jsonl_flag = 0, have_delim = 0;
	long v;
	while ((c = getopt_long(argc, argv, "o:s:jd::t:l:f" CLI_COMMON_SHORT, options, NULL)) != -1) {
		switch (c) {
		case 'o': opt.output = optarg; break;
		case 's':
			if (parse_u64(optarg, &opt.shard_size) || opt.shard_size < 1 || opt.shard_size > SHARD_MAX_TOKENS)
				cli_usage_error(&text, "--shard-size: '%s' is not a count from 1 to %u", optarg,
						SHARD_MAX_TOKENS);
			have_size = 1;
			break;
		case OPT_VAL_TOKENS:
			if (parse_u64(optarg, &opt.val_tokens) || opt.val_tokens < 1 ||
			    opt.val_tokens > SHARD_MAX_TOKENS)
				cli_usage_error(&text, "--val-tokens: '%s' is not a count from 1 to %u", optarg,
						SHARD_MAX_TOKENS);
			break;
		case OPT_VAL_OUTPUT: opt.val_output = optarg; break;
		case 'j': jsonl_flag = 1; opt.jsonl = 1; break;
		case OPT_TEXT: text_flag = 1; opt.jsonl = 0; break;
		case OPT_FIELD: opt.field = optarg; break;
		case 'd':
			delimiter_arg(optarg ? optarg : "<|endoftext|>");
			have_delim = 1;
			break;
		case 't':
			if (parse_long(optarg, 1, 1024, &v))
				cli_usage_error(&text, "--threads: '%s' is not a count from 1 to 1024", optarg);
			opt.threads = (int)v;
			break;
		case OPT_STRICT: opt.strict = 1; break;
		case OPT_RAW: opt.raw = 1; break;
		case 'l':
			if (parse_long(optarg, 1, 22, &v))
				cli_usage_error(&text, "--level: '%s' is not a zstd level from 1 to 22", optarg);
			opt.level = (int)v;
			break;
		case OPT_VOCAB: opt.vocab = optarg; break;
		case 'f': opt.force = 1; break;
		case OPT_STATS: opt.stats = 1; break;
		case OPT_IMPORT: set_mode(M_IMPORT); break;
		case OPT_EXPORT: set_mode(M_EXPORT); break;
		case OPT_DECODE: set_mode(M_DECODE); break;
		default:
			if (!cli_common(c, &text))
				cli_usage_error(&text, "unknown option");
		}
	}
	char *stdin_only[] = {"-"};
	char **inputs = optind < argc ? argv + optind : stdin_only;
	int ninputs = optind < argc ? argc - optind : 1;
	int nstdin = 0;
	for (int i = 0; i < ninputs; i++)
		nstdin += !strcmp(inputs[i], "-");
	if (nstdin > 1)
		cli_usage_error(&text, "standard input ('-') given more than once");
	if (text_flag && jsonl_flag)
		cli_usage_error(&text, "--jsonl and --text exclude each other");
	if (opt.jsonl == 1 && have_delim)
		cli_usage_error(&text, "--delimiter is for plain text, not --jsonl");
	if (!opt.threads) {
		long n = sysconf(_SC_NPROCESSORS_ONLN);
		opt.threads = n > 0 ? (int)(n > 1024 ? 1024 : n) : 1;
	}
	if (opt.output && !strcmp(opt.output, "-") && opt.stats)
		cli_usage_error(&text, "--stats and -o - both write to standard output");
	if (opt.mode == M_TOKENIZE) {
		if (!opt.output && !opt.stats)
			cli_usage_error(&text, "no output: give -o PATTERN ('-': standard output) or --stats");
		if ((opt.val_tokens || opt.val_output) && !opt.output)
			cli_usage_error(&text, "--val-tokens needs -o");
		if (opt.val_output && !opt.val_tokens)
			cli_usage_error(&text, "--val-output needs --val-tokens");
	} else {
		if (have_size || opt.val_tokens || opt.val_output || opt.jsonl >= 0 || have_delim ||
		    opt.strict)
			cli_usage_error(&text, "--shard-size, --val-*, --jsonl, --text, --delimiter and --strict "
					       "are for tokenizing");
		if (opt.mode == M_DECODE && opt.raw)
			cli_usage_error(&text, "--raw is for writing shards");
	}
	if (opt.output && strcmp(opt.output, "-") && pattern_parse(opt.output, &o.pat))
		cli_usage_error(&text, "-o '%s': a name may hold one %%d (with 0 and a width: %%06d) and %%%%",
				opt.output);
	if (opt.output && !strcmp(opt.output, "-")) {
		o.to_stdout = 1;
		if (opt.mode == M_TOKENIZE && have_size)
			cli_usage_error(&text, "--shard-size needs an output pattern, not -o -");
		if (opt.mode == M_TOKENIZE)
			opt.shard_size = SHARD_MAX_TOKENS;
		if ((opt.mode == M_IMPORT || opt.mode == M_EXPORT) && ninputs > 1)
			cli_usage_error(&text, "-o - takes one input");
	}
	if (opt.val_tokens) {
		if (opt.val_output)
			o.val_name = xstrdup(opt.val_output);
		else if (o.to_stdout)
			cli_usage_error(&text, "--val-tokens with -o - needs --val-output NAME");
		else
			o.val_name = default_val_name(opt.output, &o.pat);
		if (!strcmp(o.val_name, "-") && o.to_stdout)
			cli_usage_error(&text, "the validation shard and the shards cannot both go to standard output");
		o.val_left = opt.val_tokens;
	}
	check_inputs(inputs, ninputs);

	struct gpt_err e;
	tok = bpe_load(opt.vocab, &e);
	if (!tok)
		die(EXIT_RUNTIME, "%s", e.msg);
	eot = bpe_eot(tok);
	tok_len = xmalloc(bpe_vocab_size(tok));
	for (uint32_t i = 0; i < bpe_vocab_size(tok); i++) {
		size_t l;
		bpe_token(tok, i, &l);
		tok_len[i] = i == eot ? 0 : (uint8_t)(l > 255 ? 255 : l);
	}

	switch (opt.mode) {
	case M_TOKENIZE:
		if (opt.stats && !opt.output) {
			int shards = 0;
			for (int i = 0; i < ninputs; i++)
				shards += is_shard_name(inputs[i]);
			if (shards == ninputs) {
				for (int i = 0; i < ninputs; i++)
					shard_stats(inputs[i]);
				break;
			}
			if (shards)
				cli_usage_error(&text, "--stats: give either shards (.bin, .bin.zst) or text, not both");
		}
		tokenize(inputs, ninputs);
		break;
	case M_IMPORT: convert(inputs, ninputs, 0); break;
	case M_EXPORT: convert(inputs, ninputs, 1); break;
	case M_DECODE: decode(inputs, ninputs); break;
	}
	if (opt.stats)
		print_stats(ninputs);
	info(2, "%llu documents, %llu tokens, %llu bytes", (unsigned long long)o.total.docs,
	     (unsigned long long)o.total.tokens, (unsigned long long)o.total.bytes);
	bpe_free(tok);
	free(tok_len);
	free(opt.delim);
	free(o.val_name);
	free(o.pat.pre);
	free(o.pat.post);
	return 0;
}
