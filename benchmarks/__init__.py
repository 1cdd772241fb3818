"""Benchmarks of MTSAM-Tune against the reference design (see BENCHMARKS.md)."""
