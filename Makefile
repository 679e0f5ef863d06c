# Daily shortcuts; the scripts are the source of truth.
.PHONY: build test demo bench bench-one bench-long clean
build:
	scripts/build
test:
	scripts/test
demo:
	scripts/demo
bench: build
	python3 bench/run_bench.py --pods 3
bench-one: build
	python3 bench/run_bench.py --pods 1
bench-long: build
	python3 bench/run_bench.py --long
clean:
	rm -rf build
