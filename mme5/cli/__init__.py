"""The `mme5` command line: one module per verb; the registry and the entry point are in
:mod:`mme5.cli.main`."""
