"""The pure core: states and transitions, the decisions (retries, the reaper's verdict, claim
allowances, retention), records, errors, queue policies, tasks and their argument checks, the
clock. Standard library and pydantic only: no database, no threads, no wall clock read here."""
