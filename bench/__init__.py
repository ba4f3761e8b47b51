"""cidag benchmarks (`make bench`); see bench/README.md. A package so that generated
manifests can name the plugin types in bench/noop.py as `bench.noop:run`."""
