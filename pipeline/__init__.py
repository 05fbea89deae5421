"""Stagewise pipeline."""
