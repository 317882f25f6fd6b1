"""Batch sweeps: many variants of one scenario, run on a pool of workers, stored as Parquet."""
