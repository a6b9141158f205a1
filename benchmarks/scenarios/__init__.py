"""One module per scenario; each takes the shared ``Bench`` and returns JSON-ready rows."""
