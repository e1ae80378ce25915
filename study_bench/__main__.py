"""python -m study_bench: the benchmark's command line (study_bench.main)."""

from study_bench import main

main()
