"""Offline research: engines, metrics, reports, optimisation, bundled sample data."""
