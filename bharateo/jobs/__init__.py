"""The job service: trainings in worker processes (worker.py), a first-come-first-served queue
per server with its watchdogs (service.py), a server's limits on one training (limits.py), and
the looks computed off the page (looks.py). No Streamlit: the app drives it, tests drive it with
an injected clock.

Builds on every science package; the app (bharateo.app) builds on it.
"""
