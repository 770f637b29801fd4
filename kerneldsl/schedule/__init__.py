"""Scheduling: fusion of the tensor graph, and loop-IR transforms per target."""
