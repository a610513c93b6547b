"""The program every method runs: `Method`, the installed methods, `<workdir>/config.json`, and
train / evaluate / restore."""
