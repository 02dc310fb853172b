# gpt-* : build, test and install.
#
#   make                 build every program (CPU; CUDA parts too where nvcc is found)
#   make check           unit tests (Check) and command-line tests
#   make install         PREFIX=/usr/local DESTDIR= (GNU install variables)
#   make help            list the targets
#
# Knobs (validated below):
#   CUDA=auto|0|1        build the CUDA backend: auto = if nvcc is found
#   CUDA_GENCODE=...     default -gencode arch=compute_90a,code=sm_90a (H100/H200)
#   NVCC=path            nvcc to use (default: from PATH, else /usr/local/cuda/bin/nvcc)
#   SANITIZE=address     build everything with -fsanitize=...

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
MAN1DIR ?= $(MANDIR)/man1
MAN5DIR ?= $(MANDIR)/man5
INSTALL ?= install

CC      ?= cc
CFLAGS  ?= -O2 -g
B       := build

PKG_CFLAGS := $(shell pkg-config --cflags libzstd 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs libzstd 2>/dev/null || echo -lzstd)
CHECK_CFLAGS := $(shell pkg-config --cflags check 2>/dev/null)
CHECK_LIBS   := $(shell pkg-config --libs check 2>/dev/null || echo -lcheck -lsubunit -lrt -lm)

GPT_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
              -pthread -Ilib -Ikernels -MMD -MP $(PKG_CFLAGS)
LDLIBS  := $(PKG_LIBS) -lm -pthread
LDFLAGS += -Wl,--as-needed

ifdef SANITIZE
GPT_CFLAGS += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer
LDFLAGS    += -fsanitize=$(SANITIZE)
endif

# ---- CUDA detection --------------------------------------------------------
CUDA ?= auto
ifeq ($(filter $(CUDA),auto 0 1),)
$(error CUDA must be auto, 0 or 1 (got '$(CUDA)'))
endif
NVCC ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
ifeq ($(CUDA),auto)
  ifneq ($(NVCC),)
    USE_CUDA := 1
  else
    USE_CUDA := 0
  endif
else
  USE_CUDA := $(CUDA)
endif
ifeq ($(USE_CUDA),1)
  ifeq ($(NVCC),)
    $(error CUDA=1 but nvcc was not found; set NVCC=/path/to/nvcc)
  endif
  CUDA_HOME    ?= $(patsubst %/bin/nvcc,%,$(NVCC))
  CUDA_GENCODE ?= -gencode arch=compute_90a,code=sm_90a
  NVCCFLAGS    ?= -O3 -lineinfo
  NVCC_ALL     := $(NVCCFLAGS) $(CUDA_GENCODE) -std=c++17 -Ilib -Ikernels -MMD -MP \
                  -Xcompiler -Wall,-Wextra,-Wno-unused-parameter
  # sm_90a code in the build: the Hopper (wgmma) kernels may be dispatched
  ifneq ($(findstring 90a,$(CUDA_GENCODE)),)
    NVCC_ALL   += -DATT_WGMMA
  endif
  GPT_CFLAGS   += -DGPT_CUDA -I$(CUDA_HOME)/include
  CUDA_LIBS    := -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 \
                  -lcublasLt -lcublas -lnccl -lcudart -lstdc++
  $(info gpt-*: building CPU and CUDA backends (nvcc: $(NVCC), $(CUDA_GENCODE)))
else
  CUDA_LIBS :=
  $(info gpt-*: building the CPU backend only (no nvcc found; CUDA=1 NVCC=... to force))
endif

