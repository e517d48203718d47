"""Backends: PostgreSQL (psycopg) and in-memory. Internal; reach them through pgq's public API."""
