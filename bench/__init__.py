"""Benchmarks of the pack: not tests; run with ``python -m bench.run`` or ``bench/run.sh``."""
