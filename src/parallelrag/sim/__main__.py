"""``python -m parallelrag.sim serve ...``."""

from parallelrag.sim.cli import sim

if __name__ == "__main__":
    sim(prog_name="python -m parallelrag.sim")
