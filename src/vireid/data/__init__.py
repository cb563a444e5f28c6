"""Datasets (readers and the synthetic generator) and loading."""
