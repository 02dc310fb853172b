# inputs.sh - sourced by bench/train_gpu.sh and bench/step_kernels.sh (not a
# benchmark itself): the record configuration's tokens and initial weights,
# made once in a scratch directory and reused.
#
#   record_inputs BUILD_DIR SCRATCH
#
# Tokenizes TEXT (default: the Gutenberg training shard 00, from .carry/, else
# ../shared/data/, else data/sample/train.txt.zst, which ships) into
# SCRATCH/data with tools/record-data.sh (gpt-* shards and the same tokens as
# llm.c .bin files; nothing is redone when they are up to date) and writes
# SCRATCH/init.safetensors (gpt-init --preset record-2025-01-04, seed 0)
# unless it is there. Run from the source tree's top, build/bin on PATH.
record_inputs() {
	local b=$1 scratch=$2 text=${TEXT:-} f
	if [ -z "$text" ]; then
		for f in .carry/gutenberg_en_train_00.txt.zst ../shared/data/gutenberg_en_train_00.txt.zst \
			data/sample/train.txt.zst; do
			[ -r "$f" ] && { text=$f; break; }
		done
	fi
	mkdir -p "$scratch"
	tools/record-data.sh -B "$b" "$scratch/data" $text
	[ -s "$scratch/init.safetensors" ] || gpt-init -q --preset record-2025-01-04 -o "$scratch/init.safetensors"
}
