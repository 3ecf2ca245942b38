# mnemo - plain Makefile. `make` builds, `make test` sets up and runs every test,
# `make run` sets up and runs the main job on the default model.
CC       ?= gcc
# Portable baseline: SIMD variants get their own flags per file and are chosen
# at run time (kernels/cpu.c), so the binary runs on AVX2-only or older CPUs.
OPT      ?= -O2
SAN      ?=
CFLAGS   ?=
ALL_CFLAGS = $(OPT) -g $(SAN) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wno-unused-parameter \
            -fno-strict-aliasing -Iinclude -Isrc -Isrc/core -I/usr/include/postgresql -pthread $(FILE_FLAGS) $(CFLAGS)
# Open MPI (data-parallel training, train/dist.c) when its development files are installed;
# without them the build trains in one process.
MPI_CFLAGS := $(shell pkg-config --cflags ompi-c 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs ompi-c 2>/dev/null)
MPI_DEF    := $(if $(MPI_LIBS),-DMN_HAVE_MPI)
# OpenBLAS: training GEMMs; SQLite / libpq: the document store; libmicrohttpd + cJSON: the server.
LIBS     = -lopenblas -lsqlite3 -lpq -lmicrohttpd -lcjson -lm -pthread $(MPI_LIBS)
LDLIBS   = $(LIBS) $(SAN)
BUILD    ?= build

AVX2_FLAGS   = -mavx2 -mfma -mf16c
AVX512_FLAGS = -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512vnni -mavx2 -mfma -mf16c

