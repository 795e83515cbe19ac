"""Helpers the tests and the benchmarks in bench/ share (never fixtures, never tests): synthetic
WorldCover-grid fixture tiles (fixture_tiles), the Sentinel-2 material (s2_fixtures), the
untrusted-input helpers (untrusted_fixtures), the repository's paths (paths) and the tiny model
every quick test trains (models). bench/ imports only this package, never a test module."""
