"""The review app's logic: files and paths, session state, model work, pixels for display.

``apps/review.py`` holds only the Streamlit layout and calls these modules.
"""
