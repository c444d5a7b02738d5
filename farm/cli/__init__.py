"""The ``farm`` command line: the group (base), the job commands (commands, plan), the machine set-up
commands (setup), and the entry point that registers them all (main)."""