# ---- sources ---------------------------------------------------------------
LIB_SRC   := $(sort $(wildcard lib/*.c))
LIB_OBJ   := $(LIB_SRC:%.c=$(B)/%.o)
CU_SRC    := $(sort $(wildcard kernels/*.cu))
CU_OBJ    := $(CU_SRC:%.cu=$(B)/%.o)
PROG_SRC  := $(sort $(wildcard bin/gpt-*.c))
PROGS     := $(PROG_SRC:bin/%.c=$(B)/bin/%)
TEST_SRC  := $(sort $(wildcard tests/unit/check_*.c))
TESTS     := $(TEST_SRC:tests/unit/%.c=$(B)/tests/%)
GPU_TEST_SRC := $(sort $(wildcard tests/gpu/gpu_*.c))
GPU_TESTS    := $(GPU_TEST_SRC:tests/gpu/%.c=$(B)/tests/%)
MAN1      := $(sort $(wildcard man/*.1))
MAN5      := $(sort $(wildcard man/*.5))

LIBGPT := $(B)/libgpt.a
ifeq ($(USE_CUDA),1)
LIBGPTCUDA := $(B)/libgptcuda.a
endif

.PHONY: all check check-unit check-cli check-man check-gpu bench clean install uninstall help
## all: build every program (default); with CUDA also the GPU test programs
all: $(PROGS) $(if $(filter 1,$(USE_CUDA)),$(GPU_TESTS))

$(B)/lib/%.o: lib/%.c
	@mkdir -p $(@D)
	$(CC) $(GPT_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/kernels/%.o: kernels/%.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCC_ALL) -c $< -o $@

$(B)/bin/%.o: bin/%.c
	@mkdir -p $(@D)
	$(CC) $(GPT_CFLAGS) $(CFLAGS) -c $< -o $@

$(B)/tests/%.o: tests/unit/%.c
	@mkdir -p $(@D)
	$(CC) $(GPT_CFLAGS) $(CHECK_CFLAGS) $(CFLAGS) -Itests/unit -c $< -o $@

$(LIBGPT): $(LIB_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(LIBGPTCUDA): $(CU_OBJ)
	@rm -f $@
	$(AR) rcs $@ $^

$(B)/bin/%: $(B)/bin/%.o $(LIBGPT) $(LIBGPTCUDA)
	$(CC) $(LDFLAGS) $< $(LIBGPT) $(LIBGPTCUDA) $(LDLIBS) $(CUDA_LIBS) -o $@

$(B)/tests/gpu_%.o: tests/gpu/gpu_%.c
	@mkdir -p $(@D)
	$(CC) $(GPT_CFLAGS) $(CHECK_CFLAGS) $(CFLAGS) -Itests/unit -Itests/gpu -c $< -o $@

$(B)/tests/%: $(B)/tests/%.o $(LIBGPT) $(LIBGPTCUDA)
	$(CC) $(LDFLAGS) $< $(LIBGPT) $(LIBGPTCUDA) $(CHECK_LIBS) $(LDLIBS) $(CUDA_LIBS) -o $@

## check: run the unit tests (Check), the command-line tests, the man-page examples and the attention kernels in the host emulation (tests/gpu/emu)
check: all $(TESTS)
	@tests/run-all.sh $(B)

check-unit: all $(TESTS)
	@tests/run-all.sh $(B) unit

check-cli: all
	@tests/run-all.sh $(B) cli

## check-gpu: run the GPU suite (needs a CUDA device): kernels against the CPU reference
check-gpu: all $(GPU_TESTS)
	@if [ "$(USE_CUDA)" != 1 ]; then echo "check-gpu: no CUDA build (nvcc not found)" >&2; exit 2; fi
	@tests/run-all.sh $(B) gpu

## bench: print this machine's benchmark tables: tokenizer, CPU model, GPU products and attention
## (the GPU ones say "skipped" without a device; the runs beside the record's PyTorch code,
## bench/train_gpu.sh, time-to-loss.sh, record_ops.sh, speedrun-gpus.sh, and the per-kernel
## profile bench/step_kernels.sh, take a GPU, minutes and their own options: see bench/RESULTS.md)
BENCHES = bench/tokshard.sh bench/model_cpu.sh bench/gemm.sh bench/attention.sh
bench: all
	@for b in $(BENCHES); do "$$b" $(B) || exit 1; done

## install: install programs and man pages under $(DESTDIR)$(PREFIX)
install: all
	$(INSTALL) -d -m 755 $(DESTDIR)$(BINDIR) $(DESTDIR)$(MAN1DIR) $(DESTDIR)$(MAN5DIR)
	$(INSTALL) -m 755 $(PROGS) $(DESTDIR)$(BINDIR)
	$(if $(MAN1),$(INSTALL) -m 644 $(MAN1) $(DESTDIR)$(MAN1DIR))
	$(if $(MAN5),$(INSTALL) -m 644 $(MAN5) $(DESTDIR)$(MAN5DIR))

## uninstall: remove what install installed
uninstall:
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(PROGS)))
	rm -f $(addprefix $(DESTDIR)$(MAN1DIR)/,$(notdir $(MAN1)))
	rm -f $(addprefix $(DESTDIR)$(MAN5DIR)/,$(notdir $(MAN5)))

## clean: remove the build directory
clean:
	rm -rf $(B)

## help: list the targets
help:
	@sed -n 's/^## //p' $(MAKEFILE_LIST)

.SECONDARY:
-include $(LIB_OBJ:.o=.d) $(CU_OBJ:.o=.d) $(PROGS:=.d) $(TESTS:=.d) $(GPU_TESTS:=.d)
