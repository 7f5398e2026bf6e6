"""Experiments: `cnncli tune` searches a recipe's settings on validation (space, study, trial,
result, tune) and `cnncli compare` puts runs side by side (compare). Above the verbs: a study
trains and evaluates; below the command line, which only parses, calls and prints."""
