from flagcore.cli import run

run()
