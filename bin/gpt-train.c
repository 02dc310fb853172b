/*
 * gpt-train - train a GPT: weights, token shards and a schedule stream in;
 * JSON lines, checkpoints and final weights out. See gpt-train(1).
 */
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "dist.h"
#include "schedule.h"
#include "train.h"

static const struct cli_text cli = {
	"gpt-train [OPTION]... -w WEIGHTS --train PATTERN [--val PATTERN] [-s SCHEDULE]",
	"Train a GPT on token shards following a schedule stream (one row per step).\n"
	"\n"
	"Inputs\n"
	"  -w, --weights FILE      initial weights (safetensors, from gpt-init)\n"
	"      --resume FILE       continue from a checkpoint instead (bit-identical)\n"
	"  -t, --train PATTERN     training shards (glob, sorted; repeatable)\n"
	"      --val PATTERN       validation shards (glob; repeatable)\n"
	"  -s, --schedule FILE     schedule stream, '-' for stdin (default '-')\n"
	"Outputs\n"
	"  -o, --output FILE       final weights (safetensors; '.zst' compresses)\n"
	"      --ckpt-dir DIR      where checkpoints go (ckpt_STEP.safetensors)\n"
	"      --keep-ckpts N      keep the newest N checkpoints (default 3; 0 keeps all)\n"
	"      --f32               final weights all F32 (default on the CPU; on a GPU\n"
	"                          the record's dtypes, BF16 embeddings)\n"
	"Batch\n"
	"      --batch-tokens N    tokens per step (default 524288 = 8 x 65536)\n"
	"      --seq-len N         tokens per micro-batch (default 65536)\n"
	"      --val-tokens N      tokens per evaluation (default: 10485760, or what\n"
	"                          the first validation shard holds)\n"
	"Optimizer (multiplied by the stream's lr_scale)\n"
	"      --lr-embed X        Adam, embeddings (default 0.6)\n"
	"      --lr-head X         Adam, lm_head (default 0.008)\n"
	"      --lr-scalar X       Adam, scalars (default 0.04)\n"
	"      --lr-muon X         Muon, hidden matrices (default 0.05)\n"
	"Machine\n"
	"      --device DEV        cpu, cuda or auto (default auto)\n"
	"      --threads N         CPU threads (default: all cores, shared by the ranks\n"
	"                          of a host)\n"
	"Ranks (data-parallel; launchers: torchrun-style env, mpirun, srun)\n"
	"      --gpus N            start N ranks on this machine, one per GPU\n"
	"      --dist-init SPEC    how ranks started by a launcher meet: file:PATH\n"
	"                          (shared file system) or tcp:HOST:PORT (rank 0\n"
	"                          listens; default tcp:$MASTER_ADDR:$MASTER_PORT)\n"
	"      --dist-timeout S    give up on a silent rank after S seconds (default 600)\n"
	"  -q, --quiet             no progress or notes on stderr\n"
	"  -v, --verbose           more notes on stderr\n"
	"  -h, --help              this help\n"
	"  -V, --version           version\n"
	"\n"
	"Writes one JSON line per step, evaluation and checkpoint to stdout.\n"
	"Exit status: 0 done, 1 error, 2 usage, 128+N stopped by signal N.\n",
};

enum { O_RESUME = 256, O_VAL, O_CKPT_DIR, O_KEEP, O_F32, O_BATCH, O_SEQ, O_VALTOK, O_LR_EMBED,
       O_LR_HEAD, O_LR_SCALAR, O_LR_MUON, O_DEVICE, O_THREADS, O_GPUS, O_DIST_INIT, O_DIST_TIMEOUT };

#define SHORTOPTS "w:t:s:o:" CLI_COMMON_SHORT

static const struct option longopts[] = {
	{"weights", required_argument, 0, 'w'},   {"resume", required_argument, 0, O_RESUME},
	{"train", required_argument, 0, 't'},     {"val", required_argument, 0, O_VAL},
	{"schedule", required_argument, 0, 's'},  {"output", required_argument, 0, 'o'},
	{"ckpt-dir", required_argument, 0, O_CKPT_DIR}, {"keep-ckpts", required_argument, 0, O_KEEP},
	{"f32", no_argument, 0, O_F32},           {"batch-tokens", required_argument, 0, O_BATCH},
	{"seq-len", required_argument, 0, O_SEQ}, {"val-tokens", required_argument, 0, O_VALTOK},
	{"lr-embed", required_argument, 0, O_LR_EMBED}, {"lr-head", required_argument, 0, O_LR_HEAD},
	{"lr-scalar", required_argument, 0, O_LR_SCALAR}, {"lr-muon", required_argument, 0, O_LR_MUON},
	{"device", required_argument, 0, O_DEVICE}, {"threads", required_argument, 0, O_THREADS},
	{"gpus", required_argument, 0, O_GPUS},   {"dist-init", required_argument, 0, O_DIST_INIT},
	{"dist-timeout", required_argument, 0, O_DIST_TIMEOUT},
	CLI_COMMON_LONG,                          {0, 0, 0, 0},
};

static double lr_arg(const char *name, const char *s)
{
	double v;
	if (parse_double(s, &v) || v < 0)
		cli_usage_error(&cli, "--%s: '%s' is not a learning rate (a number >= 0)", name, s);
	return v;
}

