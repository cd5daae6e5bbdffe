# One Makefile for the whole tree.  `make up` and `make test` are the two
# commands of the README; everything else is a step they use.
#
#   make SANITIZE=address,undefined   instrumented build (into build/san)
#   make WERROR=1                     warnings are errors (CI)

SHELL   := /bin/bash
CC      ?= cc
# gnutls: es_http checks a certificate and key before libmicrohttpd (built
# with GnuTLS) serves them; libcrypto: SHA-256 of the access tokens
PKGS    := libpq hiredis libnats jansson check libmicrohttpd gnutls libcrypto
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wwrite-strings -Werror=vla
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -pthread $(WARN)

# Include paths, per folder: a file finds its own folder's headers by
# itself, the core's through -Ievents, and another folder's only when that
# folder's modules are linked into the same program (projector/ takes the
# saga's event names; es-query and esctl link the projections; esctl links
# the rebuild and the saga module).  So a bare include cannot reach into
# another process's folder by accident.
INC_events    :=
INC_command   := -Ievents
INC_relay     := -Ievents
INC_saga      := -Ievents
INC_projector := -Ievents -Isaga
INC_query     := -Ievents -Iprojector -Isaga
INC_cli       := -Ievents -Iprojector -Isaga
INC_tests     := -Ievents -Iprojector -Isaga

ifdef WERROR
CFLAGS  += -Werror
endif

ifdef SANITIZE
BUILD   ?= build/san
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
else
BUILD   ?= build/plain
endif

# pkg-config is asked only when something is compiled, so `make deps` and
# `make down` work before the libraries are installed.
PKG_CFLAGS = $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   = $(shell pkg-config --libs $(PKGS) 2>/dev/null)

