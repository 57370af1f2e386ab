"""Speed and memory benchmarks (never run by the test suite): each prints a table
and writes JSON, measuring our path against a plain baseline in the same run."""
