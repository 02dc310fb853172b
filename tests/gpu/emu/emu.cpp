/*
 * emu.cpp - host emulation of the CUDA runtime and of the warp-level
 * built-ins used by the attention kernels. See emu.h.
 *
 * Threads are coroutines run round-robin by one OS thread (entered first
 * through makecontext/swapcontext on their own stack, then switched with
 * _setjmp/_longjmp, which skip the signal-mask system call; the build
 * undefines _FORTIFY_SOURCE, whose longjmp check rejects stack changes); a
 * barrier (block or warp) makes a coroutine yield until all live threads
 * of its group have arrived. A scheduler round in which no thread arrives
 * anywhere, leaves or finishes is a deadlock and aborts.
 *
 * EMU_SCHED=rr (default) resumes the threads round-robin, so the warps of
 * a block advance nearly in step; EMU_SCHED=warp runs one warp at a time
 * until all its threads wait at __syncthreads (warp order reversed every
 * round, and between one block and the next), the most unfair order: with EMU_CP=now a warp that runs ahead
 * overwrites shared memory the others have yet to read, which exposes a
 * missing __syncthreads. EMU_SCHED=wg does the same with warpgroups (128
 * threads) as the unit: the warps of a warpgroup, tied to each other by
 * every wgmma, advance together, and one warpgroup runs ahead of the
 * other until a __syncthreads or a wait stops it (with EMU_CP=now, a
 * stage refilled by TMA while the other warpgroup still reads it; with
 * EMU_CP=tma, TMA loads at issue but wgmma and cp.async deferred, also a
 * refill while the other warpgroup's products that read the stage are
 * issued but not yet waited for).
 */
#include "emu.h"

#include <cudaTypedefs.h>

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <ucontext.h>

#include <deque>
#include <map>
#include <vector>

dim3 threadIdx, blockIdx, blockDim, gridDim;
alignas(128) unsigned char emu_shared[EMU_SMEM_BYTES];

static void emu_die(const char *what)
{
	fprintf(stderr, "emu: block (%u,%u,%u) thread %u: %s\n", blockIdx.x, blockIdx.y, blockIdx.z,
	        threadIdx.x, what);
	abort();
}

