/*
 * bpe.c - GPT-2 byte-level BPE tokenizer. See bpe.h.
 *
 * Sections: vocabulary (built-in and from files), byte-string hash table,
 * UTF-8 and character classes, pre-tokenizer, BPE merge (quadratic and
 * heap), per-thread cache, encode/decode, split points.
 */
#include "bpe.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "gpt2_vocab.h"
#include "json.h"
#include "unicode_tables.h"

#define MERGE_SMALL 64     /* pre-tokens up to this many bytes use the O(n^2) loop */
#define CACHE_MAX_KEY 255  /* longer pre-tokens are not cached */
#define CACHE_MAX_ENTRIES (1u << 19)

struct bpe_cache;

struct bpe {
	uint32_t n_vocab;   /* all tokens, specials included */
	uint32_t n_ord;     /* ordinary (mergeable) tokens: ids [0, n_ord) */
	uint32_t eot;
	unsigned char *bytes; /* token bytes, concatenated */
	uint32_t *off;        /* n_vocab + 1 offsets into bytes */
	uint32_t *slots;      /* hash table of ordinary tokens: id + 1, 0 = empty */
	uint32_t mask;
	uint32_t byte_id[256];
	pthread_key_t key;
	pthread_mutex_t lock;
	struct bpe_cache *caches; /* every thread's cache, for bpe_free */
};

/* ----------------------------------------------------------------------
 * Hashing byte strings
 */
/* The n < 8 bytes at p as one word (overlapping loads; n is hashed too) */
static inline uint64_t load_tail(const unsigned char *p, size_t n)
{
	if (n >= 4) {
		uint32_t a, b;
		memcpy(&a, p, 4);
		memcpy(&b, p + n - 4, 4);
		return (uint64_t)a | (uint64_t)b << 32;
	}
	if (n)
		return (uint64_t)p[0] | (uint64_t)p[n / 2] << 8 | (uint64_t)p[n - 1] << 16;
	return 0;
}

static inline uint64_t mix(uint64_t h)
{
	h ^= h >> 32;
	h *= 0xd6e8feb86659fd93ull;
	h ^= h >> 32;
	return h;
}

static inline uint64_t hash_bytes(const unsigned char *p, size_t n)
{
	uint64_t h = 0x9e3779b97f4a7c15ull * (n + 1);
	while (n >= 8) {
		uint64_t v;
		memcpy(&v, p, 8);
		h = (h ^ v) * 0xbf58476d1ce4e5b9ull;
		h ^= h >> 29;
		p += 8;
		n -= 8;
	}
	h = (h ^ load_tail(p, n)) * 0x94d049bb133111ebull;
	return mix(h);
}

/* a == b for n bytes, with overlapping word loads for short strings */
static inline int keq(const unsigned char *a, const unsigned char *b, size_t n)
{
	if (n >= 4 && n <= 16) {
		if (n <= 8) {
			uint32_t x, y, u, v;
			memcpy(&x, a, 4);
			memcpy(&y, b, 4);
			memcpy(&u, a + n - 4, 4);
			memcpy(&v, b + n - 4, 4);
			return x == y && u == v;
		}
		uint64_t x, y, u, v;
		memcpy(&x, a, 8);
		memcpy(&y, b, 8);
		memcpy(&u, a + n - 8, 8);
		memcpy(&v, b + n - 8, 8);
		return x == y && u == v;
	}
	if (n < 4) {
		for (size_t i = 0; i < n; i++)
			if (a[i] != b[i])
				return 0;
		return 1;
	}
	return !memcmp(a, b, n);
}

/* ----------------------------------------------------------------------
 * Vocabulary
 */
uint32_t bpe_lookup(const struct bpe *t, const void *bytes, size_t len)
{
	if (!len || len > UINT32_MAX)
		return BPE_NONE;
	const unsigned char *p = bytes;
	uint32_t i = (uint32_t)hash_bytes(p, len) & t->mask;
	for (;;) {
		uint32_t s = t->slots[i];
		if (!s)
			return BPE_NONE;
		uint32_t id = s - 1;
		uint32_t o = t->off[id];
		if (t->off[id + 1] - o == len && keq(t->bytes + o, p, len))
			return id;
		i = (i + 1) & t->mask;
	}
}

uint32_t bpe_vocab_size(const struct bpe *t) { return t->n_vocab; }
uint32_t bpe_eot(const struct bpe *t) { return t->eot; }

const unsigned char *bpe_token(const struct bpe *t, uint32_t id, size_t *len)
{
	if (id >= t->n_vocab)
		return NULL;
	*len = t->off[id + 1] - t->off[id];
	return t->bytes + t->off[id];
}

/* GPT-2's bytes_to_unicode(): the printable Latin-1 bytes map to
 * themselves, the other 68 bytes to U+0100.. in byte order. order[i] is
 * the byte of token i (the first 256 tokens follow this order). */
