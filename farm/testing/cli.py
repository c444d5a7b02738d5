"""The test entry point: ``python -m farm.testing.cli ARGS`` is ``farm ARGS`` with farm's fakes
installed (model ``fake[:OPTIONS]``, ``--face-detector scripted:PATH``), for tests and scripts that
run farm as a separate process. The ``farm`` command itself has no fakes."""

from farm.testing.fakes import install_fakes

if __name__ == "__main__":
    install_fakes()
    from farm.cli.main import main

    main(prog_name="farm")
