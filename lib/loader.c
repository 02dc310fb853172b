/*
 * loader.c - distributed data loader over token shards. See loader.h.
 *
 * Two slots: `cur` holds the file being served; `ahead` holds (or a thread
 * is filling it with) the file after it. Moving on swaps them when `ahead`
 * has the wanted file, else loads it synchronously.
 */
#include "loader.h"

#include <errno.h>
#include <glob.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "shard.h"

#define NO_FILE SIZE_MAX

struct slot {
	size_t file; /* NO_FILE: empty */
	uint32_t *tok; /* reused from file to file: no page faults after the first two */
	size_t cap, n;
	int rc; /* shard_load_into's result */
	struct gpt_err err;
	const char *path; /* for the thread */
	uint32_t vocab;
	pthread_t th;
	int running;
};

struct loader {
	char **files;
	uint64_t *ntok;
	size_t nfiles;
	size_t B, b;
	int P, r;
	uint32_t vocab;
	int prefetch;
	struct slot cur, ahead;
	size_t file; /* the state: current file and position */
	uint64_t pos;
};

/* ---------------------------------------------------------------------
 * Slots
 */
static void slot_fill(struct slot *s)
{
	s->rc = shard_load_into(s->path, s->vocab, &s->tok, &s->cap, &s->n, NULL, &s->err);
}

static void *slot_thread(void *arg)
{
	slot_fill(arg);
	return NULL;
}

static void slot_join(struct slot *s)
{
	if (s->running) {
		pthread_join(s->th, NULL);
		s->running = 0;
	}
}

/* Forget the file; keep the buffer unless asked to free it. */
static void slot_clear(struct slot *s, int free_buf)
{
	slot_join(s);
	if (free_buf) {
		free(s->tok);
		s->tok = NULL;
		s->cap = 0;
	}
	s->n = 0;
	s->file = NO_FILE;
}

static void slot_set(struct loader *l, struct slot *s, size_t i)
{
	s->file = i;
	s->path = l->files[i];
	s->vocab = l->vocab;
}

/* Start loading file i into `ahead` (synchronously if no thread can start). */
static void prefetch(struct loader *l, size_t i)
{
	struct slot *a = &l->ahead;
	if (a->file == i && (a->running || a->rc == 0))
		return;
	slot_join(a);
	slot_set(l, a, i);
	if (pthread_create(&a->th, NULL, slot_thread, a) == 0)
		a->running = 1;
	else
		a->file = NO_FILE; /* no thread: load it when needed */
}

/* Make `cur` hold file i. */
static int use_file(struct loader *l, size_t i, struct gpt_err *e)
{
	if (l->cur.file != i) {
		slot_join(&l->ahead);
		if (l->ahead.file == i) {
			struct slot t = l->cur;
			l->cur = l->ahead;
			l->ahead = t;
		} else {
			slot_set(l, &l->cur, i);
			slot_fill(&l->cur);
		}
		if (l->cur.rc != 0) {
			if (e)
				*e = l->cur.err;
			slot_clear(&l->cur, 0);
			return -1;
		}
		if (l->cur.n != l->ntok[i]) {
			gpt_errf(e, "%s: now holds %zu tokens, %llu when the loader opened it", l->files[i],
				 l->cur.n, (unsigned long long)l->ntok[i]);
			slot_clear(&l->cur, 0);
			return -1;
		}
	}
	if (l->prefetch && l->nfiles > 1)
		prefetch(l, (i + 1) % l->nfiles);
	return 0;
}

/* ---------------------------------------------------------------------
 * Files
 */
static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void add_file(struct loader *l, size_t *cap, const char *path)
{
	if (l->nfiles == *cap) {
		*cap = *cap ? 2 * *cap : 16;
		l->files = xrealloc(l->files, *cap * sizeof *l->files);
	}
	l->files[l->nfiles++] = xstrdup(path);
}

static int expand(struct loader *l, const char *const *patterns, size_t np, struct gpt_err *e)
{
	size_t cap = 0;
	for (size_t k = 0; k < np; k++) {
		const char *pat = patterns[k];
		if (!strpbrk(pat, "*?[")) {
			add_file(l, &cap, pat);
			continue;
		}
		glob_t g;
		int rc = glob(pat, GLOB_NOSORT, NULL, &g);
		if (rc == GLOB_NOMATCH)
			return gpt_errf(e, "%s: no files match this pattern", pat);
		if (rc != 0) {
			globfree(&g);
			return gpt_errf(e, "%s: cannot expand this pattern (%s)", pat,
					rc == GLOB_NOSPACE ? "out of memory" : "read error");
		}
		/* Python's sorted(): code point order, which is byte order in UTF-8 */
		qsort(g.gl_pathv, g.gl_pathc, sizeof *g.gl_pathv, cmp_str);
		for (size_t i = 0; i < g.gl_pathc; i++)
			add_file(l, &cap, g.gl_pathv[i]);
		globfree(&g);
	}
	if (l->nfiles == 0)
		return gpt_errf(e, "no data files given");
	return 0;
}

