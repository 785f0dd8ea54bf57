"""Command-line experiments: thin absl entry points over the rev_nets library."""
