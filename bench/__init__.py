"""Benchmarks of the pack (issue 7): not tests; run with ``python -m bench.run`` or ``bench/run.sh``."""
