"""Coverage-guided fuzzing harnesses (atheris) for the code that reads what clients and operators
send: the request decoder, decompression, config.toml, the logging settings. See README.md.

Each harness module exposes `check_input(data: bytes) -> None`, the property function: it raises
AssertionError (or lets an unexpected exception escape) when it finds a bug, and returns quietly
otherwise. atheris is imported only when a harness runs as a script, so the tests replay the seed
corpus with the property functions alone (tests/unit/test_fuzz_corpus.py).
"""
