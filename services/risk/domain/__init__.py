"""The risk rules: pure Python, no I/O; time comes in as arguments."""
