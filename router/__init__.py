"""Routing: turn a question into a category (with confidence) and a retrieval filter."""