static void byte_unicode(uint16_t b2u[256], uint8_t order[256])
{
	int n = 0, extra = 0;
	int printable[256] = {0};
	for (int b = '!'; b <= '~'; b++)
		printable[b] = 1;
	for (int b = 0xA1; b <= 0xAC; b++)
		printable[b] = 1;
	for (int b = 0xAE; b <= 0xFF; b++)
		printable[b] = 1;
	for (int b = 0; b < 256; b++)
		if (printable[b]) {
			b2u[b] = (uint16_t)b;
			order[n++] = (uint8_t)b;
		}
	for (int b = 0; b < 256; b++)
		if (!printable[b]) {
			b2u[b] = (uint16_t)(256 + extra++);
			order[n++] = (uint8_t)b;
		}
}

/* Build bytes/off for the ordinary tokens from the byte order and merges,
 * the special token, and the hash table. merges: n pairs of ids. */
static int build(struct bpe *t, const uint8_t order[256], const uint32_t (*merges)[2], uint32_t n,
		 const char *where, struct gpt_err *e)
{
	static const char eot_text[] = "<|endoftext|>";
	t->n_ord = 256 + n;
	t->eot = t->n_ord;
	t->n_vocab = t->n_ord + 1;
	t->off = xmalloc(((size_t)t->n_vocab + 1) * sizeof *t->off);
	size_t total = 256 + sizeof eot_text;
	for (uint32_t k = 0; k < n; k++)
		if (merges[k][0] >= 256 + k || merges[k][1] >= 256 + k)
			return gpt_errf(e, "%s: merge %u uses a token that is not defined yet", where, k + 1);
	/* sizes first (a merged token is as long as its two parts) */
	uint32_t *lens = xmalloc((size_t)t->n_ord * sizeof *lens);
	for (uint32_t i = 0; i < 256; i++)
		lens[i] = 1;
	for (uint32_t k = 0; k < n; k++) {
		lens[256 + k] = lens[merges[k][0]] + lens[merges[k][1]];
		total += lens[256 + k];
		if (total > UINT32_MAX) {
			free(lens);
			return gpt_errf(e, "%s: vocabulary too large", where);
		}
	}
	t->bytes = xmalloc(total);
	uint32_t o = 0;
	for (uint32_t i = 0; i < 256; i++) {
		t->off[i] = o;
		t->bytes[o++] = order[i];
		t->byte_id[order[i]] = i;
	}
	for (uint32_t k = 0; k < n; k++) {
		uint32_t a = merges[k][0], b = merges[k][1];
		t->off[256 + k] = o;
		memcpy(t->bytes + o, t->bytes + t->off[a], lens[a]);
		o += lens[a];
		memcpy(t->bytes + o, t->bytes + t->off[b], lens[b]);
		o += lens[b];
	}
	free(lens);
	t->off[t->eot] = o;
	memcpy(t->bytes + o, eot_text, sizeof eot_text - 1);
	o += sizeof eot_text - 1;
	t->off[t->n_vocab] = o;

	uint32_t size = 1024;
	while (size < 4 * t->n_ord)
		size *= 2;
	t->mask = size - 1;
	t->slots = xcalloc(size, sizeof *t->slots);
	for (uint32_t id = 0; id < t->n_ord; id++) {
		const unsigned char *p = t->bytes + t->off[id];
		uint32_t len = t->off[id + 1] - t->off[id];
		if (bpe_lookup(t, p, len) != BPE_NONE)
			return gpt_errf(e, "%s: token %u repeats the bytes of token %u", where, id,
					bpe_lookup(t, p, len));
		uint32_t i = (uint32_t)hash_bytes(p, len) & t->mask;
		while (t->slots[i])
			i = (i + 1) & t->mask;
		t->slots[i] = id + 1;
	}
	return 0;
}

static char *read_file(const char *path, size_t *len, struct gpt_err *e)
{
	FILE *fp = fopen(path, "rb");
	if (!fp) {
		gpt_errf(e, "%s: %s", path, strerror(errno));
		return NULL;
	}
	size_t cap = 1 << 20, n = 0;
	char *buf = xmalloc(cap + 1);
	for (;;) {
		size_t got = fread(buf + n, 1, cap - n, fp);
		n += got;
		if (n < cap)
			break;
		cap *= 2;
		buf = xrealloc(buf, cap + 1);
	}
	int err = ferror(fp) ? errno : 0;
	fclose(fp);
	if (err) {
		free(buf);
		gpt_errf(e, "%s: %s", path, strerror(err));
		return NULL;
	}
	buf[n] = 0;
	*len = n;
	return buf;
}

/* Decode one GPT-2 vocabulary string (characters from bytes_to_unicode)
 * into bytes; -1 if a character is not in the table. */
