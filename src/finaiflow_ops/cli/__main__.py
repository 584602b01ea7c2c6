"""`python -m finaiflow_ops.cli`."""

from finaiflow_ops.cli import main

main()
