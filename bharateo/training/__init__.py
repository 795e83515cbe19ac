"""Learning and looking: the training loop as one generator of typed events (loop.py), one
experiment end to end (experiment.py), DDP under torchrun (distributed.py), evaluation
(evaluate.py), a look inside a model (inspect_model.py), token accounting (tokens.py) and the
training-time estimate before a training starts (estimate.py).

Builds on config, data, models and storage; knows nothing of the job service or the app.
"""
