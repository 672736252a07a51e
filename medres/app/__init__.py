"""The review app's logic: files and paths, session state, model work, pixels for display.

``medres/app/review.py`` (run by ``medres app``) holds only the Streamlit layout and calls these modules.
"""
