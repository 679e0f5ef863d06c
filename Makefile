# Daily shortcuts; the scripts are the source of truth.
.PHONY: build test demo bench clean
build:
	scripts/build
test:
	scripts/test
demo:
	scripts/demo
bench: build
	python3 bench/run_bench.py
clean:
	rm -rf build
