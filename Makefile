# One Makefile for the whole tree.  `make up` and `make test` are the two
# commands of the README; everything else is a step they use.
#
#   make SANITIZE=address,undefined   instrumented build (into build/san)
#   make WERROR=1                     warnings are errors (CI)

SHELL   := /bin/bash
CC      ?= cc
PKGS    := libpq hiredis libnats jansson check libmicrohttpd
WARN    := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
           -Wwrite-strings -Werror=vla
CFLAGS  ?= -O2 -g
CFLAGS  += -std=c11 -D_GNU_SOURCE -pthread $(WARN) -Ievents

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

CLI       := $(BUILD)/esctl
BENCH_BIN := $(BUILD)/bench_store

.PHONY: all deps up down servers test test-plain test-san bench clean distclean

all: $(LIB) $(CLI) $(TEST_BIN) $(BENCH_BIN)

$(BUILD)/%.o: %.c $(wildcard events/*.h) tests/harness.h
	@mkdir -p $(dir $@)
	@echo "  CC    $<"
	@$(CC) $(CFLAGS) $(PKG_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@mkdir -p $(dir $@)
	@echo "  AR    $@"
	@$(AR) rcs $@ $^

$(CLI): $(BUILD)/cli/esctl.o $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_COMMON) $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS) -lm

$(BENCH_BIN): $(BUILD)/tests/bench_store.o $(LIB)
	@echo "  LD    $@"
	@$(CC) $(CFLAGS) $^ -o $@ $(LDFLAGS) $(PKG_LIBS)

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
	@echo "up: servers running; 'scripts/servers.sh env' prints the settings, 'make down' stops them"

down:
	@scripts/servers.sh stop

# Every test, plain and under ASan+UBSan (which also fails on leaks).
test: deps
	@$(MAKE) --no-print-directory test-plain
	@$(MAKE) --no-print-directory test-san

test-plain:
	@$(MAKE) --no-print-directory all
	@scripts/test.sh $(BUILD)

test-san:
	@$(MAKE) --no-print-directory SANITIZE=address,undefined all
	@scripts/test.sh build/san

bench: deps
	@$(MAKE) --no-print-directory all
	@scripts/bench.sh $(BUILD)

clean:
	rm -rf build

distclean: clean down
	rm -rf .run
