"""Stagewise registry."""
