"""LLM providers behind one small async streaming interface (see base.py)."""
