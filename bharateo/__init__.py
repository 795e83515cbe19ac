"""BharatEO Lab core: WorldCover ROIs, chips, the tiny MAE, training, evaluation and saved runs.

Every page of the Streamlit app and every `python -m bharateo` command calls this package.
"""
from bharateo.errors import BharatEOError

__all__ = ["BharatEOError"]
