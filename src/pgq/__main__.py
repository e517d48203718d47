"""`python -m pgq` runs the same CLI as the `pgq` command (PGQueuer also installs a `pgq`)."""

from pgq._cli import main

main()
