"""The simulation kernel: SimPy world, named random streams, the run loop."""
