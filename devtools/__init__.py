"""Local stand-ins for the tests, the demo and the benchmark. Never deployed (.funcignore)."""
