#!/usr/bin/env bash
# The whole suite, one profile (release, as built by set-up): unit tests of every crate,
# the components' own tests, then the integration tests against the real binary.
set -euo pipefail
cd "$(dirname "$0")/.."
export CASCADE_SHARED="${CASCADE_SHARED:-$(cd .. && pwd)/shared}"
.venv/bin/python tests/models/make_test_models.py target/test-models
(cd plugins && cargo test --quiet --release --target x86_64-unknown-linux-gnu -p keywords)
cargo test --release --workspace
