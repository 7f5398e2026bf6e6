"""The ground floor for files: every write atomic, a user's file read with its size bound, JSON without
NaN, and the user's cache folder. Imports nothing of cnncli's but errors and limits."""
