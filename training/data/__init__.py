"""Data sets for the three models: real layouts (Carvana, CSV, image folders) and synthetic data."""
