# portcullis tasks. `just --list` shows them.

# release build
build:
    cargo build --release

# static glibc binary (static-pie) in target/x86_64-unknown-linux-gnu/release/
static:
    RUSTFLAGS='-C target-feature=+crt-static' cargo build --release --target x86_64-unknown-linux-gnu

# all tests: unit + integration against real PostgreSQL / sshd (run as root)
test:
    cargo test --all-targets

# formatting and clippy, warnings are errors
lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings

# what CI runs: packages, lint, tests (run as root)
ci:
    bash .ci/run

# pgbench select-only: direct vs pgbouncer vs portcullis (DURATION=10 by default)
bench-pg:
    bash bench/pg.sh

# the audit writer's CPU per statement event, alone (EVENTS=, RATE=, RUNS= override)
bench-audit:
    bash bench/audit.sh

# ssh throughput, 1 GiB up and down: direct sshd vs OpenSSH ProxyJump vs portcullis (as root;
# SIZE=256M, CIPHER=aes128-gcm@openssh.com, RUNS=3 override)
bench-ssh:
    bash bench/ssh.sh

# run one fuzz target for 60 s (needs nightly and cargo-fuzz)
fuzz TARGET:
    mkdir -p fuzz/corpus/{{TARGET}}
    cargo +nightly fuzz run {{TARGET}} fuzz/corpus/{{TARGET}} fuzz/seeds/{{TARGET}} -- -max_total_time=60

# run the gateway with the example policy
run:
    cargo run --release -- serve --config policy.example.toml

# masking: detector throughput, and a large SELECT direct vs gateway with masking off and on
bench-mask:
    bash bench/mask.sh
