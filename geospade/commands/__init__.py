"""One module per CLI command; each defines a click command named ``command``.

Options shared by several commands are declared once in :mod:`geospade.commands.options`.
"""
