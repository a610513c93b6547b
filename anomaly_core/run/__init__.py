"""The command: a mode -> the program, the console, `--mode=config`."""
