# The two commands of the README's first screen, plus helpers. Every target installs what it needs.
.PHONY: install demo test test-unit stack-up stack-down proto proto-check bench clean

VENV ?= .venv
ISE := $(VENV)/bin/ise
PYTEST := $(VENV)/bin/python -m pytest

install:
	@scripts/install.sh

demo: install  ## the main job end to end on the embedded default stack -> ./out/
	$(ISE) run --intents 5

test: install  ## the whole suite: unit, integration (real Kafka, Redis, Docker, gRPC) and e2e
	$(PYTEST) -ra

test-unit: install
	$(PYTEST) -ra tests/unit

stack-up: install
	$(ISE) stack up

stack-down:
	$(ISE) stack down

proto: install
	$(VENV)/bin/python scripts/gen_proto.py

proto-check: install
	$(VENV)/bin/python scripts/gen_proto.py --check

clean:
	rm -rf out .pytest_cache
