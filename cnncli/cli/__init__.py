"""The command line: parsing and flag checks, one library call per command, exits and errors.

Kept free of imports so that `cnncli --help` never loads torch."""


def main() -> None:
    from cnncli.cli.app import main as run

    run()
