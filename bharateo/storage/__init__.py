"""What is kept on disk: saved runs (runs.py) under the checkpoints folder's safety rules
(runfolder.py), with their band statistics read back typed, results stored beside a run and
their typed shapes (results.py), chip stores (chipstore.py), exports (export.py) and the checks
of folder paths given from outside (paths.py). Every file is
written with the lab's one atomic writer (bharateo/files.py).

Builds on bharateo.config, bharateo.data and bharateo.models; knows nothing of training or the app.
A saved run's settings are rebuilt by the check the training layer registers
(runs.register_settings_check: RunConfig.from_dict), so storage never imports training.
"""
