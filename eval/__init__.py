"""Evaluation: routing accuracy and answer quality, router off vs on."""
