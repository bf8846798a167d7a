"""The web console: static HTML, CSS and JS served by the app itself (see serve.py)."""
