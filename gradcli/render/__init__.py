"""Renderers: the same results as a table for people, or JSON / CSV for programs."""
