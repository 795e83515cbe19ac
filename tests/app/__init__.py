"""Tests of the app (bharateo/app/ and the pages), mirroring bharateo/app/: page tests through
streamlit.testing.v1.AppTest, and the browser lesson in real Chromium (test_browser.py)."""
