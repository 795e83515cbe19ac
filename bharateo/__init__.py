"""BharatEO Lab's science and command line: WorldCover ROIs, chips, the tiny MAE and its variants,
training, evaluation and saved runs.

Every `python -m bharateo` command and the Streamlit app (the sub-package bharateo.app, which
builds on this one) call it. Nothing directly in this package imports Streamlit, plotly, folium or
bharateo.app (tests/test_layers.py checks).
"""
from bharateo.errors import BharatEOError

__all__ = ["BharatEOError"]
