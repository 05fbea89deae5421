"""Stagewise stacks."""