static int unicode_to_bytes(const int16_t u2b[324], const char *s, size_t n, unsigned char *out, size_t *outlen)
{
	size_t k = 0;
	for (size_t i = 0; i < n;) {
		unsigned c = (unsigned char)s[i], cp;
		if (c < 0x80) {
			cp = c;
			i += 1;
		} else if ((c & 0xE0) == 0xC0 && i + 1 < n && ((unsigned char)s[i + 1] & 0xC0) == 0x80) {
			cp = ((c & 0x1F) << 6) | ((unsigned char)s[i + 1] & 0x3F);
			i += 2;
		} else {
			return -1;
		}
		if (cp >= 324 || u2b[cp] < 0)
			return -1;
		out[k++] = (unsigned char)u2b[cp];
	}
	*outlen = k;
	return 0;
}

static int load_files(struct bpe *t, const char *dir, struct gpt_err *e)
{
	uint16_t b2u[256];
	uint8_t order[256];
	int16_t u2b[324];
	byte_unicode(b2u, order);
	for (int i = 0; i < 324; i++)
		u2b[i] = -1;
	for (int b = 0; b < 256; b++)
		u2b[b2u[b]] = (int16_t)b;

	size_t plen = strlen(dir) + 32;
	char *path = xmalloc(plen);
	snprintf(path, plen, "%s/vocab.bpe", dir);
	size_t len;
	char *text = read_file(path, &len, e);
	if (!text) {
		free(path);
		return -1;
	}
	/* token bytes by id as merges are read, to find the ids of the parts */
	size_t cap = 1024, n = 0;
	uint32_t (*merges)[2] = xmalloc(cap * sizeof *merges);
	/* a temporary struct to look up parts: rebuilt incrementally is costly,
	 * so keep a simple hash of the tokens defined so far */
	uint32_t hsize = 1 << 18, hmask = hsize - 1;
	uint32_t *hs = xcalloc(hsize, sizeof *hs);
	size_t bcap = 1 << 20, blen = 0;
	unsigned char *bytes = xmalloc(bcap);
	size_t ocap = 1024;
	uint32_t *offs = xmalloc(ocap * sizeof *offs);
	uint32_t ntok = 0;
	int rc = -1;
#define TOK_LEN(id) (offs[(id) + 1] - offs[(id)])
	offs[0] = 0;
	for (int i = 0; i < 256; i++) { /* define a token: bytes appended, then hashed */
		bytes[blen++] = order[i];
		offs[++ntok] = (uint32_t)blen;
	}
	for (uint32_t id = 0; id < ntok; id++) {
		uint32_t h = (uint32_t)hash_bytes(bytes + offs[id], TOK_LEN(id)) & hmask;
		while (hs[h])
			h = (h + 1) & hmask;
		hs[h] = id + 1;
	}
	size_t lineno = 0;
	unsigned char *pa = xmalloc(len + 1), *pb = xmalloc(len + 1);
	for (size_t pos = 0; pos < len;) {
		char *nl = memchr(text + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - text) : len;
		char *line = text + pos;
		size_t ll = end - pos;
		pos = end + 1;
		lineno++;
		if (ll && line[ll - 1] == '\r')
			ll--;
		if (lineno == 1 && ll >= 8 && !memcmp(line, "#version", 8))
			continue;
		if (!ll)
			continue;
		char *sp = memchr(line, ' ', ll);
		size_t na, nb;
		if (!sp || memchr(sp + 1, ' ', ll - (size_t)(sp + 1 - line)) ||
		    unicode_to_bytes(u2b, line, (size_t)(sp - line), pa, &na) ||
		    unicode_to_bytes(u2b, sp + 1, ll - (size_t)(sp + 1 - line), pb, &nb) || !na || !nb) {
			gpt_errf(e, "%s:%zu: not a merge rule (two GPT-2 byte strings separated by a space)", path, lineno);
			goto out;
		}
		uint32_t ids[2] = {BPE_NONE, BPE_NONE};
		for (int side = 0; side < 2; side++) {
			const unsigned char *p = side ? pb : pa;
			size_t m = side ? nb : na;
			uint32_t h = (uint32_t)hash_bytes(p, m) & hmask;
			while (hs[h]) {
				uint32_t id = hs[h] - 1;
				if (TOK_LEN(id) == m && !memcmp(bytes + offs[id], p, m)) {
					ids[side] = id;
					break;
				}
				h = (h + 1) & hmask;
			}
		}
		if (ids[0] == BPE_NONE || ids[1] == BPE_NONE) {
			gpt_errf(e, "%s:%zu: merge uses a token not defined by an earlier line", path, lineno);
			goto out;
		}
		if (ntok + 2 >= hsize / 2) {
			gpt_errf(e, "%s: too many merges", path);
			goto out;
		}
		if (n == cap) {
			cap *= 2;
			merges = xrealloc(merges, cap * sizeof *merges);
		}
		merges[n][0] = ids[0];
		merges[n][1] = ids[1];
		n++;
		while (blen + na + nb > bcap) {
			bcap *= 2;
			bytes = xrealloc(bytes, bcap);
		}
		if (ntok + 2 > ocap) {
			ocap *= 2;
			offs = xrealloc(offs, ocap * sizeof *offs);
		}
		memcpy(bytes + blen, pa, na);
		memcpy(bytes + blen + na, pb, nb);
		uint32_t h = (uint32_t)hash_bytes(bytes + blen, na + nb) & hmask;
		int dup = 0;
		while (hs[h]) {
			uint32_t id = hs[h] - 1;
			if (TOK_LEN(id) == na + nb && !memcmp(bytes + offs[id], bytes + blen, na + nb))
				dup = 1;
			h = (h + 1) & hmask;
		}
		if (dup) {
			gpt_errf(e, "%s:%zu: merge makes a token that already exists", path, lineno);
			goto out;
		}
		blen += na + nb;
		hs[h] = ntok + 1;
		offs[++ntok] = (uint32_t)blen;
	}
#undef TOK_LEN
	if (!n) {
		gpt_errf(e, "%s: no merge rules", path);
		goto out;
	}
	if (build(t, order, (const uint32_t(*)[2])merges, (uint32_t)n, path, e))
		goto out;

	/* encoder.json must agree: every ordinary token's string maps to its
	 * id, and <|endoftext|> is the next id (tiktoken checks the same). */
	free(text);
	snprintf(path, plen, "%s/encoder.json", dir);
	text = read_file(path, &len, e);
	if (!text)
		goto out;
	struct gpt_err je;
	struct json *j = json_parse(text, len, &je);
	if (!j) {
		gpt_errf(e, "%s: %s", path, je.msg);
		goto out;
	}
	if (j->type != JSON_OBJECT) {
		gpt_errf(e, "%s: not a JSON object", path);
		json_free(j);
		goto out;
	}
	size_t seen_eot = 0;
	int bad = 0;
	unsigned char *kb = xmalloc(len + 1);
	for (size_t i = 0; i < j->n && !bad; i++) {
		int64_t id;
		bad = 1;
		if (json_int(&j->items[i], 0, UINT32_MAX, &id)) {
			gpt_errf(e, "%s: the value of \"%s\" is not a token id", path, j->keys[i]);
			break;
		}
		if (!strcmp(j->keys[i], "<|endoftext|>")) {
			if (id != t->eot) {
				gpt_errf(e, "%s: <|endoftext|> is %lld, vocab.bpe makes it %u", path, (long long)id,
					 t->eot);
				break;
			}
			seen_eot++;
			bad = 0;
			continue;
		}
		size_t kn;
		uint32_t got = BPE_NONE;
		if (!unicode_to_bytes(u2b, j->keys[i], j->keylens[i], kb, &kn))
			got = bpe_lookup(t, kb, kn);
		if (got != id) {
			gpt_errf(e, "%s: token \"%s\" is %lld here but %lld in vocab.bpe", path, j->keys[i],
				 (long long)id, got == BPE_NONE ? -1LL : (long long)got);
			break;
		}
		bad = 0;
	}
	free(kb);
	if (!bad && !seen_eot) {
		gpt_errf(e, "%s: no <|endoftext|> token", path);
		bad = 1;
	}
	if (!bad && j->n != (size_t)t->n_vocab) {
		gpt_errf(e, "%s: %zu tokens, vocab.bpe makes %u", path, j->n, t->n_vocab);
		bad = 1;
	}
	json_free(j);
	if (bad)
		goto out;
	rc = 0;
out:
	free(pa);
	free(pb);
	free(hs);
	free(bytes);
	free(offs);
	free(merges);
	free(text);
	free(path);
	return rc;
}

