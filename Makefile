# EdgePool — one GNU Makefile for every binary, test and tool.
#
#   make            build edged (build/)
#   make run        install missing packages (as root), build, start the demo pool
#   make test       unit + integration tests under ASan/UBSan, and a short fuzz run
#   make fuzz       run every libFuzzer target for FUZZ_SECONDS each
#   make bench      run the benchmarks of tests/bench/
#   make SAN=1      the sanitizer build (build-san/)
#   make V=1        show the commands
#
# Every variable below may be overridden on the command line.

CC        ?= cc
FUZZ_CC   ?= clang
PKG_CONFIG ?= pkg-config
PYTHON    ?= /usr/bin/python3
SAN       ?= 0
FUZZ_SECONDS ?= 60
CI_FUZZ_SECONDS ?= 15

PKGS      := openssl libconfig libcares
CFLAGS    ?= -O2 -g
WARNINGS  := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wno-unused-parameter
CPPFLAGS  += -D_GNU_SOURCE -Icommon -Iedge
DEP_CFLAGS := $(shell $(PKG_CONFIG) --cflags $(PKGS) 2>/dev/null)
# libev ships no pkg-config file on Debian.
DEP_LIBS   := $(shell $(PKG_CONFIG) --libs $(PKGS) 2>/dev/null) -lev

ifeq ($(SAN),1)
BUILD     ?= build-san
SANFLAGS  := -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else
BUILD     ?= build
SANFLAGS  :=
endif

ALL_CFLAGS := -std=c11 $(WARNINGS) $(CFLAGS) $(SANFLAGS) $(DEP_CFLAGS) -MMD -MP
ALL_LDFLAGS := $(LDFLAGS) $(SANFLAGS)

ifeq ($(V),1)
Q :=
else
Q := @
endif

COMMON_SRC := $(wildcard common/*.c)
EDGE_SRC   := $(filter-out edge/main.c,$(wildcard edge/*.c))
LIB_OBJ    := $(patsubst %.c,$(BUILD)/%.o,$(COMMON_SRC) $(EDGE_SRC)) $(BUILD)/gen/default_conf.o

UNIT_SRC   := $(wildcard tests/unit/test_*.c)
UNIT_BIN   := $(patsubst tests/unit/%.c,$(BUILD)/tests/%,$(UNIT_SRC))

FUZZ_SRC   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN   := $(patsubst tests/fuzz/%.c,build-fuzz/%,$(FUZZ_SRC))

.PHONY: all run stop test unit integration fuzz fuzz-ci bench deps clean install
all: $(BUILD)/edged

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) -c -o $@ $<

# The embedded default configuration is etc/edged.conf, as a C string.
$(BUILD)/gen/default_conf.c: etc/edged.conf
	@mkdir -p $(dir $@)
	$(Q){ echo '/* Generated from etc/edged.conf by the Makefile. */'; \
	  echo 'extern const char cfg_default_text[];'; echo 'const char cfg_default_text[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; echo ';'; } > $@

$(BUILD)/libedge.a: $(LIB_OBJ)
	$(Q)$(AR) rcs $@ $^

$(BUILD)/edged: $(BUILD)/edge/main.o $(BUILD)/libedge.a
	@$(if $(Q),echo "  LD      $@")
	$(Q)$(CC) $(ALL_LDFLAGS) -o $@ $^ $(DEP_LIBS)

$(BUILD)/tests/%: tests/unit/%.c $(BUILD)/libedge.a
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  CC      $<")
	$(Q)$(CC) $(CPPFLAGS) $(ALL_CFLAGS) $(ALL_LDFLAGS) -o $@ $< $(BUILD)/libedge.a \
		$(DEP_LIBS) $(shell $(PKG_CONFIG) --libs cmocka 2>/dev/null)

# libFuzzer targets: clang, ASan + UBSan, and only the code under test
# (FUZZ_LINK_<target>: its sources; FUZZ_LIBS_<target>: its libraries).
FUZZ_LINK_fuzz_sip_parse := edge/sip_msg.c
FUZZ_LINK_fuzz_dns_answer := edge/dns_msg.c
FUZZ_LIBS_fuzz_dns_answer := -lcares
FUZZ_LINK_fuzz_cfg_names := edge/cfg.c edge/domain.c common/log.c $(BUILD)/gen/default_conf.c
FUZZ_LIBS_fuzz_cfg_names := $(shell $(PKG_CONFIG) --libs libconfig 2>/dev/null)
.SECONDEXPANSION:
build-fuzz/%: tests/fuzz/%.c $$(FUZZ_LINK_$$*)
	@mkdir -p $(dir $@)
	@$(if $(Q),echo "  FUZZ    $<")
	$(Q)$(FUZZ_CC) $(CPPFLAGS) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined \
		-o $@ $< $(FUZZ_LINK_$*) $(FUZZ_LIBS_$*)

deps:
	$(Q)tools/deps.sh

# `make run` builds the normal binary and starts the two-organization demo.
run: deps
	$(Q)$(MAKE) --no-print-directory SAN=0 all
	$(Q)tools/demo.sh start $(BUILD)/edged

stop:
	$(Q)tools/demo.sh stop

# `make test`: everything CI runs, against the sanitizer build.
test: deps
	$(Q)$(MAKE) --no-print-directory SAN=1 unit integration
	$(Q)$(MAKE) --no-print-directory fuzz-ci

unit: $(UNIT_BIN)
	$(Q)set -e; for t in $(UNIT_BIN); do echo "== $$t"; $$t; done

# The tests run against $(BUILD)/edged; the valgrind test needs the plain build.
integration: $(BUILD)/edged
	$(Q)$(MAKE) --no-print-directory SAN=0 all
	$(Q)EDGED=$(abspath $(BUILD)/edged) EDGED_PLAIN=$(abspath build/edged) \
		$(PYTHON) -m pytest -q tests/integration

fuzz: $(FUZZ_BIN)
	$(Q)set -e; for f in $(FUZZ_BIN); do n=$$(basename $$f); mkdir -p build-fuzz/corpus-$$n; \
		$$f -max_total_time=$(FUZZ_SECONDS) -print_final_stats=1 build-fuzz/corpus-$$n tests/fuzz/corpus/$${n#fuzz_}; done

fuzz-ci:
	$(Q)$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=$(CI_FUZZ_SECONDS)

bench: deps
	$(Q)$(MAKE) --no-print-directory SAN=0 all
	$(Q)tests/bench/run.sh

install: all
	install -D -m 0755 $(BUILD)/edged $(DESTDIR)/usr/local/sbin/edged

clean:
	rm -rf build build-san build-fuzz

-include $(shell find build build-san -name '*.d' 2>/dev/null)
