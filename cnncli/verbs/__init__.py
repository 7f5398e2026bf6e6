"""The verbs after training, one module each: evaluate, predict, inspect (the summary, explain, the
data view) and the eval report."""