struct bpe *bpe_load(const char *dir, struct gpt_err *e)
{
	struct bpe *t = xcalloc(1, sizeof *t);
	int rc;
	if (dir) {
		rc = load_files(t, dir, e);
	} else {
		uint32_t(*m)[2] = xmalloc(GPT2_N_MERGES * sizeof *m);
		for (uint32_t k = 0; k < GPT2_N_MERGES; k++) {
			m[k][0] = gpt2_merges[k][0];
			m[k][1] = gpt2_merges[k][1];
		}
		rc = build(t, gpt2_byte_tokens, (const uint32_t(*)[2])m, GPT2_N_MERGES, "built-in vocabulary", e);
		free(m);
	}
	if (rc) {
		free(t->bytes);
		free(t->off);
		free(t->slots);
		free(t);
		return NULL;
	}
	if (pthread_key_create(&t->key, NULL))
		die(EXIT_RUNTIME, "pthread_key_create:");
	pthread_mutex_init(&t->lock, NULL);
	return t;
}

/* ----------------------------------------------------------------------
 * UTF-8 and character classes
 */
/* Class of each ASCII byte: 09-0D and 20 are White_Space, letters and
 * digits as \p{L} and \p{N}; the rest (00-08, 0E-1F, punctuation, 7F) other. */
