"""The DuckDB result store: schema and migrations, every query and every write."""
