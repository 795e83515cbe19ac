import streamlit as st

st.title("chips")
st.info("This page is being built.")
