"""Request generators: arrival processes, length distributions and trace replay."""
