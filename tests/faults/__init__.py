"""Fault injection: what happens when processes are killed, stores are down or corrupt,
runs collide or the project moves."""
