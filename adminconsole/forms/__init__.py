"""Console forms, one module per group of screens: they validate and convert; services
persist."""
