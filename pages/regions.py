import streamlit as st

st.title("regions")
st.info("This page is being built.")
