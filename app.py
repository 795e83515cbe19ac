"""BharatEO Lab: home page and navigation. Run with `streamlit run app.py`."""
import pandas as pd
import streamlit as st

from bharateo.app import state as ui, regions as views
from bharateo.words import plural
from bharateo.tokens import CHANNEL_OPTIONS, token_accounting
from bharateo.worldcover import ATTRIBUTION, CITATION, data_source_from_env

PIPELINE_DOT = """
digraph {
  rankdir=LR; node [shape=box, style="rounded,filled", fillcolor="#f4f6f4", fontsize=11];
  roi [label="WorldCover ROI\\n2048 x 2048 px, ~9 m"];
  chip [label="chip\\n3 x 128 x 128\\npalette RGB"];
  tok [label="64 tokens\\n64 x 768"];
  mask [label="mask 75%\\n16 visible"];
  enc [label="transformer\\nencoder 64 x 128"];
  pix [label="pixel head\\nreconstruct masked RGB", fillcolor="#fde9e4"];
  cls [label="patch head\\nESA class per token", fillcolor="#e6f0fa"];
  roi -> chip -> tok -> mask -> enc; enc -> pix; enc -> cls;
}
"""


def home() -> None:
    st.title("BharatEO Lab")
    st.markdown(
        "A tiny Earth-observation **foundation model** you can watch learn. Land-cover pixels "
        "(ESA WorldCover 10 m 2021 v200 where the files say so) are cut into 128 x 128 chips, "
        "each chip becomes 64 patch tokens, most tokens are hidden, and a ~0.8M-parameter masked "
        "autoencoder learns to paint the hidden ones back and to name the land cover of every "
        "token.")
    st.markdown(f"**Data in use:** {ui.data_in_use_text()}")
    ui.synthetic_banner()
    st.graphviz_chart(PIPELINE_DOT)
    st.markdown(f"The 8 classes and their palette colours: {views.legend_html()}",
                unsafe_allow_html=True)

    st.subheader("Running a lesson")
    st.markdown(
        "1. **Regions**: pick areas on the map (presets: the notebook's Delhi NCR, Shekhawati and "
        "Mathura belt in north India, and São Tomé and Príncipe from the offline sample) and see "
        "their land cover.\n"
        "2. **Chips**: cut them into chips and look at the 64 tokens the model sees.\n"
        "3. **Train**: choose hyperparameters, press Train, watch the losses fall.\n"
        "4. **Reconstruct**: drag the mask ratio and see what the model fills in.\n"
        "5. **Evaluate**: the confusion matrix, on training chips and on a held-out region.")

    st.subheader("Token accounting calculator")
    st.caption("How many tokens a run shows the model: the notebook's table for any settings.")
    c1, c2, c3 = st.columns(3)
    for key, default in (("calc_chips", 384), ("calc_epochs", 20), ("calc_mask_ratio", 0.75),
                         ("calc_channels", 3), ("calc_chip_size", 128), ("calc_patch_size", 16)):
        ui.keep_widget(key, default)  # the calculator's choices last for the session
    chips = c1.slider("chips", 16, 4096, step=16, key="calc_chips")
    epochs = c1.slider("epochs", 1, 200, key="calc_epochs")
    mask_ratio = c2.slider("mask ratio", 0.05, 0.95, step=0.05, key="calc_mask_ratio")
    channels = c2.selectbox("input channels", list(CHANNEL_OPTIONS), key="calc_channels",
                            format_func=lambda c: f"{c}: {CHANNEL_OPTIONS[c]}")
    chip_size = c3.select_slider("chip size (px)", [32, 64, 128, 256], key="calc_chip_size")
    patch_size = c3.select_slider("patch size (px)", [4, 8, 16, 32], key="calc_patch_size")
    try:
        mine = token_accounting(chips, epochs, mask_ratio, channels, chip_size, patch_size)
        v0 = token_accounting(1_000_000, 100, mask_ratio, channels, chip_size, patch_size)
    except Exception as exc:
        st.error(str(exc))
        return
    rows = [("tokens per chip", "tokens_per_chip"), ("values per token", "token_dim"),
            ("total token presentations", "total_tokens"), ("visible token inputs", "visible_tokens"),
            ("masked token targets", "masked_tokens"),
            ("masked pixel regression targets", "masked_pixel_targets")]
    table = pd.DataFrame({
        "": [label for label, _ in rows],
        f"this run ({chips:,} chips x {plural(epochs, 'epoch')})":
            [f"{getattr(mine, k):,}" for _, k in rows],
        "BharatEO-v0 (1M chips x 100 epochs)": [f"{getattr(v0, k):,}" for _, k in rows],
    })
    st.dataframe(table, hide_index=True, width="stretch")

    st.subheader("Data")
    st.markdown(
        "Pixels are read from the public WorldCover Cloud Optimized GeoTIFFs with rasterio "
        "windows, so only the bytes of each region are fetched, and cached under `data/`. "
        "Offline, set `BHARATEO_WORLDCOVER_DIR` to a folder of tiles or run "
        "`python -m bharateo prefetch` beforehand; without either, the lab uses its bundled "
        "sample tile N00E006 (São Tomé and Príncipe). The notebook's north-India regions are the "
        "defaults whenever their tile N27E075 can be read or they are cached.")
    label, detail = ui.source_status(data_source_from_env())
    st.caption(f"Data source now: {label} ({detail}).")
    st.caption(f"Attribution: {ATTRIBUTION}.  \nCitation: {CITATION}.")


ui.init_state()
navigation = st.navigation([
    st.Page(home, title="Home", icon="🏠", default=True),
    st.Page(ui.PAGES["regions"], title="Regions", icon="🗺️"),
    st.Page(ui.PAGES["chips"], title="Chips", icon="🧩"),
    st.Page(ui.PAGES["train"], title="Train", icon="📈"),
    st.Page(ui.PAGES["reconstruct"], title="Reconstruct", icon="🎭"),
    st.Page(ui.PAGES["evaluate"], title="Evaluate", icon="📊"),
    st.Page(ui.PAGES["inside"], title="Inside the model", icon="🔬"),
])
ui.open_requested_page()
st.set_page_config(page_title="BharatEO Lab", page_icon="🛰️", layout="wide")
ui.sidebar()
ui.write_lesson_url()  # the lesson as this run starts: a page that calls st.stop can't send it later
try:
    navigation.run()
finally:  # and as it ends, for what the page changed (a refresh must find it)
    ui.write_lesson_url()
