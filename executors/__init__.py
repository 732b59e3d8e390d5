"""Stateless command handlers: the Codex run executor, the registry handler and pattern extraction.

The only package that imports `docker` and `openai`.
"""