/* ---- bf16 (round to nearest even) ---- */
uint16_t emu_f2bf(float f)
{
	uint32_t u;
	memcpy(&u, &f, 4);
	if ((u & 0x7fffffffu) > 0x7f800000u)
		return (uint16_t)((u >> 16) | 0x40);
	return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
float emu_bf2f(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* ---- scheduler ---- */
struct cp_op {
	uint32_t dst;
	const void *src;
};
struct bulk_op {
	void *dst;
	uint32_t src, bytes;
	bool add;
	bool tensor = false; /* a TMA store: the box of tmap at (c0, c1) */
	CUtensorMap tmap;
	int c0 = 0, c1 = 0;
};
struct wg_op {
	float *d;
	int n, ta, tb, acc, regs;
	uint64_t da, db;
	uint32_t a[32][4]; /* with regs: the A registers of the warp's 32 lanes */
};
struct thr {
	ucontext_t ctx;
	jmp_buf jb;
	bool done, started, at_sync; /* at_sync: waiting in __syncthreads */
	std::vector<cp_op> open;              /* issued, not committed */
	std::deque<std::vector<cp_op>> groups; /* committed, not retired */
	std::vector<bulk_op> bopen;               /* bulk copies issued, not committed */
	std::deque<std::vector<bulk_op>> bgroups; /* committed, not performed */
	std::vector<wg_op> wopen;               /* wgmma issued, not committed */
	std::deque<std::vector<wg_op>> wgroups; /* committed, not performed */
};
struct bar {
	int count = 0;
	unsigned gen = 0;
};

static const size_t STACK = 256 * 1024;
static std::vector<thr> th;
static char *stacks;
static ucontext_t sched;
static jmp_buf sched_jb;
static int cur, nthr, live;
static uint64_t progress;
static const std::function<void()> *body;
static bar block_bar, warp_bar[32], wgrp_bar[8];
static size_t smem_limit;
static int cp_defer = 1, sched_warp = 0; /* sched_warp: 0, or the threads of a unit (32, 128) */
static int tma_defer = 1; /* EMU_CP=tma: 0 (TMA loads at issue), cp_defer 1 */

struct warp_x {
	uint32_t addr[32], a[32][4], b[32][2];
	float c[32][4], f[32];
	uint32_t u[32];
};
static warp_x wx[32];

static void yield_(void)
{
	if (!_setjmp(th[cur].jb))
		_longjmp(sched_jb, 1);
}

static int live_in_warp(int w)
{
	int n = 0;
	for (int i = w * 32; i < nthr && i < w * 32 + 32; i++)
		n += !th[i].done;
	return n;
}

static void barrier(bar &b, int expected)
{
	unsigned gen = b.gen;
	progress++;
	if (++b.count == expected) {
		b.count = 0;
		b.gen++;
		return;
	}
	while (b.gen == gen)
		yield_();
}

static void warp_sync(void) { barrier(warp_bar[threadIdx.x >> 5], live_in_warp(threadIdx.x >> 5)); }

/* the 4 warps of a warpgroup */
static void wgrp_sync(void)
{
	const int w = threadIdx.x >> 7;
	int n = 0;
	for (int i = 4 * w; i < 4 * w + 4; i++)
		n += live_in_warp(i);
	barrier(wgrp_bar[w], n);
}

void __syncthreads(void)
{
	th[cur].at_sync = true;
	barrier(block_bar, live);
	th[cur].at_sync = false;
}
void __syncwarp(unsigned) { warp_sync(); }

/* named barriers 1..15 (emu.h); expected: the n of the phase begun, 0 if none */
struct named_bar {
	bar b;
	int expected = 0;
};
static named_bar named[16];

static named_bar &named_arrive(int id, int n, const char *what)
{
	char msg[160];
	if (id < 1 || id > 15 || n < 32 || n % 32 || n > nthr) {
		snprintf(msg, sizeof msg, "%s %d, %d: id not in 1..15 or thread count not a multiple "
		         "of 32 within the block", what, id, n);
		emu_die(msg);
	}
	named_bar &nb = named[id];
	if (nb.expected && nb.expected != n) {
		snprintf(msg, sizeof msg, "%s %d, %d: the phase was begun with thread count %d", what,
		         id, n, nb.expected);
		emu_die(msg);
	}
	nb.expected = n;
	progress++;
	if (++nb.b.count == n) {
		nb.b.count = 0;
		nb.b.gen++;
		nb.expected = 0;
	}
	return nb;
}

void emu_bar_sync(int id, int n)
{
	const unsigned gen = named[id < 1 || id > 15 ? 0 : id].b.gen;
	named_bar &nb = named_arrive(id, n, "bar.sync");
	while (nb.b.gen == gen)
		yield_();
}

void emu_bar_arrive(int id, int n) { named_arrive(id, n, "bar.arrive"); }

float __shfl_xor_sync(unsigned, float v, int m)
{
	const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	wx[w].f[lane] = v;
	warp_sync();
	float r = wx[w].f[lane ^ m];
	warp_sync();
	return r;
}

/* Lane src (of the warp, src & 31) gives v; a bit copy. */
uint32_t __shfl_sync(unsigned, uint32_t v, int src)
{
	const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	wx[w].u[lane] = v;
	warp_sync();
	uint32_t r = wx[w].u[src & 31];
	warp_sync();
	return r;
}

static void trampoline(void)
{
	(*body)();
	if (!th[cur].open.empty() || !th[cur].groups.empty())
		emu_die("exits with cp.async copies not waited for");
	if (!th[cur].bopen.empty() || !th[cur].bgroups.empty())
		emu_die("exits with bulk copies not waited for");
	if (!th[cur].wopen.empty() || !th[cur].wgroups.empty())
		emu_die("exits with wgmma not waited for");
	th[cur].done = true;
	live--;
	progress++;
	_longjmp(sched_jb, 1); /* never returns: its stack is dropped */
}

static void resume(int i)
{
	if (th[i].done)
		return;
	cur = i;
	threadIdx = dim3((unsigned)i, 0, 0);
	if (!_setjmp(sched_jb)) {
		if (th[i].started)
			_longjmp(th[i].jb, 1);
		th[i].started = true;
		swapcontext(&sched, &th[i].ctx);
	}
}

static void mbar_block_start(void);
static void mbar_block_end(void);

static void run_block(void)
{
	for (int i = 0; i < nthr; i++) {
		thr &t = th[i];
		getcontext(&t.ctx);
		t.ctx.uc_stack.ss_sp = stacks + (size_t)i * STACK;
		t.ctx.uc_stack.ss_size = STACK;
		t.ctx.uc_link = NULL;
		makecontext(&t.ctx, trampoline, 0);
		t.done = t.started = t.at_sync = false;
		t.open.clear();
		t.groups.clear();
		t.bopen.clear();
		t.bgroups.clear();
		t.wopen.clear();
		t.wgroups.clear();
	}
	live = nthr;
	mbar_block_start();
	block_bar = bar();
	for (auto &b : warp_bar)
		b = bar();
	for (auto &b : wgrp_bar)
		b = bar();
	for (auto &b : named)
		b = named_bar();
	const int nw = sched_warp ? (nthr + sched_warp - 1) / sched_warp : 0;
	static unsigned nblocks; /* the order of the first round alternates between blocks */
	nblocks++;
	for (int round = 0; live > 0; round++) {
		uint64_t p0 = progress;
		if (!sched_warp) {
			for (int i = 0; i < nthr; i++)
				resume(i);
		} else {
			for (int k = 0; k < nw; k++) {
				const int w = (round + nblocks) & 1 ? nw - 1 - k : k;
				for (;;) { /* this unit until it waits at __syncthreads or ends */
					uint64_t p1 = progress;
					bool any = false;
					for (int i = w * sched_warp; i < nthr && i < (w + 1) * sched_warp; i++)
						if (!th[i].done && !th[i].at_sync)
							resume(i), any = true;
					if (!any || progress == p1)
						break;
				}
			}
			for (int i = 0; i < nthr; i++) /* threads released from __syncthreads */
				if (th[i].at_sync)
					resume(i);
		}
		if (progress == p0 && live > 0)
			emu_die("deadlock: every live thread waits at a barrier (or for an mbarrier "
			        "phase that cannot complete)");
	}
	for (int id = 1; id < 16; id++)
		if (named[id].b.count) {
			char msg[120];
			snprintf(msg, sizeof msg, "block ends inside a phase of named barrier %d (%d of "
			         "%d threads arrived)", id, named[id].b.count, named[id].expected);
			emu_die(msg);
		}
	mbar_block_end();
}

static std::map<const void *, int> smem_attr;

cudaError_t emu_set_smem_limit(const void *kernel, int bytes)
{
	if (bytes < 0 || bytes > EMU_SMEM_BYTES)
		return 1;
	smem_attr[kernel] = bytes;
	return cudaSuccess;
}

void emu_launch(dim3 grid, dim3 block, size_t smem, const void *kernel, std::function<void()> fn)
{
	if (block.y != 1 || block.z != 1 || block.x > 1024 || block.x == 0)
		emu_die("launch: bad block shape");
	auto it = smem_attr.find(kernel);
	if (smem > 48 * 1024 && (it == smem_attr.end() || (size_t)it->second < smem))
		emu_die("launch: > 48 KB dynamic shared memory without cudaFuncSetAttribute");
	if (!stacks) {
		stacks = (char *)malloc(STACK * 1024);
		th.resize(1024);
		const char *m = getenv("EMU_CP");
		cp_defer = !(m && !strcmp(m, "now"));
		tma_defer = cp_defer && !(m && !strcmp(m, "tma"));
		m = getenv("EMU_SCHED");
		sched_warp = !m ? 0 : !strcmp(m, "warp") ? 32 : !strcmp(m, "wg") ? 128 : 0;
	}
	nthr = (int)block.x;
	blockDim = block, gridDim = grid, smem_limit = smem;
	body = &fn;
	for (unsigned z = 0; z < grid.z; z++)
		for (unsigned y = 0; y < grid.y; y++)
			for (unsigned x = 0; x < grid.x; x++) {
				blockIdx = dim3(x, y, z);
				memset(emu_shared, 0xFF, sizeof emu_shared);
				run_block();
			}
}

/* ---- shared memory, cp.async ---- */
uint32_t att_smem(const void *p)
{
	const unsigned char *c = (const unsigned char *)p;
	if (c < emu_shared || c >= emu_shared + EMU_SMEM_BYTES)
		emu_die("att_smem: not a shared-memory pointer");
	return (uint32_t)(c - emu_shared);
}

static void check_smem(uint32_t addr, uint32_t n, const char *what)
{
	if (addr % 16 || (size_t)addr + n > smem_limit) {
		char msg[160];
		snprintf(msg, sizeof msg, "%s: shared address %u (size %u) misaligned or beyond %zu",
		         what, addr, n, smem_limit);
		emu_die(msg);
	}
}

void att_cp16(uint32_t dst, const void *src)
{
	check_smem(dst, 16, "cp.async");
	if ((uintptr_t)src % 16)
		emu_die("cp.async: global source not 16-byte aligned");
	if (cp_defer)
		th[cur].open.push_back({dst, src});
	else
		memcpy(emu_shared + dst, src, 16);
}

void att_cp_commit(void)
{
	th[cur].groups.push_back(std::move(th[cur].open));
	th[cur].open.clear();
}

void emu_cp_wait(int n)
{
	auto &g = th[cur].groups;
	while ((int)g.size() > n) {
		for (const cp_op &op : g.front())
			memcpy(emu_shared + op.dst, op.src, 16);
		g.pop_front();
	}
}

/* ---- bulk copies shared -> global, flags ----
 * A bulk copy reads shared memory and writes global memory when a wait
 * retires its group (EMU_CP=defer) or at issue (EMU_CP=now), so with defer a
 * stage overwritten before its wait_group.read shows up as wrong sums. */
static void tma_store_perform(const bulk_op &op);

static void bulk_perform(const bulk_op &op)
{
	if (op.tensor) {
		tma_store_perform(op);
	} else if (op.add) {
		float *d = (float *)op.dst;
		const float *src = (const float *)(emu_shared + op.src);
		for (uint32_t i = 0; i < op.bytes / 4; i++)
			d[i] += src[i];
	} else {
		memcpy(op.dst, emu_shared + op.src, op.bytes);
	}
}

static void bulk_issue(void *g, uint32_t s, uint32_t bytes, bool add)
{
	check_smem(s, bytes, "cp.async.bulk");
	if ((uintptr_t)g % 16 || bytes % 16 || bytes == 0)
		emu_die("cp.async.bulk: global address or size not a multiple of 16");
	bulk_op op;
	op.dst = g, op.src = s, op.bytes = bytes, op.add = add;
	if (cp_defer)
		th[cur].bopen.push_back(op);
	else
		bulk_perform(op);
}

void att_bulk_store(void *g, uint32_t s, uint32_t bytes) { bulk_issue(g, s, bytes, false); }
void att_bulk_add(float *g, uint32_t s, uint32_t bytes) { bulk_issue(g, s, bytes, true); }

void att_bulk_commit(void)
{
	th[cur].bgroups.push_back(std::move(th[cur].bopen));
	th[cur].bopen.clear();
}

void emu_bulk_wait(int n)
{
	auto &g = th[cur].bgroups;
	while ((int)g.size() > n) {
		for (const bulk_op &op : g.front())
			bulk_perform(op);
		g.pop_front();
	}
}

void att_flag_wait(const int *p, int v)
{
	/* blocks run one after another in ticket order: a flag not yet set
	 * means a wait on a later block, which would never finish */
	if (*p < v) {
		char msg[120];
		snprintf(msg, sizeof msg, "flag wait for %d reads %d: waits on a block not yet run", v, *p);
		emu_die(msg);
	}
}

/* ---- mbarriers, TMA tensor loads (sm_90) ----
 * PTX ISA, "mbarrier" and "cp.async.bulk.tensor": a barrier has an
 * arrival count set at init, pending arrivals and a transaction count (tx:
 * bytes announced by expect_tx minus bytes completed by copies; it may go
 * negative while a copy completes before its announcement); its current
 * phase completes when pending arrivals and tx are both 0, and the phase
 * bit flips. try_wait.parity p returns true unless the current phase has
 * parity p (it is the phase that has not completed). State lives in a side
 * table keyed by the shared address; the 8 shared bytes hold a marker that
 * every use checks. A barrier initialised by one thread may be used by the
 * others only after a __syncthreads (on the device, after the init fences
 * and a barrier). A TMA load is performed at issue (EMU_CP=now, and
 * EMU_CP=tma, which defers the rest: a refill of a stage that a wgmma
 * issued earlier still reads, before its wg_wait, shows up as wrong
 * results) or kept on its barrier and performed, in issue order, when a
 * thread's wait would block on the phase it belongs to (EMU_CP=defer), so
 * a wait with the wrong parity reads stale shared memory (0xFF: NaN); a
 * phase that never completes leaves its waiters spinning until the
 * scheduler finds a round without progress (deadlock). The block must end
 * with no copy pending and every barrier between phases. */
struct emu_tmap { /* what the emulated encoder stores in a CUtensorMap */
	uint32_t magic, rank, esize, swizzle;
	const unsigned char *base;
	uint64_t dim[5];
	uint64_t stride[4]; /* bytes, of dimensions 1..rank-1 */
	uint32_t box[5];
	uint8_t estr[5];
};
static_assert(sizeof(emu_tmap) <= sizeof(CUtensorMap), "emu_tmap must fit a CUtensorMap");
static const uint32_t TMAP_MAGIC = 0x544d4150; /* "TMAP" */
static const uint64_t MBAR_MARK = 0x4d42415252494552ull; /* "MBARRIER" */

struct tma_op {
	uint32_t dst;
	emu_tmap map;
	int c[3];
};
struct mbar_st {
	int count = 0, pending = 0;
	int64_t tx = 0;
	unsigned phase = 0; /* completed phases; the current one has parity phase & 1 */
	int init_thread = -1;
	unsigned init_gen = 0; /* block_bar.gen at the init */
	std::deque<tma_op> ops; /* issued copies not performed (EMU_CP=defer) */
};
static std::map<uint32_t, mbar_st> mbars;

static void mbar_block_start(void) { mbars.clear(); }

static void mbar_block_end(void)
{
	for (auto &kv : mbars) {
		char msg[160];
		if (!kv.second.ops.empty()) {
			snprintf(msg, sizeof msg, "block ends with TMA copies on the mbarrier at %u "
			         "never waited for", kv.first);
			emu_die(msg);
		}
		if (kv.second.pending != kv.second.count || kv.second.tx != 0) {
			snprintf(msg, sizeof msg, "block ends inside a phase of the mbarrier at %u "
			         "(%d of %d arrivals pending, tx %lld)", kv.first, kv.second.pending,
			         kv.second.count, (long long)kv.second.tx);
			emu_die(msg);
		}
	}
	mbars.clear();
}

static mbar_st &mbar_get(uint32_t bar, const char *what)
{
	char msg[160];
	auto it = mbars.find(bar);
	uint64_t mark;
	if (it == mbars.end()) {
		snprintf(msg, sizeof msg, "%s: no mbarrier initialised at shared address %u", what, bar);
		emu_die(msg);
	}
	memcpy(&mark, emu_shared + bar, 8);
	if (mark != MBAR_MARK) {
		snprintf(msg, sizeof msg, "%s: the mbarrier at %u was overwritten", what, bar);
		emu_die(msg);
	}
	mbar_st &b = it->second;
	if (b.init_thread != (int)threadIdx.x && block_bar.gen == b.init_gen) {
		snprintf(msg, sizeof msg, "%s: mbarrier at %u used before a __syncthreads after its "
		         "init by thread %d", what, bar, b.init_thread);
		emu_die(msg);
	}
	return b;
}

static void mbar_tx(mbar_st &b, int64_t bytes)
{
	b.tx += bytes;
	if (b.tx > (1 << 20) - 1 || b.tx < -((1 << 20) - 1))
		emu_die("mbarrier: transaction count out of range");
	if (b.pending == 0 && b.tx == 0) {
		b.phase++;
		b.pending = b.count;
	}
	progress++;
}

void att_mbar_init(uint32_t bar, int count)
{
	if (bar % 8 || (size_t)bar + 8 > smem_limit)
		emu_die("mbarrier.init: shared address misaligned or beyond the dynamic shared memory");
	if (count < 1 || count > (1 << 20) - 1)
		emu_die("mbarrier.init: arrival count out of range");
	auto it = mbars.find(bar);
	if (it != mbars.end() &&
	    (!it->second.ops.empty() || it->second.pending != it->second.count || it->second.tx))
		emu_die("mbarrier.init: the barrier is in the middle of a phase");
	mbar_st b;
	b.count = b.pending = count;
	b.init_thread = (int)threadIdx.x;
	b.init_gen = block_bar.gen;
	mbars[bar] = b;
	memcpy(emu_shared + bar, &MBAR_MARK, 8);
}

static void tma_perform(mbar_st &b, const tma_op &op)
{
	const emu_tmap &m = op.map;
	uint32_t n = 0;
	const uint32_t bz = m.rank > 2 ? m.box[2] : 1; /* rank 2: one plane, c[2] = 0 */
	for (uint32_t z = 0; z < bz; z++)
		for (uint32_t y = 0; y < m.box[1]; y++)
			for (uint32_t x = 0; x < m.box[0]; x++, n++) {
				/* element n of the box, row-major, innermost dimension first */
				const int64_t g0 = (int64_t)op.c[0] + x, g1 = (int64_t)op.c[1] + y,
				              g2 = (int64_t)op.c[2] + z;
				uint32_t a = op.dst + n * m.esize;
				if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B)
					a ^= ((a >> 7) & 7) << 4;
				if (g0 < 0 || g1 < 0 || g2 < 0 || (uint64_t)g0 >= m.dim[0] ||
				    (uint64_t)g1 >= m.dim[1] || (uint64_t)g2 >= (m.rank > 2 ? m.dim[2] : 1))
					memset(emu_shared + a, 0, m.esize); /* out of bounds: zeros */
				else
					memcpy(emu_shared + a,
					       m.base + (uint64_t)g0 * m.esize + (uint64_t)g1 * m.stride[0] +
					               (uint64_t)g2 * m.stride[1],
					       m.esize);
			}
	mbar_tx(b, -(int64_t)n * m.esize);
}

void att_mbar_arrive_expect_tx(uint32_t bar, uint32_t bytes)
{
	mbar_st &b = mbar_get(bar, "mbarrier.arrive.expect_tx");
	if (b.pending == 0)
		emu_die("mbarrier.arrive: every arrival of the phase has happened");
	b.tx += bytes; /* expect-tx, then the arrival */
	b.pending--;
	mbar_tx(b, 0);
}

void att_mbar_arrive(uint32_t bar)
{
	mbar_st &b = mbar_get(bar, "mbarrier.arrive");
	if (b.pending == 0)
		emu_die("mbarrier.arrive: every arrival of the phase has happened");
	b.pending--;
	mbar_tx(b, 0);
}

void att_mbar_wait(uint32_t bar, int parity)
{
	if (parity != 0 && parity != 1)
		emu_die("mbarrier.try_wait.parity: parity not 0 or 1");
	for (;;) {
		mbar_st &b = mbar_get(bar, "mbarrier.try_wait.parity");
		if ((int)(b.phase & 1) != parity)
			break; /* the phase of that parity has completed */
		if (!b.ops.empty()) { /* EMU_CP=defer: the copies land now */
			tma_op op = b.ops.front();
			b.ops.pop_front();
			tma_perform(b, op);
			continue;
		}
		yield_();
	}
	progress++;
}

static void tma_load(uint32_t dst, const void *tmap, int rank, int c0, int c1, int c2,
                     uint32_t bar)
{
	tma_op op;
	memcpy(&op.map, tmap, sizeof op.map);
	const emu_tmap &m = op.map;
	if (m.magic != TMAP_MAGIC)
		emu_die("cp.async.bulk.tensor: not a tensor map from cuTensorMapEncodeTiled");
	if ((int)m.rank != rank)
		emu_die(rank == 3 ? "cp.async.bulk.tensor.3d: the tensor map is not of rank 3"
		                  : "cp.async.bulk.tensor.2d: the tensor map is not of rank 2");
	for (int i = 0; i < rank; i++)
		if (m.estr[i] != 1)
			emu_die("cp.async.bulk.tensor: element strides other than 1 are not emulated");
	const uint32_t bytes = m.box[0] * m.box[1] * (rank > 2 ? m.box[2] : 1) * m.esize;
	check_smem(dst, bytes, "cp.async.bulk.tensor");
	if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? dst % 1024 : dst % 128)
		emu_die("cp.async.bulk.tensor: shared destination not 1024-byte (128-byte swizzle) "
		        "or 128-byte aligned");
	if (dst < bar + 8 && bar < dst + bytes)
		emu_die("cp.async.bulk.tensor: the destination overlaps its mbarrier");
	mbar_st &b = mbar_get(bar, "cp.async.bulk.tensor");
	op.dst = dst, op.c[0] = c0, op.c[1] = c1, op.c[2] = c2;
	if (tma_defer)
		b.ops.push_back(op);
	else
		tma_perform(b, op);
}

