"""Datasets as EventLogs: loaders for real data and the synthetic generator."""
