"""Compute accounting: usage per team and track, budgets and their warnings (docs/accounting.md)."""
