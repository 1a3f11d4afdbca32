from plumbing.migrations import run_env

run_env()
