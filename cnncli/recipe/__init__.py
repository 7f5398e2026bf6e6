"""A recipe: its schema, YAML read safely, value ranges, `--set` overrides, and the default recipe
for a data folder."""
