"""The GPU check is a script (tests/gpu/run.sh), not a pytest suite: nothing here is ever collected, so CI's
`pytest` over tests/ (which never has a CUDA device) skips this folder whatever its files are named."""
collect_ignore_glob = ["*.py"]
