"""BharatEO Lab: home page and navigation. Run with `streamlit run app.py`."""
import streamlit as st

from bharateo.app.home import CALCULATOR_DEFAULTS, PIPELINE_DOT, channel_options, token_table
from bharateo.app.lesson import guard_long_addresses, write_lesson_url
from bharateo.app.pictures import legend_html
from bharateo.app.regions import data_in_use_text
from bharateo.app.sidebar import sidebar, source_status, synthetic_banner
from bharateo.app.startup import init_state, open_requested_page
from bharateo.app.state import PAGES, keep_widget
from bharateo.config.environment import problems as environment_problems
from bharateo.data.worldcover import ATTRIBUTION, CITATION, data_source_from_env


guard_long_addresses()  # an address Streamlit drops for its size gets a note and is cleaned
if bad_settings := environment_problems():  # a bad BHARATEO_* value: a note each, nothing runs
    for problem in bad_settings:
        st.error(problem)
    st.info("Fix the server's environment (docs/environment.md) and start the lab again.")
    st.stop()


def home() -> None:
    st.title("BharatEO Lab")
    st.markdown(
        "A tiny Earth-observation **foundation model** you can watch learn. Land-cover pixels "
        "(ESA WorldCover 10 m 2021 v200 where the files say so) are cut into 128 x 128 chips, "
        "each chip becomes 64 patch tokens, most tokens are hidden, and a ~0.8M-parameter masked "
        "autoencoder learns to paint the hidden ones back and to name the land cover of every "
        "token.")
    st.markdown(f"**Data in use:** {data_in_use_text()}")
    synthetic_banner()
    st.graphviz_chart(PIPELINE_DOT)
    st.markdown(f"The 8 classes and their palette colours: {legend_html()}",
                unsafe_allow_html=True)

    st.subheader("Running a lesson")
    st.markdown(
        "1. **Regions**: pick areas on the map (presets: the notebook's Delhi NCR, Shekhawati and "
        "Mathura belt in north India, and São Tomé and Príncipe from the offline sample) and see "
        "their land cover.\n"
        "2. **Chips**: cut them into chips and look at the 64 tokens the model sees.\n"
        "3. **Train**: choose hyperparameters, press Train, watch the losses fall.\n"
        "4. **Reconstruct**: drag the mask ratio and see what the model fills in.\n"
        "5. **Evaluate**: the confusion matrix, on training chips and on a held-out region.\n"
        "6. **Inside the model**: which patches each attention head looks at to fill in a hidden "
        "one, and a map of the token embeddings coloured by land cover.")

    st.subheader("Token accounting calculator")
    st.caption("How many tokens a run shows the model: the notebook's table for any settings.")
    c1, c2, c3 = st.columns(3)
    for key, default in CALCULATOR_DEFAULTS.items():
        keep_widget(key, default)  # the calculator's choices last for the session
    chips = c1.slider("chips", 16, 4096, step=16, key="calc_chips")
    epochs = c1.slider("epochs", 1, 200, key="calc_epochs")
    mask_ratio = c2.slider("mask ratio", 0.05, 0.95, step=0.05, key="calc_mask_ratio")
    options = channel_options()
    channels = c2.selectbox("input channels", list(options), key="calc_channels",
                            format_func=lambda c: f"{c}: {options[c]}")
    chip_size = c3.select_slider("chip size (px)", [32, 64, 128, 256], key="calc_chip_size")
    patch_size = c3.select_slider("patch size (px)", [4, 8, 16, 32], key="calc_patch_size")
    try:
        table = token_table(chips, epochs, mask_ratio, channels, chip_size, patch_size)
    except Exception as exc:
        st.error(str(exc))
        return
    st.dataframe(table, hide_index=True, width="stretch")

    st.subheader("Data")
    st.markdown(
        "Pixels are read from the public WorldCover Cloud Optimized GeoTIFFs with rasterio "
        "windows, so only the bytes of each region are fetched, and cached under `data/`. "
        "Offline, set `BHARATEO_WORLDCOVER_DIR` to a folder of tiles or run "
        "`python -m bharateo prefetch` beforehand; without either, the lab uses its bundled "
        "sample tile N00E006 (São Tomé and Príncipe). The notebook's north-India regions are the "
        "defaults whenever their tile N27E075 can be read or they are cached.")
    label, detail = source_status(data_source_from_env())
    st.caption(f"Data source now: {label} ({detail}).")
    st.caption(f"Attribution: {ATTRIBUTION}.  \nCitation: {CITATION}.")


init_state()
navigation = st.navigation([
    st.Page(home, title="Home", icon="🏠", default=True),
    st.Page(PAGES["regions"], title="Regions", icon="🗺️"),
    st.Page(PAGES["chips"], title="Chips", icon="🧩"),
    st.Page(PAGES["train"], title="Train", icon="📈"),
    st.Page(PAGES["reconstruct"], title="Reconstruct", icon="🎭"),
    st.Page(PAGES["evaluate"], title="Evaluate", icon="📊"),
    st.Page(PAGES["inside"], title="Inside the model", icon="🔬"),
])
open_requested_page()
st.set_page_config(page_title="BharatEO Lab", page_icon="🛰️", layout="wide")
sidebar()
write_lesson_url()  # the lesson as this run starts: a page that calls st.stop can't send it later
try:
    navigation.run()
finally:  # and as it ends, for what the page changed (a refresh must find it)
    write_lesson_url()
