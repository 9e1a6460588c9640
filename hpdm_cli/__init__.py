"""The `hpdm` command line: a thin Typer layer over hpdm_core."""
