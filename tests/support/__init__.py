"""Helpers the tests and the benchmarks in bench/ share; never fixtures (those are in conftest.py)
and never tests. bench/ imports only this package, never a test module.

fixture_tiles       synthetic WorldCover-grid fixture tiles and the local HTTP servers
s2_fixtures         the shared Sentinel-2 scene, its label fixtures and a local STAC API
untrusted_fixtures  what the interpreter opens; a run saved by today's code
paths               the repository, Home's script, ../shared
models              the tiny model (TINY_MODEL) and random chip sets the quick tests train
runs                the tiny trained run's settings, saving it, untrained runs, result dicts
stores              the regions and chip settings of the chip-store and DDP tests
cli                 `python -m bharateo ...` in this process (run_cli)
pages               AppTest helpers: open a page, wait for its off-page results, Train knobs
waiting             the one wait_until (on a condition, with a hang guard only) and join
clock               FakeClock: the job service's clock, advanced by the test
"""
