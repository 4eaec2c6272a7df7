# Tend: the two commands a newcomer needs are `make run` and `make test`.
.PHONY: run up down test bench lint infra screenshots

run:   ## everything in the foreground: Kafka, PostgreSQL, the services; Ctrl-C stops it
	@deploy/local/stack.sh run

up:    ## the same in the background; returns once every service is ready
	@deploy/local/stack.sh up

down:  ## stop the services and the local Kafka and PostgreSQL
	@deploy/local/stack.sh down

infra: ## only Kafka and PostgreSQL
	@deploy/local/stack.sh infra

test:  ## the lint, then the whole suite against the real broker and database
	@deploy/local/stack.sh test $(PYTEST_ARGS)

bench: ## benchmarks, printed as figures
	@deploy/local/stack.sh bench

screenshots: ## the README's console screenshots (docs/screenshots/), on the demo's data
	@deploy/local/stack.sh screenshots

lint:  ## ruff, mypy (strict) and the import rules (import-linter)
	@deploy/local/stack.sh lint
