"""gridclear's benchmarks: run with ``script/bench [NAME ...]``; never part of script/test."""