/* TMA store: a bulk-group copy (performed when a wait retires its group,
 * or at issue with EMU_CP=now); box elements outside the tensor are
 * skipped, as on the device. */
static void tma_store_perform(const bulk_op &op)
{
	emu_tmap m;
	memcpy(&m, &op.tmap, sizeof m);
	uint32_t n = 0;
	for (uint32_t y = 0; y < m.box[1]; y++)
		for (uint32_t x = 0; x < m.box[0]; x++, n++) {
			const int64_t g0 = (int64_t)op.c0 + x, g1 = (int64_t)op.c1 + y;
			uint32_t a = op.src + n * m.esize;
			if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B)
				a ^= ((a >> 7) & 7) << 4;
			if (g0 < 0 || g1 < 0 || (uint64_t)g0 >= m.dim[0] || (uint64_t)g1 >= m.dim[1])
				continue;
			memcpy((unsigned char *)m.base + (uint64_t)g0 * m.esize + (uint64_t)g1 * m.stride[0],
			       emu_shared + a, m.esize);
		}
}

void att_tma_store_2d(const void *tmap, int c0, int c1, uint32_t src)
{
	bulk_op op;
	memcpy(&op.tmap, tmap, sizeof op.tmap);
	emu_tmap m;
	memcpy(&m, tmap, sizeof m);
	if (m.magic != TMAP_MAGIC)
		emu_die("cp.async.bulk.tensor store: not a tensor map from cuTensorMapEncodeTiled");
	if (m.rank != 2)
		emu_die("cp.async.bulk.tensor.2d store: the tensor map is not of rank 2");
	if (m.estr[0] != 1 || m.estr[1] != 1)
		emu_die("cp.async.bulk.tensor: element strides other than 1 are not emulated");
	const uint32_t bytes = m.box[0] * m.box[1] * m.esize;
	check_smem(src, bytes, "cp.async.bulk.tensor store");
	if (m.swizzle == CU_TENSOR_MAP_SWIZZLE_128B ? src % 1024 : src % 128)
		emu_die("cp.async.bulk.tensor store: shared source not 1024-byte (128-byte swizzle) "
		        "or 128-byte aligned");
	op.dst = NULL, op.src = src, op.bytes = bytes, op.add = false;
	op.tensor = true, op.c0 = c0, op.c1 = c1;
	if (cp_defer)
		th[cur].bopen.push_back(op);
	else
		tma_store_perform(op);
}

