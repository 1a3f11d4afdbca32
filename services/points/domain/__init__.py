"""Points domain rules: pure Python, no I/O, time passed in. The store and the API call these."""
