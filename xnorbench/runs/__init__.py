"""Runs: suites declare themselves (registry) and their options (options); the runner
opens a run row, streams a suite's rows into the store and closes the run with its
status; the machine a run ran on is captured with it (environment).
"""
