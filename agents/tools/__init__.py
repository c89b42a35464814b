"""Tools agents can call: the Tool interface (base.py), built-ins, OpenAPI custom tools and templates."""
