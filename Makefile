# payd — build, run, test.
#
#   make            build build/payd and the tools
#   make run        build and start payd embedded on 127.0.0.1:8080 (data in ./payd-data)
#   make test       unit tests, the Prometheus rules' tests (promtool), integration tests
#                   (SQLite, then PostgreSQL and the local cluster), the dashboard in
#                   headless Chromium, then unit and integration tests under ASan+UBSan,
#                   then the libFuzzer targets for a bounded time (make test-fuzz)
#   make bench      the benchmarks (bench/flow.sh, bench/overload.sh, build/guard_micro,
#                   bench/redis_limit.sh, bench/obs.sh, bench/scenarios.sh), then their
#                   charts (bench/plot.sh)
#
# Each target installs missing Debian packages first (scripts/deps.sh).

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    := -std=c11 -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
DEFS    := -D_GNU_SOURCE -Isrc -I/usr/include/postgresql
LIBS    := -lmicrohttpd -ljansson -lsqlite3 -lpq -lhiredis -lnats -lcurl -linih -lcrypto -lpthread -lm

SRC     := $(shell find src -name '*.c' | sort)
LIB_SRC := $(filter-out src/payd.c,$(SRC))
HDRS    := $(shell find src -name '*.h')

B       ?= build
# Debian's interpreter, which sees Debian's python3-* packages (a pyenv or
# virtualenv python3 first on PATH would not).
PYTHON  ?= /usr/bin/python3
SAN     :=
MIGRATIONS := $(sort $(wildcard src/store/migrations/*.sql))
GEN_OBJ := $(B)/obj/gen/pg_migrations.o
WEB_OBJ := $(B)/obj/gen/web_assets.o
WEB_FILES := web/index.html web/dashboard.js web/dashboard.css
UPLOT   := web/node_modules/uplot/dist/uPlot.iife.min.js
OBJ     := $(patsubst src/%.c,$(B)/obj/%.o,$(SRC)) $(GEN_OBJ) $(WEB_OBJ)
LIB_OBJ := $(patsubst src/%.c,$(B)/obj/%.o,$(LIB_SRC)) $(GEN_OBJ) $(WEB_OBJ)

UNIT_SRC   := $(shell find tests/unit -name 'test_*.c' 2>/dev/null | sort)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(B)/tests/%,$(UNIT_SRC))
TOOLS      := $(if $(wildcard tools/paybench/*.c),$(B)/paybench) \
              $(if $(wildcard tools/paysim/*.c),$(B)/paysim) $(B)/payctl $(B)/paycheck \
              $(B)/payfailover

.PHONY: all deps run test test-unit test-integration test-integration-pg test-asan bench clean

all: deps $(B)/payd $(TOOLS)

deps:
	@scripts/deps.sh

$(B)/obj/%.o: src/%.c $(HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -c $< -o $@

# The PostgreSQL schema, compiled in (src/store/pg_migrations.h).
$(B)/gen/pg_migrations.c: $(MIGRATIONS) scripts/embed_sql.sh
	@mkdir -p $(dir $@)
	scripts/embed_sql.sh $@ $(MIGRATIONS)

$(GEN_OBJ): $(B)/gen/pg_migrations.c src/store/pg_migrations.h
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -c $< -o $@

# The dashboard's page (web/) and uPlot from npm (web/package-lock.json; fetched only
# when missing: npm gives its files a fixed old mtime), compiled in (src/api/web_assets.h).
$(UPLOT):
	cd web && npm ci --no-audit --no-fund

$(B)/gen/web_assets.c: $(WEB_FILES) $(UPLOT) scripts/embed_web.sh
	@mkdir -p $(dir $@)
	scripts/embed_web.sh $@

$(WEB_OBJ): $(B)/gen/web_assets.c src/api/web_assets.h
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -c $< -o $@

$(B)/payd: $(OBJ)
	$(CC) $(CFLAGS) $(SAN) -o $@ $(OBJ) $(LIBS)

$(B)/paybench: $(wildcard tools/paybench/*.c) $(wildcard tools/paybench/*.h)
	@mkdir -p $(B)
	$(CC) $(WARN) $(CFLAGS) $(SAN) -D_GNU_SOURCE -o $@ $(filter %.c,$^) -ljansson -lpthread -lm

# The PSP simulator (docs/paysim.md): a program of its own that links the payd modules
# it shares (the helpers, the libmicrohttpd layer, the main program's plumbing).
PAYSIM_OBJ := $(B)/obj/util/util.o $(B)/obj/util/program.o $(B)/obj/util/sign.o \
              $(B)/obj/http/mhd.o
$(B)/paysim: $(wildcard tools/paysim/*.c) $(wildcard tools/paysim/*.h) $(PAYSIM_OBJ)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -o $@ $(filter %.c,$^) $(PAYSIM_OBJ) \
	    -lmicrohttpd -ljansson -lsqlite3 -lcurl -lcrypto -lpthread -lm

# The independent checker of the money invariants (Python; shares no code with payd).
$(B)/paycheck: tools/paycheck/paycheck.py
	@mkdir -p $(B)
	install -m 0755 $< $@

# The failover controller of the two-site PostgreSQL (docs/DR.md): libpq only.
$(B)/payfailover: tools/payfailover/payfailover.c
	@mkdir -p $(B)
	$(CC) $(WARN) $(CFLAGS) $(SAN) -D_GNU_SOURCE -I/usr/include/postgresql -o $@ $< -lpq -ljansson

# The operator's tool: payd's modules without its main program.
$(B)/payctl: $(wildcard tools/payctl/*.c) $(wildcard tools/payctl/*.h) $(LIB_OBJ)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -o $@ $(filter %.c,$^) $(LIB_OBJ) $(LIBS)

$(B)/guard_micro: bench/guard_micro.c $(LIB_OBJ)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -o $@ $< $(LIB_OBJ) $(LIBS)

$(B)/obs_micro: bench/obs_micro.c $(LIB_OBJ)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -o $@ $< $(LIB_OBJ) $(LIBS)

$(B)/redis_limit_micro: bench/redis_limit_micro.c $(LIB_OBJ)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -o $@ $< $(LIB_OBJ) $(LIBS)

$(B)/tests/%: tests/unit/%.c $(LIB_OBJ)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -o $@ $< $(LIB_OBJ) $(LIBS) -lcmocka

run: all
	$(B)/payd serve

test: all
	$(MAKE) test-unit test-rules test-integration test-integration-pg test-browser
	$(MAKE) test-asan
	$(MAKE) test-fuzz

test-unit: $(UNIT_BIN)
	@tests/unit/run.sh $(UNIT_BIN)

# The Prometheus rules and example configuration in deploy/prometheus/: promtool's checks
# and the rules' unit tests.
.PHONY: test-rules
test-rules:
	@scripts/deps.sh obs
	scripts/test_rules.sh

test-integration: $(B)/payd $(B)/paysim $(B)/payctl $(B)/paybench $(B)/paycheck $(B)/payfailover
	@scripts/deps.sh obs
	PAYD_BIN=$(abspath $(B)/payd) PAYSIM_BIN=$(abspath $(B)/paysim) \
	    $(PYTHON) tests/integration/run.py

# The dashboard in Debian's headless Chromium, driven by playwright-core (tests/browser/).
.PHONY: test-browser
test-browser: $(B)/payd
	PAYD_BIN=$(abspath $(B)/payd) scripts/test_browser.sh

# The same suite with every payd storing its data in PostgreSQL.
test-integration-pg: $(B)/payd $(B)/paysim $(B)/payctl $(B)/paybench $(B)/paycheck $(B)/payfailover
	@scripts/deps.sh obs
	PAYD_BIN=$(abspath $(B)/payd) PAYSIM_BIN=$(abspath $(B)/paysim) PAYD_TEST_STORE=postgres \
	    $(PYTHON) tests/integration/run.py

# The whole suite again, built with AddressSanitizer and UndefinedBehaviorSanitizer.
test-asan:
	@scripts/deps.sh asan
	@scripts/deps.sh obs
	$(MAKE) B=build-asan CC=clang CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" \
	    build-asan/payd build-asan/paysim build-asan/payctl build-asan/paybench build-asan/payfailover \
	    build-asan/paycheck test-unit-asan test-integration-asan \
	    test-integration-pg-asan

.PHONY: test-unit-asan test-integration-asan test-integration-pg-asan
test-unit-asan: $(UNIT_BIN)
	@ASAN_OPTIONS=detect_leaks=1 tests/unit/run.sh $(UNIT_BIN)

test-integration-asan: $(B)/payd $(B)/paysim $(B)/payctl $(B)/paybench $(B)/paycheck $(B)/payfailover
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    PAYD_BIN=$(abspath $(B)/payd) PAYSIM_BIN=$(abspath $(B)/paysim) PAYD_TEST_SLOW=1 \
	    $(PYTHON) tests/integration/run.py

test-integration-pg-asan: $(B)/payd $(B)/paysim $(B)/payctl $(B)/paybench $(B)/paycheck $(B)/payfailover
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
	    PAYD_BIN=$(abspath $(B)/payd) PAYSIM_BIN=$(abspath $(B)/paysim) PAYD_TEST_SLOW=1 \
	    PAYD_TEST_STORE=postgres $(PYTHON) tests/integration/run.py

bench: all $(B)/guard_micro $(B)/redis_limit_micro $(B)/obs_micro
	@scripts/deps.sh bench
	bench/flow.sh
	bench/machine.sh
	bench/overload.sh
	bench/guard.sh
	bench/redis_limit.sh
	bench/obs.sh
	bench/scenarios.sh
	bench/plot.sh

clean:
	rm -rf build build-asan

# ---- fuzzing (docs/fuzzing.md) ----
# libFuzzer targets for the request parsers and handlers (tests/fuzz/fuzz_*.c), built with
# clang into build-fuzz/: payd's objects with -fsanitize=fuzzer-no-link,address,undefined,
# the targets linked with -fsanitize=fuzzer,address,undefined. They link every payd object
# but the HTTP server's two (http/mhd.c, http/server.c): tests/fuzz/lib/request.c stands in
# for them with an in-memory request. scripts/test_fuzz.sh replays each target's
# tests/fuzz/regressions/ and corpus, then fuzzes it for FUZZ_SECONDS on a copy of the
# corpus; any crash, leak or timeout fails.
FUZZ_SECONDS ?= 20
FUZZ_SRC     := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(FUZZ_SRC))
FUZZ_BIN     := $(patsubst tests/fuzz/%.c,$(B)/fuzz/%,$(FUZZ_SRC))
FUZZ_LIB_SRC := $(sort $(wildcard tests/fuzz/lib/*.c))
FUZZ_LIB_OBJ := $(patsubst tests/fuzz/lib/%.c,$(B)/obj/fuzz/%.o,$(FUZZ_LIB_SRC))
FUZZ_HDRS    := $(wildcard tests/fuzz/lib/*.h)
FUZZ_APP_OBJ := $(filter-out $(B)/obj/http/mhd.o $(B)/obj/http/server.o,$(LIB_OBJ))
FUZZ_LINK    ?= -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all

.PHONY: test-fuzz fuzz-build clean-fuzz
.SECONDARY: $(FUZZ_LIB_OBJ)
test-fuzz:
	@scripts/deps.sh asan
	$(MAKE) B=build-fuzz CC=clang CFLAGS="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all" \
	    fuzz-build
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/test_fuzz.sh build-fuzz $(FUZZ_TARGETS)

fuzz-build: $(FUZZ_BIN)

$(B)/obj/fuzz/%.o: tests/fuzz/lib/%.c $(HDRS) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(SAN) $(DEFS) -Itests/fuzz -c $< -o $@

$(B)/fuzz/%: tests/fuzz/%.c $(FUZZ_LIB_OBJ) $(FUZZ_APP_OBJ) $(FUZZ_HDRS)
	@mkdir -p $(dir $@)
	$(CC) $(WARN) $(CFLAGS) $(FUZZ_LINK) $(DEFS) -Itests/fuzz -o $@ $< $(FUZZ_LIB_OBJ) \
	    $(FUZZ_APP_OBJ) $(LIBS)

clean-fuzz:
	rm -rf build-fuzz