/* Read every header: the token counts, and early errors. */
static int peek_files(struct loader *l, struct gpt_err *e)
{
	l->ntok = xcalloc(l->nfiles, sizeof *l->ntok);
	for (size_t i = 0; i < l->nfiles; i++) {
		struct shard_reader *r = shard_open(l->files[i], e);
		if (!r)
			return -1;
		l->ntok[i] = shard_reader_info(r)->ntok;
		shard_close(r);
		if (l->ntok[i] < (uint64_t)l->B + 1)
			return gpt_errf(e, "%s: %llu tokens, too few for one batch (%zu + 1 tokens)",
					l->files[i], (unsigned long long)l->ntok[i], l->B);
	}
	return 0;
}

struct loader *loader_open(const char *const *patterns, size_t np, const struct loader_opts *o,
			   struct gpt_err *e)
{
	int P = o->world ? o->world : 1;
	if (P < 0 || o->rank < 0 || o->rank >= P) {
		gpt_errf(e, "rank %d is outside a world of %d", o->rank, P);
		return NULL;
	}
	if (o->batch == 0 || o->batch % (size_t)P != 0) {
		gpt_errf(e, "the global batch (%zu tokens) must be a positive multiple of the world size (%d)",
			 o->batch, P);
		return NULL;
	}
	struct loader *l = xcalloc(1, sizeof *l);
	l->B = o->batch;
	l->P = P;
	l->r = o->rank;
	l->b = o->batch / (size_t)P;
	l->vocab = o->vocab;
	l->prefetch = !o->no_prefetch;
	l->cur.file = l->ahead.file = NO_FILE;
	if (expand(l, patterns, np, e) < 0 || peek_files(l, e) < 0 || loader_reset(l, e) < 0) {
		loader_close(l);
		return NULL;
	}
	return l;
}

void loader_close(struct loader *l)
{
	if (!l)
		return;
	slot_clear(&l->ahead, 1);
	slot_clear(&l->cur, 1);
	for (size_t i = 0; i < l->nfiles; i++)
		free(l->files[i]);
	free(l->files);
	free(l->ntok);
	free(l);
}

size_t loader_nfiles(const struct loader *l) { return l->nfiles; }
const char *loader_path(const struct loader *l, size_t i) { return l->files[i]; }
uint64_t loader_file_tokens(const struct loader *l, size_t i) { return l->ntok[i]; }
size_t loader_local_batch(const struct loader *l) { return l->b; }

/* ---------------------------------------------------------------------
 * Batches and state
 */
const uint32_t *loader_next(struct loader *l, struct gpt_err *e)
{
	size_t file = l->file;
	uint64_t pos = l->pos;
	if (pos + l->B + 1 >= l->ntok[file]) { /* spec 7.2 step 1, before reading */
		file = (file + 1) % l->nfiles;
		pos = 0;
	}
	if (use_file(l, file, e) < 0)
		return NULL;
	uint64_t start = pos + (uint64_t)l->r * l->b;
	if (start + l->b + 1 > l->cur.n) { /* only when B + 1 > length: refused at open */
		gpt_errf(e, "%s: %zu tokens, too few for one batch", l->files[file], l->cur.n);
		return NULL;
	}
	l->file = file;
	l->pos = pos + l->B;
	return l->cur.tok + start;
}

int loader_next_batch(struct loader *l, uint32_t *inputs, uint32_t *targets, struct gpt_err *e)
{
	const uint32_t *p = loader_next(l, e);
	if (!p)
		return -1;
	memcpy(inputs, p, l->b * sizeof *p);
	memcpy(targets, p + 1, l->b * sizeof *p);
	return 0;
}

void loader_state(const struct loader *l, size_t *file, uint64_t *pos)
{
	*file = l->file;
	*pos = l->pos;
}

int loader_seek(struct loader *l, size_t file, uint64_t pos, struct gpt_err *e)
{
	if (file >= l->nfiles)
		return gpt_errf(e, "loader state: file %zu, but there are %zu files", file, l->nfiles);
	if (pos > l->ntok[file])
		return gpt_errf(e, "loader state: position %llu is past the end of %s (%llu tokens)",
				(unsigned long long)pos, l->files[file],
				(unsigned long long)l->ntok[file]);
	if (use_file(l, file, e) < 0)
		return -1;
	l->file = file;
	l->pos = pos;
	return 0;
}

int loader_reset(struct loader *l, struct gpt_err *e) { return loader_seek(l, 0, 0, e); }

int64_t loader_val_steps(const struct loader *l, uint64_t val_tokens, struct gpt_err *e)
{
	if (val_tokens == 0 || val_tokens % l->B)
		return gpt_errf(e, "%llu validation tokens: not a positive multiple of the global batch (%zu)",
				(unsigned long long)val_tokens, l->B);
	uint64_t steps = val_tokens / l->B;
	if (val_tokens + 1 >= l->ntok[0])
		return gpt_errf(e,
				"%s: %llu tokens, too few to validate on %llu (it needs more than %llu)",
				l->files[0], (unsigned long long)l->ntok[0],
				(unsigned long long)val_tokens, (unsigned long long)val_tokens + 1);
	return (int64_t)steps;
}
