"""The models: the notebook's TinyRGBMAE and ModelConfig (notebook.py), the MAE variant
(mae.py), each variant's arithmetic by name without its nn.Module (sizes.py: parameters, layers,
FLOPs per chip, its own size rules; what ModelConfig.validate checks), the registry every caller
builds a model through (registry.py, which imports the classes and checks its names are
sizes.py's), how many patches a mask ratio hides (masking.py), and where a model runs and in
what arithmetic (device.py: the device and the precision policy, used by training, evaluation
and by storage when a saved run is loaded). Every variant declares `band_stats`, the per-band
normalisation of its input that is saved with its run. Imports go one way: sizes and masking
<- notebook <- mae <- registry. Chips become tokens with bharateo.data.patches.

Builds on bharateo.config and bharateo.data; knows nothing of training, storage or the app.
"""