static const uint8_t ascii_cls[128] = {
#define S UC_S
#define L UC_L
#define N UC_N
	0, 0, 0, 0, 0, 0, 0, 0, 0, S, S, S, S, S, 0, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	S, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	N, N, N, N, N, N, N, N, N, N, 0, 0, 0, 0, 0, 0,
	0, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,
	L, L, L, L, L, L, L, L, L, L, L, 0, 0, 0, 0, 0,
	0, L, L, L, L, L, L, L, L, L, L, L, L, L, L, L,
	L, L, L, L, L, L, L, L, L, L, L, 0, 0, 0, 0, 0,
#undef S
#undef L
#undef N
};

/* 1 for the ASCII letters, 0 for every other byte */
static const uint8_t ascii_letter[256] = {
	['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1, ['I'] = 1,
	['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1, ['Q'] = 1, ['R'] = 1,
	['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1, ['Y'] = 1, ['Z'] = 1,
	['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1, ['g'] = 1, ['h'] = 1, ['i'] = 1,
	['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1, ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1,
	['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1, ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1,
};

/* Decode the character at s[0] (n >= 1 bytes available): its code point in
 * *cp and its length, or 0 for an invalid byte (a one-byte "other"). */
static inline size_t utf8_char(const unsigned char *s, size_t n, uint32_t *cp)
{
	unsigned c = s[0];
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c < 0xC2)
		return 0;
	if (c < 0xE0) {
		if (n < 2 || (s[1] & 0xC0) != 0x80)
			return 0;
		*cp = ((c & 0x1F) << 6) | (s[1] & 0x3F);
		return 2;
	}
	if (c < 0xF0) {
		if (n < 3 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xE0 && s[1] < 0xA0) || (c == 0xED && s[1] >= 0xA0))
			return 0; /* overlong, surrogate */
		*cp = ((c & 0x0F) << 12) | ((uint32_t)(s[1] & 0x3F) << 6) | (s[2] & 0x3F);
		return 3;
	}
	if (c < 0xF5) {
		if (n < 4 || (s[1] & 0xC0) != 0x80 || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80)
			return 0;
		if ((c == 0xF0 && s[1] < 0x90) || (c == 0xF4 && s[1] >= 0x90))
			return 0; /* overlong, above U+10FFFF */
		*cp = ((c & 0x07) << 18) | ((uint32_t)(s[1] & 0x3F) << 12) | ((uint32_t)(s[2] & 0x3F) << 6) |
		      (s[3] & 0x3F);
		return 4;
	}
	return 0;
}

/* Class of the character at s[i] (i < n); its length in *l. */
static inline unsigned cls_at(const unsigned char *s, size_t n, size_t i, size_t *l)
{
	unsigned c = s[i];
	if (c < 0x80) {
		*l = 1;
		return ascii_cls[c];
	}
	uint32_t cp;
	size_t k = utf8_char(s + i, n - i, &cp);
	if (!k) {
		*l = 1;
		return UC_O;
	}
	*l = k;
	return uc_stage2[uc_stage1[cp >> 8]][cp & 255];
}

size_t bpe_utf8_invalid(const char *text, size_t n, size_t *first)
{
	const unsigned char *s = (const unsigned char *)text;
	size_t bad = 0;
	for (size_t i = 0; i < n;) {
		/* ASCII fast path, 8 bytes at a time */
		while (i + 8 <= n) {
			uint64_t v;
			memcpy(&v, s + i, 8);
			if (v & 0x8080808080808080ull)
				break;
			i += 8;
		}
		if (i >= n)
			break;
		if (s[i] < 0x80) {
			i++;
			continue;
		}
		uint32_t cp;
		size_t k = utf8_char(s + i, n - i, &cp);
		if (!k) {
			if (!bad && first)
				*first = i;
			bad++;
			k = 1;
		}
		i += k;
	}
	return bad;
}

/* ----------------------------------------------------------------------
 * Pre-tokenizer
 */
static inline size_t next_piece(const unsigned char *s, size_t n, size_t i)
{
	unsigned b = s[i];
	if (b == '\'' && i + 1 < n) {
		unsigned b1 = s[i + 1];
		if (b1 == 's' || b1 == 'd' || b1 == 'm' || b1 == 't')
			return i + 2;
		if (i + 2 < n) {
			unsigned b2 = s[i + 2];
			if ((b1 == 'l' && b2 == 'l') || (b1 == 'v' && b2 == 'e') || (b1 == 'r' && b2 == 'e'))
				return i + 3;
		}
	}
	size_t l0, l;
	unsigned c0 = cls_at(s, n, i, &l0), c = c0;
	size_t j = i + l0;
	if (b == ' ' && j < n) {
		unsigned c1 = cls_at(s, n, j, &l);
		if (c1 != UC_S) {
			c = c1;
			j += l;
		}
	}
	if (c != UC_S) {
		/* a run of one class; ASCII letters are the common case */
		if (c == UC_L)
			while (j < n && ascii_letter[s[j]])
				j++;
		while (j < n && cls_at(s, n, j, &l) == c)
			j += l;
		return j;
	}
	/* whitespace run [i, j); last = start of its last character */
	size_t last = i;
	while (j < n && cls_at(s, n, j, &l) == UC_S) {
		last = j;
		j += l;
	}
	if (j == n)
		return j; /* \s+(?!\S) at the end of the text */
	if (last > i)
		return last; /* \s+(?!\S): all but the last character */
	return j;            /* \s+: one character before a non-space */
}

size_t bpe_next_piece(const char *text, size_t len, size_t pos)
{
	return next_piece((const unsigned char *)text, len, pos);
}

static inline int ascii_space(unsigned c) { return c == ' ' || (c >= 9 && c <= 13); }

size_t bpe_split_point(const char *text, size_t len, size_t from)
{
	const unsigned char *s = (const unsigned char *)text;
	if (from < 1)
		from = 1;
	for (size_t k = from; k < len; k++)
		if (ascii_space(s[k]) && s[k - 1] < 0x80 && !ascii_space(s[k - 1]))
			return k;
	return len;
}

/* ----------------------------------------------------------------------
 * BPE merge
 */
#define RANK_MAX UINT32_MAX

/* tiktoken's _byte_pair_merge: parts start at pos[0..np), pos[np] = n. */
static size_t merge_small(const struct bpe *t, const unsigned char *p, size_t n, uint32_t *out)
{
	uint32_t pos[MERGE_SMALL + 1], rank[MERGE_SMALL + 1];
	size_t np = n;
	for (size_t i = 0; i <= n; i++)
		pos[i] = (uint32_t)i;
	for (size_t i = 0; i + 1 < n; i++)
		rank[i] = bpe_lookup(t, p + i, 2);
	rank[n - 1] = RANK_MAX;
	for (;;) {
		uint32_t best = RANK_MAX;
		size_t bi = 0;
		for (size_t i = 0; i + 1 < np; i++)
			if (rank[i] < best) {
				best = rank[i];
				bi = i;
			}
		if (best == RANK_MAX)
			break;
		/* merge parts bi and bi+1 */
		memmove(pos + bi + 1, pos + bi + 2, (np - bi - 1) * sizeof *pos);
		memmove(rank + bi + 1, rank + bi + 2, (np - bi - 2) * sizeof *rank);
		np--;
		rank[bi] = bi + 1 < np ? bpe_lookup(t, p + pos[bi], pos[bi + 2] - pos[bi]) : RANK_MAX;
		if (bi > 0)
			rank[bi - 1] = bpe_lookup(t, p + pos[bi - 1], pos[bi + 1] - pos[bi - 1]);
	}
	for (size_t i = 0; i < np; i++)
		out[i] = bpe_lookup(t, p + pos[i], pos[i + 1] - pos[i]);
	return np;
}

/* Same result with a binary heap of (rank << 32 | start): the smallest
 * rank, then the leftmost start, exactly tiktoken's choice. A pair's rank
 * changes only by growing its byte span, so a popped entry is current iff
 * its part is alive and still has that rank. */
static void heap_push(uint64_t *h, size_t *nh, uint64_t v)
{
	size_t i = (*nh)++;
	while (i) {
		size_t up = (i - 1) / 2;
		if (h[up] <= v)
			break;
		h[i] = h[up];
		i = up;
	}
	h[i] = v;
}

static uint64_t heap_pop(uint64_t *h, size_t *nh)
{
	uint64_t top = h[0], v = h[--*nh];
	size_t n = *nh, i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= n)
			break;
		if (c + 1 < n && h[c + 1] < h[c])
			c++;
		if (h[c] >= v)
			break;
		h[i] = h[c];
		i = c;
	}
	if (n)
		h[i] = v;
	return top;
}

#define DEAD UINT32_MAX
static size_t merge_heap(const struct bpe *t, const unsigned char *p, size_t n, uint32_t *out)
{
	uint32_t *next = xmalloc(n * sizeof *next), *prev = xmalloc(n * sizeof *prev);
	uint32_t *rank = xmalloc(n * sizeof *rank);
	size_t hcap = 2 * n + 16, nh = 0;
	uint64_t *heap = xmalloc(hcap * sizeof *heap);
	for (size_t i = 0; i < n; i++) {
		next[i] = (uint32_t)(i + 1);
		prev[i] = i ? (uint32_t)(i - 1) : DEAD;
		rank[i] = i + 1 < n ? bpe_lookup(t, p + i, 2) : RANK_MAX;
		if (rank[i] != RANK_MAX)
			heap_push(heap, &nh, (uint64_t)rank[i] << 32 | i);
	}
	while (nh) {
		uint64_t top = heap_pop(heap, &nh);
		uint32_t r = (uint32_t)(top >> 32), a = (uint32_t)top;
		if (rank[a] != r)
			continue; /* stale, or a merged into its left neighbour (rank MAX) */
		uint32_t b = next[a], c = next[b];
		next[a] = c;
		if (c < n)
			prev[c] = a;
		prev[b] = DEAD;
		rank[b] = RANK_MAX;
		if (nh + 2 > hcap) {
			hcap *= 2;
			heap = xrealloc(heap, hcap * sizeof *heap);
		}
		rank[a] = c < n ? bpe_lookup(t, p + a, next[c] - a) : RANK_MAX;
		if (rank[a] != RANK_MAX)
			heap_push(heap, &nh, (uint64_t)rank[a] << 32 | a);
		if (a != 0) {
			uint32_t z = prev[a];
			rank[z] = bpe_lookup(t, p + z, c - z);
			if (rank[z] != RANK_MAX)
				heap_push(heap, &nh, (uint64_t)rank[z] << 32 | z);
		}
	}
	size_t k = 0;
	for (uint32_t i = 0; i < n; i = next[i])
		out[k++] = bpe_lookup(t, p + i, next[i] - i);
	free(next);
	free(prev);
	free(rank);
	free(heap);
	return k;
}

size_t bpe_merge_piece(const struct bpe *t, const void *piece, size_t len, int heap, uint32_t *out)
{
	const unsigned char *p = piece;
	if (!len)
		return 0;
	if (len == 1) {
		out[0] = t->byte_id[p[0]];
		return 1;
	}
	if (len > UINT32_MAX - 1)
		die(EXIT_RUNTIME, "a pre-token of %zu bytes is too long to encode", len);
	if (!heap && len <= MERGE_SMALL)
		return merge_small(t, p, len, out);
	return merge_heap(t, p, len, out);
}

/* ----------------------------------------------------------------------
 * Per-thread cache: open addressing from pre-token bytes to ids. Keys and
 * id lists live in two arenas; when the table is full it is cleared.
 */
struct centry {
	uint64_t hash; /* 0 = empty */
	uint32_t koff; /* key bytes in kbytes */
	uint32_t val;  /* the id if nid == 1, else offset in ids */
	uint16_t klen;
	uint16_t nid;
};

struct bpe_cache {
	struct bpe_cache *next;
	struct centry *tab;
	uint32_t mask, count;
	unsigned char *kbytes;
	size_t klen, kcap;
	uint32_t *ids;
	size_t nids, idcap;
	uint32_t tmp[CACHE_MAX_KEY];
};

static void cache_init_table(struct bpe_cache *c, uint32_t size)
{
	free(c->tab);
	c->tab = xcalloc(size, sizeof *c->tab);
	c->mask = size - 1;
	c->count = 0;
}

static struct bpe_cache *get_cache(const struct bpe *tc)
{
	struct bpe *t = (struct bpe *)tc; /* the key and the registry are not part of the value */
	struct bpe_cache *c = pthread_getspecific(t->key);
	if (c)
		return c;
	c = xcalloc(1, sizeof *c);
	cache_init_table(c, 1 << 12);
	c->kcap = 1 << 16;
	c->kbytes = xmalloc(c->kcap);
	c->idcap = 1 << 14;
	c->ids = xmalloc(c->idcap * sizeof *c->ids);
	pthread_mutex_lock(&t->lock);
	c->next = t->caches;
	t->caches = c;
	pthread_mutex_unlock(&t->lock);
	if (pthread_setspecific(t->key, c))
		die(EXIT_RUNTIME, "pthread_setspecific:");
	return c;
}

static void cache_clear(struct bpe_cache *c)
{
	memset(c->tab, 0, ((size_t)c->mask + 1) * sizeof *c->tab);
	c->count = 0;
	c->klen = 0;
	c->nids = 0;
}

static void cache_put(struct bpe_cache *c, uint64_t h, const unsigned char *key, size_t klen, const uint32_t *ids,
		      size_t nid)
{
	if (c->count + 1 > (c->mask + 1) / 2) {
		if (c->mask + 1 >= 2 * CACHE_MAX_ENTRIES) {
			cache_clear(c);
		} else { /* grow: rehash the entries */
			struct centry *old = c->tab;
			uint32_t oldsize = c->mask + 1;
			c->tab = NULL;
			cache_init_table(c, oldsize * 2);
			for (uint32_t i = 0; i < oldsize; i++)
				if (old[i].hash) {
					uint32_t k = (uint32_t)old[i].hash & c->mask;
					while (c->tab[k].hash)
						k = (k + 1) & c->mask;
					c->tab[k] = old[i];
					c->count++;
				}
			free(old);
		}
	}
	if (c->klen + klen > UINT32_MAX || c->nids + nid > UINT32_MAX)
		cache_clear(c);
	while (c->klen + klen > c->kcap) {
		c->kcap *= 2;
		c->kbytes = xrealloc(c->kbytes, c->kcap);
	}
	struct centry e = {.hash = h, .koff = (uint32_t)c->klen, .klen = (uint16_t)klen, .nid = (uint16_t)nid};
	memcpy(c->kbytes + c->klen, key, klen);
	c->klen += klen;
	if (nid == 1) {
		e.val = ids[0];
	} else {
		while (c->nids + nid > c->idcap) {
			c->idcap *= 2;
			c->ids = xrealloc(c->ids, c->idcap * sizeof *c->ids);
		}
		e.val = (uint32_t)c->nids;
		memcpy(c->ids + c->nids, ids, nid * sizeof *ids);
		c->nids += nid;
	}
	uint32_t k = (uint32_t)h & c->mask;
	while (c->tab[k].hash)
		k = (k + 1) & c->mask;
	c->tab[k] = e;
	c->count++;
}

/* ----------------------------------------------------------------------
 * Encode and decode
 */
static inline void reserve(uint32_t **ids, size_t *cap, size_t need)
{
	if (need > *cap) {
		size_t c = *cap ? *cap : 256;
		while (c < need)
			c *= 2;
		*ids = xrealloc(*ids, c * sizeof **ids);
		*cap = c;
	}
}

void bpe_encode(const struct bpe *t, const char *text, size_t len, uint32_t **ids, size_t *n, size_t *cap,
		struct bpe_info *info)
{
	const unsigned char *s = (const unsigned char *)text;
	struct bpe_cache *c = get_cache(t);
	if (info) {
		memset(info, 0, sizeof *info);
		info->invalid = bpe_utf8_invalid(text, len, &info->first_invalid);
		const char *z = memchr(text, 0, len);
		if (z) {
			info->first_nul = (size_t)(z - text);
			for (; z; z = memchr(z + 1, 0, len - (size_t)(z + 1 - text)))
				info->nul++;
		}
	}
	/* a token is at least one byte: len ids always suffice */
	reserve(ids, cap, *n + len);
	uint32_t *out = *ids;
	size_t k = *n;
	for (size_t i = 0; i < len;) {
		size_t end = next_piece(s, len, i);
		const unsigned char *p = s + i;
		size_t m = end - i;
		i = end;
		if (m == 1) {
			out[k++] = t->byte_id[p[0]];
			continue;
		}
		if (m > CACHE_MAX_KEY) {
			k += bpe_merge_piece(t, p, m, 0, out + k);
			continue;
		}
		uint64_t h = hash_bytes(p, m) | 1; /* 0 marks an empty slot */
		uint32_t slot = (uint32_t)h & c->mask;
		for (;;) {
			struct centry *e = &c->tab[slot];
			if (!e->hash)
				break;
			if (e->hash == h && e->klen == m && keq(c->kbytes + e->koff, p, m)) {
				if (e->nid == 1) {
					out[k++] = e->val;
				} else {
					memcpy(out + k, c->ids + e->val, e->nid * sizeof *out);
					k += e->nid;
				}
				goto next;
			}
			slot = (slot + 1) & c->mask;
		}
		{
			uint32_t id = bpe_lookup(t, p, m);
			size_t nid;
			if (id != BPE_NONE) {
				c->tmp[0] = id;
				nid = 1;
			} else {
				nid = bpe_merge_piece(t, p, m, 0, c->tmp);
			}
			memcpy(out + k, c->tmp, nid * sizeof *out);
			k += nid;
			cache_put(c, h, p, m, c->tmp, nid);
		}
	next:;
	}
	*n = k;
}

int bpe_decode(const struct bpe *t, const uint32_t *ids, size_t n, char **out, size_t *len, size_t *cap,
	       struct gpt_err *e)
{
	size_t need = 0;
	for (size_t i = 0; i < n; i++) {
		if (ids[i] >= t->n_vocab)
			return gpt_errf(e, "token %u (at %zu) is not in the vocabulary of %u tokens", ids[i], i,
					t->n_vocab);
		need += t->off[ids[i] + 1] - t->off[ids[i]];
	}
	if (*len + need + 1 > *cap) {
		size_t c = *cap ? *cap : 256;
		while (c < *len + need + 1)
			c *= 2;
		*out = xrealloc(*out, c);
		*cap = c;
	}
	char *o = *out + *len;
	for (size_t i = 0; i < n; i++) {
		uint32_t a = t->off[ids[i]], b = t->off[ids[i] + 1];
		memcpy(o, t->bytes + a, b - a);
		o += b - a;
	}
	*len += need;
	(*out)[*len] = 0;
	return 0;
}

void bpe_free(struct bpe *t)
{
	if (!t)
		return;
	pthread_key_delete(t->key);
	for (struct bpe_cache *c = t->caches, *nx; c; c = nx) {
		nx = c->next;
		free(c->tab);
		free(c->kbytes);
		free(c->ids);
		free(c);
	}
	pthread_mutex_destroy(&t->lock);
	free(t->bytes);
	free(t->off);
	free(t->slots);
	free(t);
}
