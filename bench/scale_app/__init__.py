"""A tenant app of bench/tenants_scale.py only: its migration packages grow by one migration at a time (v1, v2, v3),
so the benchmark can time `migrate_schemas` with exactly one new migration on every organisation."""
