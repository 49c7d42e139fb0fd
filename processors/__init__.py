"""Faust agents computing the derived streams (one module per stream)."""