LIB_SRC  := $(sort $(wildcard src/core/*.c src/kernels/*.c src/model/*.c src/memory/*.c \
                                src/train/*.c src/store/*.c src/server/*.c src/eval/*.c))
CLI_SRC  := $(sort $(wildcard src/cli/*.c))
TEST_SRC := $(sort $(wildcard tests/test_*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
CLI_OBJ  := $(CLI_SRC:%.c=$(BUILD)/%.o)
TESTS    := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
LIB      := $(BUILD)/libmnemo.a
BIN      := $(BUILD)/mnemo

MODEL_FILE := models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: all built setup setup-run model run train-default test unit asan ubsan sanitize bench fixtures clean shared python \
        fuzz fuzz-lib fuzz-build fuzz-regress fuzz-corpus
all: $(BIN) $(TESTS) mnemo

mnemo: $(BIN)
	cp $(BIN) mnemo

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -MMD -MP -c $< -o $@

# The training ops' row loops (softmax, masks, scaling) have trip counts known
# only at run time: gcc -O2's very cheap cost model leaves them scalar (clang,
# which the fuzz build uses, has no such flag and vectorises them anyway).
VECT_FLAG := $(shell $(CC) -fvect-cost-model=dynamic -x c -c /dev/null -o /dev/null 2>/dev/null && \
                echo -fvect-cost-model=dynamic)
$(BUILD)/src/train/ops.o $(BUILD)/src/train/ops_f64.o: FILE_FLAGS = $(VECT_FLAG)

$(BUILD)/src/train/dist.o: src/train/dist.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(MPI_CFLAGS) $(MPI_DEF) -MMD -MP -c $< -o $@

$(BUILD)/%_avx2.o: %_avx2.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(AVX2_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%_avx512.o: %_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(AVX512_FLAGS) -MMD -MP -c $< -o $@

$(BUILD)/src/kernels/gemm_bf16_amx.o: src/kernels/gemm_bf16_amx.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(AVX512_FLAGS) -mavx512bf16 -mamx-tile -mamx-bf16 -MMD -MP -c $< -o $@

$(BUILD)/src/kernels/gemm_bf16_avx512.o: src/kernels/gemm_bf16_avx512.c
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(AVX512_FLAGS) -mavx512bf16 -MMD -MP -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BIN): $(CLI_OBJ) $(LIB)
	$(CC) $(ALL_CFLAGS) -o $@ $(CLI_OBJ) $(LIB) $(LDLIBS)

# The shared library the Python package loads (python/mnemo): the same sources, position-independent,
# in their own build directory. Only the public API (include/mnemo.h) is meant to be called.
$(BUILD)/libmnemo.so: $(LIB_OBJ)
	$(CC) -shared -Wl,-soname,libmnemo.so -o $@ $^ $(LDLIBS)

shared:
	@$(MAKE) --no-print-directory BUILD=build-pic CFLAGS="-fPIC $(CFLAGS)" build-pic/libmnemo.so

# The Python package installed into the project's venv from this checkout, and its tests
# (make test runs them too, through tests/integration/test_python.py).
python: setup model built
	@.cache/venv/bin/python tests/integration/test_python.py

$(BUILD)/tests/%: tests/%.c tests/test.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itests -o $@ $< $(LIB) $(LDLIBS)

setup:
	@bash scripts/setup.sh

setup-run:
	@bash scripts/setup.sh run

# make model: every model and vocabulary the tests use; MODEL=smollm2 or MODEL=gemma3-270m: that one.
model: setup
	@bash scripts/fetch_model.sh $(MODEL)

# `all` in a fresh make once setup has run, so that what this Makefile detects when it is
# read (Open MPI's flags) sees the packages setup has just installed.
built: setup
	@$(MAKE) --no-print-directory all

# The main job: a long eval book read into compressed memory with the shipped adapter
# (progress, ingest speed, memory against full attention's KV), then a question about a
# detail from its first page, answered from memory.
RUN_BOOK := data/eval/books/pg3261-news-from-nowhere.txt
# ROW=FILE appends the run's JSON row (machine, answer, paged segments, every part of the cache)
# to FILE, e.g. make run ROW=docs/results/run.jsonl
# It installs, fetches and builds only what it needs (make test adds the rest).
run: setup-run
	@bash scripts/fetch_model.sh model
	@$(MAKE) --no-print-directory mnemo
	./mnemo ask -m $(MODEL_FILE) --doc $(RUN_BOOK) --max-tokens 24000 -n 48 $(if $(ROW),--row $(ROW)) \
	  "At the discussion at the League, at the very beginning of the story, how many persons were present?"

# Trains (or continues training) the shipped adapter with its recipe; see the script.
train-default: setup model built
	@bash scripts/train_default.sh

# Unit + parity tests on the normal build, then again under ASan+UBSan, then every fuzz
# target briefly from its seed corpus.
test: setup model built
	@bash scripts/run_tests.sh $(BUILD)
	@$(MAKE) --no-print-directory sanitize
	@$(MAKE) --no-print-directory fuzz-regress

unit: all
	@bash scripts/run_tests.sh $(BUILD)

# -O2: the same instrumentation, and the real-model tests run 1.8x faster than at -O1 (mnemo ppl over
# 768 tokens: 31 s against 55 s, an AMD EPYC with AVX2), which keeps CI inside its limit.
sanitize:
	@$(MAKE) --no-print-directory BUILD=build-san OPT=-O2 \
	  SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
	  build-san/libmnemo.a build-san/mnemo $(TEST_SRC:tests/%.c=build-san/tests/%)
	@MN_SANITIZED=1 bash scripts/run_tests.sh build-san

asan ubsan: sanitize

bench: all model
	@bash bench/run.sh

# Reference outputs from llama.cpp (needs llama-cpp-python; see bench/run.sh for the build flags).
fixtures: all model
	python3 scripts/make_fixtures.py
	python3 scripts/make_logit_fixtures.py
	python3 scripts/make_logit_fixtures.py --gemma3

# libFuzzer targets (tests/fuzz/fuzz_*.c) with ASan+UBSan, built with clang over a clang
# build of the library instrumented for coverage. `make fuzz` runs each for FUZZ_TIME
# seconds (new inputs kept in build-fuzz/corpus/NAME); `make fuzz-regress` (part of
# `make test`) runs each for FUZZ_REGRESS seconds starting from its committed seeds.
FUZZ_SRC  := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)
FUZZ_SAN  := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_TIME ?= 60
FUZZ_REGRESS ?= 10
fuzz-lib:
	@$(MAKE) --no-print-directory BUILD=build-fuzz CC=clang OPT=-O1 SAN="-fsanitize=fuzzer-no-link \
	  -fsanitize-coverage-ignorelist=tests/fuzz/coverage_ignore.txt $(FUZZ_SAN)" \
	  build-fuzz/libmnemo.a
build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c fuzz-lib
	clang -O1 -g -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer $(FUZZ_SAN) -Iinclude -Isrc -Isrc/core -Itests \
	  -o $@ $< build-fuzz/libmnemo.a $(LIBS)
fuzz-build: $(FUZZ_BINS)
fuzz: fuzz-build
	@for f in $(FUZZ_BINS); do n=$${f#build-fuzz/fuzz_}; mkdir -p build-fuzz/corpus/$$n; \
	  echo "fuzz $$n: $(FUZZ_TIME) s"; \
	  d=; [ -f tests/fuzz/$$n.dict ] && d=-dict=tests/fuzz/$$n.dict; \
	  $$f -max_total_time=$(FUZZ_TIME) -print_final_stats=1 $$d build-fuzz/corpus/$$n tests/fuzz/corpus/$$n || exit 1; \
	done; rm -rf /dev/shm/mnemo-fuzz-* /tmp/mnemo-fuzz-*
fuzz-regress: fuzz-build
	@for f in $(FUZZ_BINS); do n=$${f#build-fuzz/fuzz_}; rm -rf build-fuzz/regress/$$n; \
	  mkdir -p build-fuzz/regress/$$n; \
	  d=; [ -f tests/fuzz/$$n.dict ] && d=-dict=tests/fuzz/$$n.dict; \
	  $$f -max_total_time=$(FUZZ_REGRESS) $$d build-fuzz/regress/$$n tests/fuzz/corpus/$$n >build-fuzz/regress/$$n.log 2>&1 \
	    || { tail -40 build-fuzz/regress/$$n.log; echo "fuzz $$n: FAILED"; exit 1; }; \
	  echo "fuzz $$n: $$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' build-fuzz/regress/$$n.log) runs, no finding"; \
	done; rm -rf /dev/shm/mnemo-fuzz-* /tmp/mnemo-fuzz-*
# Seeds for the fuzz targets (committed): small valid files of every kind.
fuzz-corpus: all
	$(CC) $(ALL_CFLAGS) -Itests -o build/make_corpus tests/fuzz/make_corpus.c $(LIB) $(LDLIBS)
	./build/make_corpus tests/fuzz/corpus

clean:
	rm -rf build build-san build-fuzz build-pic mnemo python/mnemo/_libmnemo*.so

-include $(LIB_OBJ:.o=.d) $(CLI_OBJ:.o=.d)
