# cascade — set-up, run, test. Every target is idempotent.
.PHONY: setup run test check bench clean-components train-setup

LISTEN ?= 127.0.0.1:8091

setup:
	bash scripts/setup.sh

run: setup
	./target/release/cascade serve --listen $(LISTEN) --policies policies

check: setup
	./target/release/cascade check --policies policies

test: setup
	bash scripts/test.sh

bench: setup
	cargo run --release -p cascade-bench --bin router-bench

# the training tools (PyTorch, transformers) in .cache/train-venv: README, "Train on the validators' data"
train-setup: setup
	bash scripts/train_venv.sh
