"""Helpers the tests and the benchmarks in bench/ share (never fixtures, never tests): waiting on
an event (waiting) and a clock the tests drive (clock)."""