void att_tma_load_3d(uint32_t dst, const void *tmap, int c0, int c1, int c2, uint32_t bar)
{
	tma_load(dst, tmap, 3, c0, c1, c2, bar);
}
void att_tma_load_2d(uint32_t dst, const void *tmap, int c0, int c1, uint32_t bar)
{
	tma_load(dst, tmap, 2, c0, c1, 0, bar);
}

/* The emulated cuTensorMapEncodeTiled: the documented argument checks
 * (CUDA_ERROR_INVALID_VALUE), the modes the emulated loads do not model
 * (interleave, 32/64-byte swizzles, NaN fill) abort. */
static CUresult emu_encode_tiled(CUtensorMap *tm, CUtensorMapDataType dtype, cuuint32_t rank,
                                 void *addr, const cuuint64_t *dim, const cuuint64_t *stride,
                                 const cuuint32_t *box, const cuuint32_t *estr,
                                 CUtensorMapInterleave il, CUtensorMapSwizzle sw,
                                 CUtensorMapL2promotion l2, CUtensorMapFloatOOBfill oob)
{
	static const uint32_t esize[] = {1, 2, 4, 4, 8, 8, 2, 4, 8, 2};
	if (!tm || (uintptr_t)tm % 64 || (unsigned)dtype > CU_TENSOR_MAP_DATA_TYPE_BFLOAT16 ||
	    rank < 1 || rank > 5 || !addr || (uintptr_t)addr % 16 || (unsigned)l2 > 3 ||
	    (unsigned)oob > 1 || (unsigned)sw > CU_TENSOR_MAP_SWIZZLE_128B || (unsigned)il > 2)
		return CUDA_ERROR_INVALID_VALUE;
	if (il != CU_TENSOR_MAP_INTERLEAVE_NONE || oob != CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE ||
	    (sw != CU_TENSOR_MAP_SWIZZLE_NONE && sw != CU_TENSOR_MAP_SWIZZLE_128B))
		emu_die("cuTensorMapEncodeTiled: interleave, NaN fill and 32/64-byte swizzles are "
		        "not emulated");
	emu_tmap m;
	memset(&m, 0, sizeof m);
	m.magic = TMAP_MAGIC, m.rank = rank, m.esize = esize[dtype], m.swizzle = sw;
	m.base = (const unsigned char *)addr;
	for (uint32_t i = 0; i < rank; i++) {
		if (dim[i] == 0 || dim[i] > (1ull << 32) || box[i] == 0 || box[i] > 256 || estr[i] == 0 ||
		    estr[i] > 8)
			return CUDA_ERROR_INVALID_VALUE;
		m.dim[i] = dim[i], m.box[i] = box[i], m.estr[i] = (uint8_t)estr[i];
		if (i + 1 < rank) {
			if (stride[i] % 16 || stride[i] >= (1ull << 40))
				return CUDA_ERROR_INVALID_VALUE;
			m.stride[i] = stride[i];
		}
	}
	if (box[0] * m.esize % 16)
		return CUDA_ERROR_INVALID_VALUE;
	if (sw == CU_TENSOR_MAP_SWIZZLE_128B && box[0] * m.esize > 128)
		return CUDA_ERROR_INVALID_VALUE;
	memset(tm, 0, sizeof *tm);
	memcpy(tm, &m, sizeof m);
	return CUDA_SUCCESS;
}

