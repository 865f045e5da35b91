"""device-activity command line and developer tooling."""
