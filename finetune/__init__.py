"""Fine-tuning the router: recipes, dataset building, training engines, export."""
