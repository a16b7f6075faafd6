"""Renderers: tables, plots and the written report, from stored rows only."""
