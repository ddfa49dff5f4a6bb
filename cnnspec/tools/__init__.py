"""What the commands do besides training: eval, predict, export, plot, graph, schema, the validate table."""
