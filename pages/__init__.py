"""The app's pages. app.py routes them with st.navigation; importing this package makes sure it does.

Streamlit keeps an older multipage mode for a `pages/` folder beside the main script. On a fresh
server, until some session has run app.py, a page opened by its own link (a URL like /finetune
that a teacher shares with a room) runs on its own: no navigation, no sidebar, no error guard.
Every page imports this package first. Its first import switches the server to app.py's navigation
(the flag app.py's `st.navigation` would set) and reruns that session through app.py.
"""

import streamlit as st
from streamlit.runtime.pages_manager import PagesManager

if PagesManager.uses_pages_directory and st.runtime.exists():
    PagesManager.uses_pages_directory = False
    st.rerun()
