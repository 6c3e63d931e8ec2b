"""pydp benchmarks: suites (test_<suite>_bench.py), the result format and the report."""