/* ---- ldmatrix ---- */
static void ldsm(uint32_t r[4], uint32_t addr, bool trans)
{
	const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	check_smem(addr, 16, "ldmatrix");
	wx[w].addr[lane] = addr;
	warp_sync();
	for (int i = 0; i < 4; i++) {
		const uint32_t *rows = wx[w].addr + 8 * i; /* row j of matrix i: lane 8i + j */
		uint16_t lo, hi;
		if (!trans) { /* row lane/4, columns 2(lane%4), +1 */
			memcpy(&lo, emu_shared + rows[lane >> 2] + 4 * (lane & 3), 2);
			memcpy(&hi, emu_shared + rows[lane >> 2] + 4 * (lane & 3) + 2, 2);
		} else { /* rows 2(lane%4), +1, column lane/4 */
			memcpy(&lo, emu_shared + rows[2 * (lane & 3)] + 2 * (lane >> 2), 2);
			memcpy(&hi, emu_shared + rows[2 * (lane & 3) + 1] + 2 * (lane >> 2), 2);
		}
		r[i] = (uint32_t)lo | (uint32_t)hi << 16;
	}
	warp_sync();
}
void att_ldsm(uint32_t r[4], uint32_t addr) { ldsm(r, addr, false); }
void att_ldsm_t(uint32_t r[4], uint32_t addr) { ldsm(r, addr, true); }

