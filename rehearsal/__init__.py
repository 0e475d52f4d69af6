"""Run a whole execution of the deployed state machine on this machine: no AWS, no Docker."""
