"""The benchmarks behind `umup-repro bench` (`bench`: training step), `bench-data` (`bench_data`:
tokenizer and token cache) and `bench-dag` (`bench_dag`: dry run and aggregation at paper size).

May import: everything below the CLI.
"""