/* ---- mma.sync.m16n8k16.row.col.f32.bf16.bf16.f32 ---- */
static float frag_bf(uint32_t reg, int half) { return emu_bf2f((uint16_t)(reg >> (16 * half))); }

void att_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1)
{
	const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	warp_x &x = wx[w];
	memcpy(x.a[lane], a, 16);
	x.b[lane][0] = b0, x.b[lane][1] = b1;
	warp_sync();
	const int g = lane >> 2, t = lane & 3;
	float out[4];
	for (int i = 0; i < 4; i++) {
		const int row = g + 8 * (i >> 1), col = 2 * t + (i & 1); /* c0..c3 */
		double s = c[i];
		for (int k = 0; k < 16; k++) {
			/* A[row][k]: lane 4 (row%8) + (k%8)/2, register (row>=8) + 2 (k>=8) */
			float av = frag_bf(x.a[4 * (row & 7) + ((k & 7) >> 1)][(row >= 8) + 2 * (k >= 8)],
			                   k & 1);
			/* B[k][col]: lane 4 col + (k%8)/2, register k>=8 */
			float bv = frag_bf(x.b[4 * col + ((k & 7) >> 1)][k >= 8], k & 1);
			s += (double)av * bv;
		}
		out[i] = (float)s;
	}
	warp_sync();
	memcpy(c, out, 16);
}

