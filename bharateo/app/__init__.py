"""The Streamlit app's own code: one module per page or concern, on top of the science package.

`bharateo/` (one level up) is the science and the CLI and imports no Streamlit, plotly or folium;
everything that draws, holds session state or runs a page lives here, and the files under
`pages/` (and `app.py`, Home) only lay widgets out and call into these modules.
"""
