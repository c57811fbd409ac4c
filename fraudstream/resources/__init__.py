"""Data files shipped in the package: the simulator's cities and the dashboard's page."""