/* ---- wgmma.mma_async m64nNk16 .f32.bf16.bf16 (sm_90a) ----
 * Shared-memory operands through a descriptor (PTX ISA, "Matrix
 * Descriptor Format" and "Canonical Layouts"): start address, leading and
 * stride byte offsets (each stored >> 4), 128-byte swizzle only (mode 1,
 * base offset 0). Element (i, k) of an operand, i its M or N index, k its
 * K index (0..15), with T = 8 bf16 = 16 bytes:
 *   K-major  ((8,m),(T,2)):((8T,SBO),(1,T)):  (i/8) SBO + (i%8) 128 + 2k;
 *   MN-major ((T,8,m),(8,2)):((1,T,LBO),(8T,SBO)):
 *            (i/64) LBO + 2 (i%64) + (k/8) SBO + (k%8) 128;
 * the byte address start + offset then has bits 4..6 XORed with bits 7..9.
 * A from registers: the m16n8k16 A fragment of each warp's 16 rows.
 * Accumulator: warp w of the warpgroup holds rows 16 w.., per n-tile j
 * d[4j..4j+3] = (g, 8j+2t), (g, 8j+2t+1), (g+8, ..), (g+8, ..+1). */
static float wg_smem_elem(uint64_t desc, int i, int k, int mn_major)
{
	const uint32_t start = (uint32_t)(desc & 0x3FFF) << 4;
	const uint32_t lbo = (uint32_t)((desc >> 16) & 0x3FFF) << 4;
	const uint32_t sbo = (uint32_t)((desc >> 32) & 0x3FFF) << 4;
	if ((desc >> 62) != 1 || ((desc >> 49) & 7) != 0)
		emu_die("wgmma: only the 128-byte swizzle with base offset 0 is emulated");
	uint32_t off = mn_major ? (uint32_t)(i / 64) * lbo + 2 * (i % 64) + (uint32_t)(k / 8) * sbo +
	                                  (k % 8) * 128
	                        : (uint32_t)(i / 8) * sbo + (i % 8) * 128 + 2 * k;
	uint32_t addr = start + off;
	addr ^= ((addr >> 7) & 7) << 4;
	if ((size_t)addr + 2 > smem_limit)
		emu_die("wgmma: operand beyond the dynamic shared memory");
	uint16_t h;
	memcpy(&h, emu_shared + addr, 2);
	return emu_bf2f(h);
}

