"""The models: the notebook's TinyRGBMAE (notebook.py), the MAE variant (mae.py), the registry
every caller builds a model through (registry.py), how many patches a mask ratio hides
(masking.py), and where a model runs and in what arithmetic (device.py: the device and the
precision policy, used by training, evaluation and by storage when a saved run is loaded).

Builds on bharateo.config and bharateo.data; knows nothing of training, storage or the app.
"""