int main(int argc, char **argv)
{
	util_init(argv[0]);
	struct train_opts o = {0};
	const char **train = xcalloc((size_t)argc, sizeof *train);
	const char **val = xcalloc((size_t)argc, sizeof *val);
	o.train = train;
	o.val = val;
	o.schedule = "-";
	o.keep_ckpts = 3;
	o.val_tokens = -1;
	o.device = ENGINE_AUTO;
	memcpy(o.base_lr, sched_record_base_lr, sizeof o.base_lr);
	int c, gpus = 0;
	long v;
	uint64_t u;
	double x;
	while ((c = getopt_long(argc, argv, SHORTOPTS, longopts, NULL)) != -1) {
		switch (c) {
		case 'w': o.weights = optarg; break;
		case O_RESUME: o.resume = optarg; break;
		case 't': train[o.ntrain++] = optarg; break;
		case O_VAL: val[o.nval++] = optarg; break;
		case 's': o.schedule = optarg; break;
		case 'o': o.output = optarg; break;
		case O_CKPT_DIR: o.ckpt_dir = optarg; break;
		case O_KEEP:
			if (parse_long(optarg, 0, 1000000, &v))
				cli_usage_error(&cli, "--keep-ckpts: '%s' is not a count", optarg);
			o.keep_ckpts = (int)v;
			break;
		case O_F32: o.f32_output = 1; break;
		case O_BATCH:
			if (parse_u64(optarg, &u) || u < 1 || u > (1ull << 40))
				cli_usage_error(&cli, "--batch-tokens: '%s' is not a token count", optarg);
			o.batch_tokens = (int64_t)u;
			break;
		case O_SEQ:
			if (parse_u64(optarg, &u) || u < 1 || u > (1u << 24))
				cli_usage_error(&cli, "--seq-len: '%s' is not a length (1..16777216)", optarg);
			o.seq_len = (int)u;
			break;
		case O_VALTOK:
			if (parse_u64(optarg, &u) || u < 1 || u > (1ull << 40))
				cli_usage_error(&cli, "--val-tokens: '%s' is not a token count", optarg);
			o.val_tokens = (int64_t)u;
			break;
		case O_LR_EMBED: o.base_lr[SCHED_EMBED] = lr_arg("lr-embed", optarg); break;
		case O_LR_HEAD: o.base_lr[SCHED_HEAD] = lr_arg("lr-head", optarg); break;
		case O_LR_SCALAR: o.base_lr[SCHED_SCALAR] = lr_arg("lr-scalar", optarg); break;
		case O_LR_MUON: o.base_lr[SCHED_MUON] = lr_arg("lr-muon", optarg); break;
		case O_DEVICE: engine_cli_device(&cli, optarg, &o.device); break;
		case O_THREADS:
			engine_cli_threads(&cli, optarg);
			o.threads_given = 1;
			break;
		case O_GPUS:
			if (parse_long(optarg, 1, 4096, &v))
				cli_usage_error(&cli, "--gpus: '%s' is not a count (1..4096)", optarg);
			gpus = (int)v;
			break;
		case O_DIST_INIT: o.dist_init = optarg; break;
		case O_DIST_TIMEOUT:
			if (parse_double(optarg, &x) || x <= 0 || x > 1e7)
				cli_usage_error(&cli, "--dist-timeout: '%s' is not a number of seconds (> 0)", optarg);
			o.dist_timeout = x;
			break;
		default:
			if (!cli_common(c, &cli))
				cli_usage_error(&cli, NULL);
		}
	}
	if (optind < argc)
		cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
	if (!o.weights == !o.resume)
		cli_usage_error(&cli, "give exactly one of --weights and --resume");
	if (!o.ntrain)
		cli_usage_error(&cli, "no training shards (--train PATTERN)");
	if (o.output && !strcmp(o.output, "-"))
		cli_usage_error(&cli, "-o -: standard output carries the JSON log; give a file name");
	if (o.dist_init) {
		struct gpt_err e;
		char buf[1100];
		if (dist_resolve_init(o.dist_init, buf, sizeof buf, &e))
			cli_usage_error(&cli, "%s", e.msg);
	}
	if (gpus) {
		struct gpt_err e;
		struct dist_info di;
		if (o.dist_init)
			cli_usage_error(&cli, "--gpus starts the ranks itself; --dist-init is for ranks started "
			                      "by a launcher");
		if (dist_env(&di, &e))
			cli_usage_error(&cli, "%s", e.msg);
		if (di.world > 1)
			cli_usage_error(&cli, "--gpus %d: this process is already rank %d of %d (launcher %s); "
			                      "let either the launcher or --gpus start the ranks",
			                gpus, di.rank, di.world, di.launcher);
		if (gpus > 1) {
			/* the batch must split over the ranks: say so once, here */
			if ((!o.resume || (o.batch_tokens && o.seq_len)) &&
			    train_micro_batches(o.batch_tokens ? o.batch_tokens : TRAIN_DEFAULT_BATCH,
			                        o.seq_len ? o.seq_len : TRAIN_DEFAULT_SEQ, gpus, &e) < 0)
				cli_usage_error(&cli, "%s", e.msg);
			char **cargv = dist_argv_drop(argc, argv, SHORTOPTS, longopts, "gpus");
			int status = dist_spawn(gpus, cargv, &e);
			if (status < 0)
				die(EXIT_RUNTIME, "%s", e.msg);
			free(cargv);
			free(train);
			free(val);
			return status;
		}
	}
	int status = train_run(&o);
	free(train);
	free(val);
	return status;
}
