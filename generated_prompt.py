"""Prompts for synthetic data generation and judging (filled in by issue 4)."""