LIB_SRC   := $(wildcard events/*.c)
LIB_OBJ   := $(LIB_SRC:%.c=$(BUILD)/%.o)
LIB       := $(BUILD)/libes.a

TEST_SRC  := $(wildcard tests/test_*.c)
TEST_BIN  := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_COMMON := $(BUILD)/tests/harness.o

CMD_SRC   := $(wildcard command/*.c)
CMD_OBJ   := $(CMD_SRC:%.c=$(BUILD)/%.o)
CMD_BIN   := $(BUILD)/es-command

RELAY_SRC := $(wildcard relay/*.c)
RELAY_OBJ := $(RELAY_SRC:%.c=$(BUILD)/%.o)
RELAY_BIN := $(BUILD)/es-relay

# The projections are shared by es-projector, es-query (key layout only),
# the tests and a fuzz target.
PROJ_SRC  := projector/projections.c projector/park.c
PROJ_OBJ  := $(PROJ_SRC:%.c=$(BUILD)/%.o)
PROJ_BIN  := $(BUILD)/es-projector
QUERY_SRC := $(wildcard query/*.c)
# the console's static files, built into es-query (scripts/embed_console.sh)
CONSOLE_FILES := $(wildcard query/console/*.html query/console/*.js query/console/*.css \
    query/console/*.svg)
QUERY_OBJ := $(QUERY_SRC:%.c=$(BUILD)/%.o) $(BUILD)/query/console_assets.o
QUERY_BIN := $(BUILD)/es-query

# The saga manager; its modules (all but main.c) are linked by the tests.
SAGA_SRC  := $(wildcard saga/*.c)
SAGA_LIB_OBJ := $(filter-out $(BUILD)/saga/main.o,$(SAGA_SRC:%.c=$(BUILD)/%.o))
SAGA_BIN  := $(if $(wildcard saga/main.c),$(BUILD)/es-saga)

CLI       := $(BUILD)/esctl

# Examples for the users of the system (examples/README.md): programs of
# their own that link no part of it, only the client libraries.
EXAMPLE_PKGS := libnats libpq jansson
EXAMPLE_BIN  := $(BUILD)/examples/consumer
BENCH_BIN := $(BUILD)/bench_store $(BUILD)/bench_http $(BUILD)/bench_redis $(BUILD)/bench_relay

FUZZ_DIR  := build/fuzz
FUZZ_SRC  := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN  := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_SECONDS ?= 10

.PHONY: all deps up down servers test test-plain test-console test-san test-fuzz fuzz bench bench-growth clean distclean

all: $(LIB) $(CLI) $(CMD_BIN) $(RELAY_BIN) $(PROJ_BIN) $(QUERY_BIN) $(SAGA_BIN) $(TEST_BIN) \
    $(BENCH_BIN) $(EXAMPLE_BIN)

$(BUILD)/%.o: %.c $(wildcard events/*.h) $(wildcard command/*.h) $(wildcard projector/*.h) \
    $(wildcard query/*.h) $(wildcard saga/*.h) $(wildcard cli/*.h) $(wildcard relay/*.h) \
    tests/harness.h
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) $(INC_$(firstword $(subst /, ,$*))) $(PKG_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR    $@"
	@$(AR) rcs $@ $^

$(CMD_BIN): $(CMD_OBJ) $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

$(RELAY_BIN): $(RELAY_OBJ) $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

$(PROJ_BIN): $(BUILD)/projector/main.o $(PROJ_OBJ) $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

# es-query serves the operator console, which acts on sagas through the
# saga module (saga/saga.c), as esctl does.
$(BUILD)/query/console_assets.c: $(CONSOLE_FILES) scripts/embed_console.sh
	@mkdir -p $(dir $@)
	@echo "  GEN   $@"
	@scripts/embed_console.sh $(CONSOLE_FILES) >$@.tmp && mv $@.tmp $@

$(BUILD)/query/console_assets.o: $(BUILD)/query/console_assets.c query/console.h
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) -Iquery -Ievents $(PKG_CFLAGS) -c $< -o $@

# ... runs the console's projection rebuilds (projector/rebuild.c), and
# shows a trace as esctl trace does (saga/stages.c, with the flow table).
$(QUERY_BIN): $(QUERY_OBJ) $(PROJ_OBJ) $(BUILD)/projector/rebuild.o $(BUILD)/saga/saga.o \
    $(BUILD)/saga/stages.o $(BUILD)/saga/flow.o $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

$(BUILD)/es-saga: $(BUILD)/saga/main.o $(SAGA_LIB_OBJ) $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS) -lm

# esctl runs the projector's rebuilds (rebuild.c) and reads and acts on
# sagas through the saga module (saga/saga.c), the owner of their tables;
# `esctl trace` collects a trace's stages with saga/stages.c, which finds
# a trigger's saga through the flow table (flow.c).
CLI_OBJ   := $(patsubst %.c,$(BUILD)/%.o,$(wildcard cli/*.c)) \
             $(BUILD)/projector/rebuild.o $(BUILD)/saga/saga.o $(BUILD)/saga/flow.o \
             $(BUILD)/saga/stages.o
$(CLI): $(CLI_OBJ) $(PROJ_OBJ) $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

$(BUILD)/examples/%: $(BUILD)/examples/%.o
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(shell pkg-config --libs $(EXAMPLE_PKGS) 2>/dev/null)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_COMMON) $(PROJ_OBJ) $(SAGA_LIB_OBJ) $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS) -lm

$(BUILD)/bench_http: $(BUILD)/tests/bench_http.o
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS)

$(BUILD)/bench_redis: $(BUILD)/tests/bench_redis.o
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

$(BUILD)/bench_store: $(BUILD)/tests/bench_store.o $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

$(BUILD)/bench_relay: $(BUILD)/tests/bench_relay.o $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

# The load of the fault campaign (jansson reads the answers).
$(BUILD)/chaos_load: $(BUILD)/tests/chaos_load.o
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

# The delaying TCP proxy of `make chaos-cluster` (its network fault).
$(BUILD)/delay_proxy: $(BUILD)/tests/delay_proxy.o
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) -pthread

# The hostile load of `make abuse` (and its corpus-driven HTTP sender).
$(BUILD)/abuse_load: $(BUILD)/tests/abuse_load.o
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) -pthread

# Fuzz targets: clang's libFuzzer with ASan and UBSan, over the core's
# sources (no server is needed by a decoder).
# (the command service's decoders come along, without its main)
FUZZ_LINK := $(LIB_SRC) $(filter-out command/main.c,$(CMD_SRC)) $(PROJ_SRC) query/console_args.c query/doc.c
$(FUZZ_DIR)/%: tests/fuzz/%.c $(FUZZ_LINK) $(wildcard events/*.h) $(wildcard command/*.h) \
    $(wildcard projector/*.h) saga/saga.h query/console_args.h query/doc.h
	@mkdir -p $(dir $@)
	@echo "  FUZZ  $@"
	@clang -std=c11 -D_GNU_SOURCE -g -O1 -Ievents -Icommand -Iprojector -Isaga -Iquery $(PKG_CFLAGS) \
	    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
	    $< $(FUZZ_LINK) -o $@ $(PKG_LIBS)

# Runs every fuzz target for FUZZ_SECONDS from its seed corpus; a crash
# fails, and the input that caused it is left in build/fuzz.
fuzz: $(FUZZ_BIN)
	@for t in $(FUZZ_BIN); do \
	    name=$$(basename $$t); corpus=tests/fuzz/corpus/$${name#fuzz_}; \
	    work=$(FUZZ_DIR)/corpus-$$name; mkdir -p $$work; \
	    echo "== $$name ($(FUZZ_SECONDS) s)"; \
	    $$t -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -artifact_prefix=$(FUZZ_DIR)/ \
	        $$work $$corpus > $(FUZZ_DIR)/$$name.log 2>&1 \
	        || { tail -n 40 $(FUZZ_DIR)/$$name.log; echo "fuzz: $$name failed"; exit 1; }; \
	    grep -E '^Done [0-9]+ runs' $(FUZZ_DIR)/$$name.log; \
	done

deps:
	@scripts/deps.sh

servers: deps
	@scripts/servers.sh start

# Installs what is missing, builds, starts the servers, applies the
# migrations; returns once everything answers.
up: deps
	@$(MAKE) --no-print-directory all
	@scripts/servers.sh start
	@eval "$$(scripts/servers.sh env)" && $(CLI) migrate
	@scripts/admin_token.sh $(BUILD)
	@scripts/daemons.sh start $(BUILD)
	@scripts/demo.sh
	@scripts/console_token.sh $(BUILD)

down:
	@scripts/daemons.sh stop 2>/dev/null || true
	@scripts/servers.sh stop

# Every test, plain and under ASan+UBSan (which also fails on leaks), a
# short run of each fuzz target and short runs of the campaigns (the
# cluster's: one fault of each kind, about 3 minutes).
test: deps
	@$(MAKE) --no-print-directory test-plain
	@$(MAKE) --no-print-directory test-san
	@$(MAKE) --no-print-directory fuzz
	@$(MAKE) --no-print-directory chaos CHAOS_SECONDS=45
	@$(MAKE) --no-print-directory abuse ABUSE_SECONDS=30
	@$(MAKE) --no-print-directory chaos-cluster-short
	@cat build/plain/test-summary build/san/test-summary | \
	    awk '{ p += $$1; f += $$2 } END { print "tests: " p " passed, " f " failed" }' 

test-plain:
	@$(MAKE) --no-print-directory all
	@scripts/test.sh $(BUILD)

# The operator console in headless Chromium (tests/console.sh); test-plain
# and test-san run it too, with the rest.
test-console:
	@$(MAKE) --no-print-directory all
	@scripts/test.sh $(BUILD) console.sh

test-san:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined all
	@scripts/test.sh build/san

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh $(BUILD)

# How append, feed read and rebuild costs move when the store holds 10 M
# events (BENCH_GROWTH_EVENTS) instead of few: ratios big/small.
bench-growth: deps
	@$(MAKE) --no-print-directory all
	@BENCH=growth scripts/bench.sh $(BUILD)

# The fault campaign: CHAOS_SECONDS of kill -9 and restarts of every daemon
# and server under a steady load, on a private system (.run/chaos), then
# the invariants; any violation fails (scripts/chaos.sh).
CHAOS_SECONDS ?= 300
.PHONY: chaos
chaos: deps
	@$(MAKE) --no-print-directory all $(BUILD)/chaos_load
	@CHAOS_SECONDS=$(CHAOS_SECONDS) scripts/chaos.sh $(BUILD)

# The hostile-client campaign: the same private system and load, and for
# ABUSE_SECONDS hostile clients (malformed HTTP, oversize bodies, poison,
# slowloris, waiting reads, maximal pages, foreign NATS messages); then the
# same invariants plus every legitimate command answered and each daemon's
# peak RSS (scripts/abuse.sh).
ABUSE_SECONDS ?= 300
.PHONY: abuse
abuse: deps
	@$(MAKE) --no-print-directory all $(BUILD)/chaos_load $(BUILD)/abuse_load
	@ABUSE_SECONDS=$(ABUSE_SECONDS) scripts/abuse.sh $(BUILD)

# The highly available topology on one machine (scripts/cluster.sh;
# docs/OPERATIONS.md "Running highly available"): etcd, two PostgreSQL
# nodes under Patroni behind HAProxy, three NATS servers, Redis with a
# replica and three Sentinels, two of each daemon; ports from
# CLUSTER_PORT_BASE (17400) to CLUSTER_PORT_BASE+59 (clear of the single
# node's and the campaigns' default ports), data in .run/cluster.
CLUSTER_PORT_BASE ?= 17400
export CLUSTER_PORT_BASE
.PHONY: cluster-up cluster-down cluster-test
cluster-up: deps
	@$(MAKE) --no-print-directory all
	@scripts/cluster.sh up $(BUILD)

cluster-down:
	@scripts/cluster.sh down

# Up, the demo, kill -9 of the PostgreSQL primary (appends resume through
# HAProxy, none acknowledged is lost; the old primary, started again, is
# the synchronous standby within CLUSTER_TEST_REJOIN_SECS), of the Redis
# primary (Sentinel), down.
cluster-test: deps
	@$(MAKE) --no-print-directory all
	@scripts/cluster_test.sh $(BUILD)

# The fault campaign on the highly available topology: a fresh cluster of
# its own (.run/chaos-cluster, ports from CHAOS_CLUSTER_PORT_BASE, by
# default CLUSTER_PORT_BASE+100), the campaign's load through HAProxy and,
# for CHAOS_SECONDS, kill -9 of the PostgreSQL primary, a NATS server, the
# Redis primary, a daemon instance, HAProxy, and a network delay on one
# node; then the invariants (any violation fails) and, per fault kind, the
# longest window in which commands failed against its goal
# (scripts/chaos_cluster.sh).  chaos-cluster-short: 60 s, one fault of
# each kind.
.PHONY: chaos-cluster chaos-cluster-short
chaos-cluster: deps
	@$(MAKE) --no-print-directory all $(BUILD)/chaos_load $(BUILD)/delay_proxy
	@CHAOS_SECONDS=$(CHAOS_SECONDS) scripts/chaos_cluster.sh $(BUILD)

chaos-cluster-short: deps
	@$(MAKE) --no-print-directory all $(BUILD)/chaos_load $(BUILD)/delay_proxy
	@CHAOS_SECONDS=60 CHAOS_FAULT_INTERVAL=10 scripts/chaos_cluster.sh $(BUILD)

# The figures of issue 18 item 4 on the cluster beside the single node,
# in one run (scripts/bench_cluster.sh; uses a cluster already up).
.PHONY: bench-cluster
bench-cluster: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench_cluster.sh $(BUILD)

clean:
	rm -rf build

distclean: clean down cluster-down
	rm -rf .run

# tests/test_qdoc.c checks query/doc.c, which es-query alone links, against
# jansson: it links that one module.
$(BUILD)/tests/test_qdoc: $(BUILD)/query/doc.o
