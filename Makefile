# Every target is documented; `make help` lists them. CI runs `make test` through .ci/run.
SHELL := /bin/bash
GO ?= go
BIN := bin/tasker

.PHONY: help build run demo test bench bench-quick bench-river bench-river-quick bench-postgraphile bench-peers generate verify-generate lint ensure-postgres playground-assets

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

build: ## build the tasker binary into bin/
	$(GO) build -o $(BIN) .

ensure-postgres: ## install PostgreSQL from Debian/Ubuntu packages when no server binaries are found
	@./scripts/ensure-postgres.sh

# Without DATABASE_URL, serve runs a private PostgreSQL cluster in $$TASKER_DATA_DIR/postgres
# (default ~/.local/share/tasker/postgres). As root it runs that cluster as the postgres user
# (else nobody) and, when that user cannot reach the default directory (a private /root), keeps
# it in /var/lib/tasker/postgres instead. The cluster stops with the server, however it ends.
run: ensure-postgres build ## start the whole service; without DATABASE_URL it runs its own PostgreSQL
	exec ./$(BIN) serve

demo: ensure-postgres build ## like run, and start example tasks that succeed, retry and fail
	exec ./$(BIN) demo

test: ## run every test against PostgreSQL (TASKER_TEST_DATABASE_URL, default 127.0.0.1:5432)
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...
	cd bench/river && $(GO) vet . && $(GO) test -count=1 .

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

generate: ## regenerate generated code (gqlgen)
	$(GO) generate ./...

playground-assets: ## refresh the playground's GraphiQL and React from the npm registry (versions pinned in scripts/playground-assets.sh)
	./scripts/playground-assets.sh

verify-generate: ## fail when generated code is stale
	$(GO) generate ./...
	@git diff --exit-code -- graph/ || (echo "generated code is stale: run make generate and commit" >&2; exit 1)

# Benchmarks: internal/testkit/bench (read side: views vs the naive baseline, at growing sizes) and every
# other package's Benchmark functions, collected into BENCHMARKS.md by internal/testkit/bench/cmd/benchreport.
# internal/testkit/bench runs with BENCH_TIME; other packages with BENCH_OTHER_TIME (their sizes are their own,
# except internal/refresh's dashboards and internal/retention's runs: TASKER_BENCH_STEPS databases, 10,000 and
# 1,000,000 steps in make bench).
BENCH_OTHER_PKGS = $$($(GO) list ./... | grep -v /internal/testkit/bench)

bench: ## run every benchmark at full size (10,000-step tasks, 1,000,000-step databases, 10,000 tasks drained) and write BENCHMARKS.md
	@mkdir -p bin; start=$$(date +%s); \
	{ TASKER_BENCH_TASK_STEPS=10,100,1000,10000 TASKER_BENCH_DB_STEPS=10000,1000000 \
		$(GO) test -run '^$$' -bench . -benchtime=2s -timeout 25m ./internal/testkit/bench/; \
	  TASKER_BENCH_STEPS=10000,1000000 TASKER_BENCH_TASKS=10000 \
		$(GO) test -p 1 -run '^$$' -bench . -benchtime=2s -timeout 25m $(BENCH_OTHER_PKGS); } 2>&1 | tee bin/bench.txt; \
	$(GO) run ./internal/testkit/bench/cmd/benchreport -in bin/bench.txt -out BENCHMARKS.md \
		-command "make bench" -seconds $$(( $$(date +%s) - start ))

bench-quick: ## run every benchmark at small sizes, one iteration for other packages' (about two minutes); write BENCHMARKS.md
	@mkdir -p bin; start=$$(date +%s); \
	{ TASKER_BENCH_TASK_STEPS=10,100,1000 TASKER_BENCH_DB_STEPS=10000,100000 \
		$(GO) test -run '^$$' -bench . -benchtime=20x -timeout 10m ./internal/testkit/bench/; \
	  TASKER_BENCH_STEPS=10000 \
		$(GO) test -run '^$$' -bench . -benchtime=1x -timeout 10m $(BENCH_OTHER_PKGS); } 2>&1 | tee bin/bench.txt; \
	$(GO) run ./internal/testkit/bench/cmd/benchreport -in bin/bench.txt -out BENCHMARKS.md \
		-command "make bench-quick" -seconds $$(( $$(date +%s) - start ))

# Engine vs River (bench/river, a module of its own so that go.mod does not depend on River):
# River and tasker worker processes drain the same work on the same PostgreSQL, a fresh
# database per run; writes the section "Engine vs River" of BENCHMARKS.md. RIVER_BENCH_URL is
# the server (each run creates and drops its own database there).
RIVER_BENCH_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable

bench-river: build ## tasker engine vs River: 10,000 one-step tasks at 32 and 100 workers, 10,000 five-step tasks at 32, 10,000 one-step tasks sleeping 10 ms at 32, three rounds, medians (about seven minutes)
	cd bench/river && $(GO) run . -server-url '$(RIVER_BENCH_URL)' -tasker ../../$(BIN) -templates-dir templates \
		-tasks 10000 -out ../../BENCHMARKS.md -command "make bench-river"

bench-river-quick: build ## the same with 2,000 tasks per run, one round (about a minute)
	cd bench/river && $(GO) run . -server-url '$(RIVER_BENCH_URL)' -tasker ../../$(BIN) -templates-dir templates \
		-tasks 2000 -rounds 1 -out ../../BENCHMARKS.md -command "make bench-river-quick"

# The peer server of bench-postgraphile: PostGraphile 5 on Node 22 from the npm registry, at the exact
# versions of internal/testkit/bench/peers/package-lock.json, installed into bin/peers (not committed).
PEERS_DIR := bin/peers
$(PEERS_DIR)/node_modules/.package-lock.json: internal/testkit/bench/peers/package.json internal/testkit/bench/peers/package-lock.json
	@mkdir -p $(PEERS_DIR)
	cp internal/testkit/bench/peers/package.json internal/testkit/bench/peers/package-lock.json $(PEERS_DIR)/
	cd $(PEERS_DIR) && npm ci --no-audit --no-fund --engine-strict=false

# PEERS_DURATION per query, server and concurrency (20s; 4s for a quick run); PEERS_STEPS steps
# in the database (100000); PEERS_REUSE=1 keeps an already seeded database; PEERS_ADMIN_URL may
# create databases (default postgres on 127.0.0.1:5432).
PEERS_DURATION ?= 20s
PEERS_STEPS ?= 100000
PEERS_ADMIN_URL ?= postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable
bench-postgraphile: build $(PEERS_DIR)/node_modules/.package-lock.json ## GraphQL reads against PostGraphile 5 on one seeded database; writes the Peers section of BENCHMARKS.md
	cp internal/testkit/bench/peers/graphile.config.mjs $(PEERS_DIR)/
	$(GO) run ./internal/testkit/bench/cmd/peers -tasker $(BIN) -peers-dir $(PEERS_DIR) -admin-url '$(PEERS_ADMIN_URL)' \
		-steps $(PEERS_STEPS) -duration $(PEERS_DURATION) $(if $(PEERS_REUSE),-reuse) \
		-command "make bench-postgraphile$(if $(filter-out 20s,$(PEERS_DURATION)), PEERS_DURATION=$(PEERS_DURATION))"

bench-peers: bench-river bench-postgraphile ## benchmarks against comparable projects (Engine vs River, GraphQL reads vs PostGraphile)