static void wg_perform(const wg_op &op)
{
	const int wi = (threadIdx.x >> 5) & 3, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
	float out[128];
	for (int j = 0; j < op.n / 8; j++)
		for (int e = 0; e < 4; e++) {
			const int rr = g + 8 * (e >> 1), row = 16 * wi + rr, col = 8 * j + 2 * t + (e & 1);
			double s = op.acc ? op.d[4 * j + e] : 0.0;
			for (int k = 0; k < 16; k++) {
				float av;
				if (op.regs) /* lane 4 (rr%8) + (k%8)/2, register (rr>=8) + 2 (k>=8) */
					av = frag_bf(op.a[4 * (rr & 7) + ((k & 7) >> 1)][(rr >= 8) + 2 * (k >= 8)],
					             k & 1);
				else
					av = wg_smem_elem(op.da, row, k, op.ta);
				s += (double)av * wg_smem_elem(op.db, col, k, op.tb);
			}
			out[4 * j + e] = (float)s;
		}
	memcpy(op.d, out, sizeof(float) * op.n / 2);
}

static uint32_t wg_regs[32][32][4]; /* [warp][lane]: A registers being exchanged */

void emu_wg_mma(float *d, int n, uint64_t da, uint64_t db, const uint32_t *a, int ta, int tb,
                int acc)
{
	const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
	if (nthr % 128)
		emu_die("wgmma: the block is not made of whole warpgroups");
	if (n < 8 || n > 256 || n % 8)
		emu_die("wgmma: N must be a multiple of 8 in 8..256");
	wg_op op;
	op.d = d, op.n = n, op.ta = ta, op.tb = tb, op.acc = acc, op.regs = a != NULL;
	op.da = da, op.db = db;
	if (a)
		memcpy(wg_regs[w][lane], a, 16);
	wgrp_sync(); /* .sync.aligned: the whole warpgroup issues it */
	if (a)
		memcpy(op.a, wg_regs[w], sizeof op.a);
	wgrp_sync();
	if (cp_defer)
		th[cur].wopen.push_back(op);
	else
		wg_perform(op);
}

void emu_wg_commit(void)
{
	th[cur].wgroups.push_back(std::move(th[cur].wopen));
	th[cur].wopen.clear();
}

void emu_wg_wait(int n)
{
	auto &g = th[cur].wgroups;
	while ((int)g.size() > n) {
		for (const wg_op &op : g.front())
			wg_perform(op);
		g.pop_front();
	}
}

/* ---- runtime ---- */
extern "C" {
cudaError_t cudaMalloc(void **p, size_t n)
{
	*p = aligned_alloc(256, (n + 255) / 256 * 256 + 256);
	if (!*p)
		return 2;
	memset(*p, 0xA5, n); /* garbage, as on a device */
	return cudaSuccess;
}
cudaError_t cudaFree(void *p)
{
	free(p);
	return cudaSuccess;
}
cudaError_t cudaMemcpy(void *d, const void *s, size_t n, enum cudaMemcpyKind)
{
	memmove(d, s, n);
	return cudaSuccess;
}
cudaError_t cudaMemset(void *p, int v, size_t n)
{
	memset(p, v, n);
	return cudaSuccess;
}
cudaError_t cudaDeviceSynchronize(void) { return cudaSuccess; }
cudaError_t cudaGetLastError(void) { return cudaSuccess; }
const char *cudaGetErrorString(cudaError_t e) { return e ? "emulated error" : "no error"; }
cudaError_t cudaGetDeviceCount(int *n)
{
	*n = 1;
	return cudaSuccess;
}
struct emu_event {
	double t;
};
cudaError_t cudaEventCreate(cudaEvent_t *e)
{
	*e = new emu_event{0};
	return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	e->t = ts.tv_sec + 1e-9 * ts.tv_nsec;
	return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float *ms, cudaEvent_t a, cudaEvent_t b)
{
	*ms = (float)((b->t - a->t) * 1e3);
	return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e)
{
	delete e;
	return cudaSuccess;
}
cudaError_t cudaGetDriverEntryPointByVersion(const char *symbol, void **fn, unsigned version,
                                             unsigned long long,
                                             enum cudaDriverEntryPointQueryResult *status)
{
	const bool ok = !strcmp(symbol, "cuTensorMapEncodeTiled") && version >= 12000;
	*fn = ok ? (void *)&emu_encode_tiled : NULL;
	if (status)
		*status = ok ? cudaDriverEntryPointSuccess : cudaDriverEntryPointSymbolNotFound;
	return cudaSuccess;
}
}
