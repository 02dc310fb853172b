/*
 * gpt-eval - the loss of a model on token shards, as JSON; the gradient of
 * one micro-batch for comparisons with other implementations; or text
 * samples. See gpt-eval(1).
 */
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine.h"
#include "eval.h"
#include "loader.h"
#include "safetensors.h"
#include "shard.h"
#include "weights.h"

static const struct cli_text cli = {
	"gpt-eval [OPTION]... -w WEIGHTS --val PATTERN\n"
	"       gpt-eval [OPTION]... -w WEIGHTS --sample N [--prompt TEXT]",
	"Evaluate a model: mean cross-entropy loss over validation shards, as one\n"
	"JSON line; or generate text from a prompt.\n"
	"\n"
	"  -w, --weights FILE      weights (safetensors) or a gpt-train checkpoint\n"
	"      --val PATTERN       validation shards (glob, sorted; repeatable)\n"
	"      --tokens N          tokens to evaluate (default: 10485760, or as many\n"
	"                          as the first shard holds)\n"
	"      --seq-len N         tokens per sequence (default 65536, at most the shard)\n"
	"      --window W          attention window in 128-token blocks (default 14)\n"
	"      --grad-out FILE     also write the gradient of the first sequence's\n"
	"                          loss (safetensors, F32; loss in its metadata)\n"
	"Sampling\n"
	"      --sample N          generate N tokens after the prompt\n"
	"      --prompt TEXT       prompt (default: the end-of-text token alone)\n"
	"      --temperature X     0 = greedy (default 0.8)\n"
	"      --top-k K           sample among the K likeliest tokens (default 50; 0 = all)\n"
	"      --seed N            sampling seed (default 0)\n"
	"Machine\n"
	"      --device DEV        cpu, cuda or auto (default auto)\n"
	"      --threads N         CPU threads (default: all cores)\n"
	"  -q, --quiet             no notes on stderr\n"
	"  -v, --verbose           more notes on stderr\n"
	"  -h, --help              this help\n"
	"  -V, --version           version\n"
	"\n"
	"Exit status: 0 success, 1 error, 2 usage.\n",
};

enum { O_VAL = 256, O_TOKENS, O_SEQ, O_WINDOW, O_GRAD, O_SAMPLE, O_PROMPT, O_TEMP, O_TOPK, O_SEED,
       O_DEVICE, O_THREADS };

static const struct option longopts[] = {
	{"weights", required_argument, 0, 'w'},   {"val", required_argument, 0, O_VAL},
	{"tokens", required_argument, 0, O_TOKENS}, {"seq-len", required_argument, 0, O_SEQ},
	{"window", required_argument, 0, O_WINDOW}, {"grad-out", required_argument, 0, O_GRAD},
	{"sample", required_argument, 0, O_SAMPLE}, {"prompt", required_argument, 0, O_PROMPT},
	{"temperature", required_argument, 0, O_TEMP}, {"top-k", required_argument, 0, O_TOPK},
	{"seed", required_argument, 0, O_SEED},   {"device", required_argument, 0, O_DEVICE},
	{"threads", required_argument, 0, O_THREADS}, CLI_COMMON_LONG,
	{0, 0, 0, 0},
};

int main(int argc, char **argv)
{
	util_init(argv[0]);
	struct eval_opts o = {0};
	const char **val = xcalloc((size_t)argc, sizeof *val);
	o.val = val;
	o.tokens = -1;
	o.window = 14;
	o.temperature = 0.8;
	o.top_k = 50;
	o.device = ENGINE_AUTO;
	int c;
	long v;
	uint64_t u;
	double d;
	while ((c = getopt_long(argc, argv, "w:" CLI_COMMON_SHORT, longopts, NULL)) != -1) {
		switch (c) {
		case 'w': o.weights = optarg; break;
		case O_VAL: val[o.nval++] = optarg; break;
		case O_TOKENS:
			if (parse_u64(optarg, &u) || u < 1 || u > (1ull << 40))
				cli_usage_error(&cli, "--tokens: '%s' is not a token count", optarg);
			o.tokens = (int64_t)u;
			break;
		case O_SEQ:
			if (parse_u64(optarg, &u) || u < 1 || u > (1u << 24))
				cli_usage_error(&cli, "--seq-len: '%s' is not a length", optarg);
			o.seq_len = (int)u;
			break;
		case O_WINDOW:
			if (parse_long(optarg, 1, 1 << 20, &v))
				cli_usage_error(&cli, "--window: '%s' is not a block count >= 1", optarg);
			o.window = (int)v;
			break;
		case O_GRAD: o.grad_out = optarg; break;
		case O_SAMPLE:
			if (parse_long(optarg, 1, 1 << 20, &v))
				cli_usage_error(&cli, "--sample: '%s' is not a token count >= 1", optarg);
			o.sample = (int)v;
			break;
		case O_PROMPT: o.prompt = optarg; break;
		case O_TEMP:
			if (parse_double(optarg, &d) || d < 0)
				cli_usage_error(&cli, "--temperature: '%s' is not a number >= 0", optarg);
			o.temperature = d;
			break;
		case O_TOPK:
			if (parse_long(optarg, 0, 1 << 24, &v))
				cli_usage_error(&cli, "--top-k: '%s' is not a count", optarg);
			o.top_k = (int)v;
			break;
		case O_SEED:
			if (parse_u64(optarg, &u))
				cli_usage_error(&cli, "--seed: '%s' is not a number >= 0", optarg);
			o.seed = u;
			break;
		case O_DEVICE: engine_cli_device(&cli, optarg, &o.device); break;
		case O_THREADS: engine_cli_threads(&cli, optarg); break;
		default:
			if (!cli_common(c, &cli))
				cli_usage_error(&cli, NULL);
		}
	}
	if (optind < argc)
		cli_usage_error(&cli, "unexpected argument '%s'", argv[optind]);
	if (!o.weights)
		cli_usage_error(&cli, "no weights (-w FILE)");
	if (!o.sample && !o.nval)
		cli_usage_error(&cli, "nothing to do: give --val PATTERN, or --sample N");
	if (o.grad_out && !o.nval)
		cli_usage_error(&cli, "--grad-out needs --val shards");
	int status = o.sample ? eval_sample(&o) : eval_loss(&o);
	free(val);
	return status;
}
