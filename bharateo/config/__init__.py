"""Settings as science: every hyperparameter's name, type, bounds and help, declared once
(settings.py), and the checks of values read from disk or typed by a user (schema.py).

Imports nothing from the rest of the lab but bharateo.errors: every other package builds on it.
"""
