"""Shared foundation: settings, categories, the router prompt, schemas, errors, model locating."""
