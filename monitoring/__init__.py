"""Stagewise monitoring."""
