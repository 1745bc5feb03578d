# Every target is documented; `make help` lists them. CI runs `make test` through .ci/run.
SHELL := /bin/bash
GO ?= go
BIN := bin/tasker

.PHONY: help build run test test-short bench bench-quick generate verify-generate lint ensure-postgres

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

test: ## run every test against PostgreSQL (TASKER_TEST_DATABASE_URL, default 127.0.0.1:5432)
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 20m ./...

lint: ## gofmt and go vet
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || (gofmt -l $$(git ls-files '*.go'); exit 1)
	$(GO) vet ./...

generate: ## regenerate generated code (gqlgen)
	$(GO) generate ./...

verify-generate: ## fail when generated code is stale
	$(GO) generate ./...
	@git diff --exit-code -- graph/ || (echo "generated code is stale: run make generate and commit" >&2; exit 1)
